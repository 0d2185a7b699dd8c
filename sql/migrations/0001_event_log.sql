-- The immutable event log: raw deliveries, and the logical events parsed out of them.

CREATE TABLE deliveries (
    body_sha256 bytea PRIMARY KEY,
    received_at timestamptz NOT NULL,
    kind        text NOT NULL,
    headers     jsonb NOT NULL,
    body        bytea NOT NULL
);

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idem_hash       bytea NOT NULL,
    idempotency_key text,
    kind            text NOT NULL,
    event_name      text NOT NULL,
    payload_version text,
    batch_index     integer,
    batch_info      jsonb,
    received_at     timestamptz NOT NULL,
    secret_id       text NOT NULL,
    body_sha256     bytea NOT NULL,
    phone_number_id text,
    conversation_id text,
    message_id      text,
    payload         jsonb,
    parse_error     text,
    CONSTRAINT events_idem_hash_key UNIQUE (idem_hash)
);

CREATE INDEX events_conversation_idx ON events (conversation_id, position)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX events_message_idx ON events (message_id, position)
    WHERE message_id IS NOT NULL;

CREATE FUNCTION kapso_sink_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'kapso-sink: table % is append-only, % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER deliveries_append_only BEFORE UPDATE OR DELETE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER deliveries_no_truncate BEFORE TRUNCATE ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION kapso_sink_reject_change();
