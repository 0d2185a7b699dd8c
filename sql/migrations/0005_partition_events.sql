-- Partition the event log by month of arrival, so years of history can be archived a month at a
-- time. Uniqueness of the idempotency hash moves to `event_keys`, which is never archived: a
-- replay of an archived event is still recognised as a duplicate.

-- The trigger function now lets the archive command (and only it, through a transaction-local
-- setting) remove rows of months it has written to Parquet and verified.
CREATE OR REPLACE FUNCTION kapso_sink_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('kapso_sink.archiving', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'kapso-sink: table % is append-only, % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_idem_hash_key TO events_unpartitioned_idem_hash_key;
ALTER INDEX events_conversation_idx RENAME TO events_unpartitioned_conversation_idx;
ALTER INDEX events_message_idx RENAME TO events_unpartitioned_message_idx;

CREATE SEQUENCE events_log_position_seq;
SELECT setval('events_log_position_seq', coalesce((SELECT max(position) FROM events_unpartitioned), 0) + 1, false);

CREATE TABLE events (
    position        bigint NOT NULL DEFAULT nextval('events_log_position_seq'),
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
    PRIMARY KEY (position, received_at)
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE events_log_position_seq OWNED BY events.position;

CREATE INDEX events_position_idx ON events (position);
CREATE INDEX events_conversation_idx ON events (conversation_id, position)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX events_message_idx ON events (message_id, position)
    WHERE message_id IS NOT NULL;
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE TABLE event_keys (
    idem_hash   bytea PRIMARY KEY,
    received_at timestamptz NOT NULL
);

CREATE TABLE archives (
    partition    text PRIMARY KEY,
    month        date NOT NULL,
    events       bigint NOT NULL,
    deliveries   bigint NOT NULL,
    checksum     text NOT NULL,
    events_file  text NOT NULL,
    deliveries_file text NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now()
);

-- One partition per month, with the same guards as the parent (TRUNCATE triggers are not
-- inherited). Rows that fell into the default partition for that month move into it.
CREATE FUNCTION kapso_sink_ensure_month(month_start date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'events_' || to_char(month_start, 'YYYY_MM');
    upper_bound date := (month_start + interval '1 month')::date;
    stray bigint;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(7263501);  -- no append while the partition set changes
    SELECT count(*) INTO stray FROM events_default
    WHERE received_at >= month_start AND received_at < upper_bound;
    IF stray > 0 THEN
        CREATE TEMP TABLE kapso_sink_stray ON COMMIT DROP AS
            SELECT * FROM events_default WHERE received_at >= month_start AND received_at < upper_bound;
        PERFORM set_config('kapso_sink.archiving', 'on', true);
        DELETE FROM events_default WHERE received_at >= month_start AND received_at < upper_bound;
        PERFORM set_config('kapso_sink.archiving', 'off', true);
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                   name, month_start, upper_bound);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                   'EXECUTE FUNCTION kapso_sink_reject_change()', name || '_no_truncate', name);
    IF stray > 0 THEN
        EXECUTE format('INSERT INTO %I SELECT * FROM kapso_sink_stray', name);
    END IF;
    RETURN name;
END
$$;

SELECT kapso_sink_ensure_month(m::date)
FROM generate_series(
    date_trunc('month', coalesce((SELECT min(received_at) FROM events_unpartitioned), now()), 'UTC'),
    date_trunc('month', now(), 'UTC') + interval '2 months', interval '1 month') AS m;

INSERT INTO event_keys (idem_hash, received_at)
SELECT idem_hash, received_at FROM events_unpartitioned;
INSERT INTO events SELECT * FROM events_unpartitioned ORDER BY position;
DROP TABLE events_unpartitioned;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER events_default_no_truncate BEFORE TRUNCATE ON events_default
    FOR EACH STATEMENT EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER event_keys_append_only BEFORE UPDATE OR DELETE ON event_keys
    FOR EACH ROW EXECUTE FUNCTION kapso_sink_reject_change();
CREATE TRIGGER event_keys_no_truncate BEFORE TRUNCATE ON event_keys
    FOR EACH STATEMENT EXECUTE FUNCTION kapso_sink_reject_change();

-- The group-commit append, now deduplicating on event_keys.
CREATE OR REPLACE FUNCTION kapso_sink_append(
    d_sha bytea[], d_received timestamptz[], d_kind text[], d_headers jsonb[], d_body bytea[],
    d_key_is_sha boolean[],
    e_hash bytea[], e_key text[], e_kind text[], e_name text[], e_version text[],
    e_batch_index int[], e_batch_info jsonb[], e_received timestamptz[], e_secret text[],
    e_body_sha bytea[], e_phone text[], e_conversation text[], e_message text[],
    e_payload jsonb[], e_error text[])
RETURNS TABLE (idem_hash bytea, "position" bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7263501);
    INSERT INTO deliveries (body_sha256, received_at, kind, headers, body, key_is_body_sha256)
    SELECT * FROM unnest(d_sha, d_received, d_kind, d_headers, d_body, d_key_is_sha)
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(e_hash, e_key, e_kind, e_name, e_version, e_batch_index,
                             e_batch_info, e_received, e_secret, e_body_sha, e_phone,
                             e_conversation, e_message, e_payload, e_error)
             WITH ORDINALITY AS t(h, k, kind, name, version, bi, info, received, secret,
                                  body_sha, phone, conversation, message, payload, error, ord)
    ), firsts AS (
        SELECT DISTINCT ON (h) * FROM input ORDER BY h, ord
    ), fresh AS (
        INSERT INTO event_keys AS k (idem_hash, received_at)
        SELECT h, received FROM firsts
        ON CONFLICT DO NOTHING
        RETURNING k.idem_hash
    )
    INSERT INTO events AS e (
        idem_hash, idempotency_key, kind, event_name, payload_version, batch_index, batch_info,
        received_at, secret_id, body_sha256, phone_number_id, conversation_id, message_id,
        payload, parse_error)
    SELECT f.h, f.k, f.kind, f.name, f.version, f.bi, f.info, f.received, f.secret,
           f.body_sha, f.phone, f.conversation, f.message, f.payload, f.error
    FROM firsts f JOIN fresh ON fresh.idem_hash = f.h
    ORDER BY f.ord
    RETURNING e.idem_hash, e.position;
    IF FOUND THEN
        PERFORM pg_notify('kapso_sink_events', '');
    END IF;
END
$$;
