-- name: lock_appends
-- Serialise appends across processes so that position order equals commit order.
SELECT pg_advisory_xact_lock(7263501);

-- name: insert_deliveries
-- Store raw delivery bodies once each, keyed by their SHA-256.
INSERT INTO deliveries (body_sha256, received_at, kind, headers, body, key_is_body_sha256)
SELECT * FROM unnest($1::bytea[], $2::timestamptz[], $3::text[], $4::jsonb[], $5::bytea[],
                     $6::boolean[])
ON CONFLICT DO NOTHING;

-- name: append_events
-- Append logical events in the given order; duplicates of an idempotency hash are skipped.
INSERT INTO events (
    idem_hash, idempotency_key, kind, event_name, payload_version, batch_index, batch_info,
    received_at, secret_id, body_sha256, phone_number_id, conversation_id, message_id,
    payload, parse_error)
SELECT idem_hash, idempotency_key, kind, event_name, payload_version, batch_index, batch_info,
       received_at, secret_id, body_sha256, phone_number_id, conversation_id, message_id,
       payload, parse_error
FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
            $7::jsonb[], $8::timestamptz[], $9::text[], $10::bytea[], $11::text[], $12::text[],
            $13::text[], $14::jsonb[], $15::text[])
     WITH ORDINALITY AS t(idem_hash, idempotency_key, kind, event_name, payload_version,
                          batch_index, batch_info, received_at, secret_id, body_sha256,
                          phone_number_id, conversation_id, message_id, payload, parse_error, ord)
ORDER BY ord
ON CONFLICT (idem_hash) DO NOTHING
RETURNING idem_hash, position;

-- name: notify_appended
-- Wake readers once per committed batch; the payload is the highest new position.
SELECT pg_notify('kapso_sink_events', $1::text);

-- name: log_head
-- The highest position in the log (0 when empty).
SELECT coalesce(max(position), 0) FROM events;
