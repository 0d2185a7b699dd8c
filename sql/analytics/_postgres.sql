-- PostgreSQL reads of the exporter (not analytics models: files starting with _ are skipped).
-- Range bounds are formatted in as integers ({after:d}) because ADBC streams a statement with
-- COPY only when it has no bind parameters.

-- name: begin_snapshot
-- One consistent view of the head and the read models for the whole export.
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;

-- name: log_head
-- The highest committed position (0 for an empty log).
SELECT coalesce(max(position), 0)::bigint AS head FROM events;

-- name: checkpoints
-- Where each projection stands, to tell whether the read models moved since the last export.
SELECT name, position FROM projection_checkpoints ORDER BY name;

-- name: read_in_position_order
-- For the session that reads event ranges. The log's key (position, received_at) hands rows
-- over in position order, but the planner discounts the order of a multi-column index (0.75
-- of the column's correlation) and so prefers a parallel seq scan and an external sort of the
-- whole range: about 40% more export time on 1M events than the ordered index scan.
SET enable_sort = off;

-- name: events_range
-- Log events in (after, until], the jsonb columns as text.
SELECT position, idem_hash, idempotency_key, kind, event_name, payload_version, batch_index,
       batch_info::text AS batch_info, received_at, secret_id, body_sha256, phone_number_id,
       conversation_id, message_id, payload::text AS payload, parse_error
FROM events
WHERE position > {after:d} AND position <= {until:d}
ORDER BY position;

-- name: snapshot_conversations
-- The conversations read model, whole.
SELECT * FROM conversations;

-- name: snapshot_messages
-- The messages read model, whole.
SELECT * FROM messages;

-- name: snapshot_projection_checkpoints
-- The projection checkpoints, whole.
SELECT * FROM projection_checkpoints;
