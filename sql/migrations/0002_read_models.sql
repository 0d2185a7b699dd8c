-- Read models built by the projector from the event log, and their checkpoints.

CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    position   bigint NOT NULL DEFAULT 0,
    skipped    bigint NOT NULL DEFAULT 0,  -- unknown or unparseable events seen
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projection_checkpoints (name) VALUES ('conversations'), ('messages');

CREATE TABLE conversations (
    id                  text PRIMARY KEY,
    phone_number_id     text,
    contact_phone       text,          -- digits only
    contact_bsuid       text,
    contact_name        text,
    contact_name_at     timestamptz,   -- updated_at of the snapshot the name came from
    status              text NOT NULL, -- active | ended
    created_at          timestamptz,
    ended_at            timestamptz,
    last_active_at      timestamptz,
    snapshot_at         timestamptz,   -- newest conversation.updated_at applied
    last_inactive_at    timestamptz,
    inactivity_minutes  integer,
    inbound_count       integer NOT NULL DEFAULT 0,
    outbound_count      integer NOT NULL DEFAULT 0,
    last_message_id     text,
    last_message_at     timestamptz,
    updated_position    bigint NOT NULL,  -- log position of the last event applied
    updated_at          timestamptz NOT NULL  -- received_at of that event
);
CREATE INDEX conversations_keyset_idx ON conversations (updated_position, id);
CREATE INDEX conversations_phone_idx ON conversations (phone_number_id, updated_position);

CREATE TABLE messages (
    id                      text PRIMARY KEY,  -- wamid
    conversation_id         text,
    phone_number_id         text,
    direction               text,
    type                    text,
    origin                  text,
    template_name           text,
    message_at              timestamptz,
    sent_at                 timestamptz,
    delivered_at            timestamptz,
    read_at                 timestamptz,
    failed_at               timestamptz,
    status                  text NOT NULL,
    read_without_delivered  boolean NOT NULL DEFAULT false,
    error_code              integer,
    error_title             text,
    pricing_category        text,
    updated_position        bigint NOT NULL,
    updated_at              timestamptz NOT NULL
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, message_at, id);
CREATE INDEX messages_metrics_idx ON messages (phone_number_id, sent_at);
