-- One round trip per group commit: lock, store raw deliveries, append events, wake readers.
-- Called as a single statement, so it is its own transaction; see service/log/writer.py for
-- why the advisory lock makes commit order equal position order.

CREATE FUNCTION kapso_sink_append(
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
    INSERT INTO events AS e (
        idem_hash, idempotency_key, kind, event_name, payload_version, batch_index, batch_info,
        received_at, secret_id, body_sha256, phone_number_id, conversation_id, message_id,
        payload, parse_error)
    SELECT t.h, t.k, t.kind, t.name, t.version, t.bi, t.info, t.received, t.secret, t.body_sha,
           t.phone, t.conversation, t.message, t.payload, t.error
    FROM unnest(e_hash, e_key, e_kind, e_name, e_version, e_batch_index, e_batch_info,
                e_received, e_secret, e_body_sha, e_phone, e_conversation, e_message,
                e_payload, e_error)
         WITH ORDINALITY AS t(h, k, kind, name, version, bi, info, received, secret, body_sha,
                              phone, conversation, message, payload, error, ord)
    ORDER BY t.ord
    ON CONFLICT ON CONSTRAINT events_idem_hash_key DO NOTHING
    RETURNING e.idem_hash, e.position;
    IF FOUND THEN
        PERFORM pg_notify('kapso_sink_events', '');
    END IF;
END
$$;
