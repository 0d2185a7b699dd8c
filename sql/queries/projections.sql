-- name: lock_checkpoints
-- Take the named projections' checkpoints for this transaction (serialises projectors).
SELECT name, position, skipped FROM projection_checkpoints
WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE;

-- name: fetch_projection_input
-- Log events after a position, with the fields the folds need pulled out in SQL.
SELECT e.position, e.received_at, e.kind, e.event_name, e.phone_number_id,
       e.conversation_id, e.message_id, e.payload IS NULL AS unparseable,
       jsonb_typeof(e.payload) AS payload_type,
       p.m ->> 'timestamp' AS message_ts,
       coalesce(p.m ->> 'type', p.m ->> 'message_type') AS message_type,
       coalesce(p.m -> 'kapso' ->> 'direction', p.m ->> 'direction') AS direction,
       coalesce(p.m -> 'kapso' ->> 'origin', p.m ->> 'origin') AS origin,
       coalesce(p.m -> 'kapso' ->> 'status', p.m ->> 'status') AS message_status,
       p.m -> 'kapso' -> 'statuses' AS statuses,
       p.m -> 'template' ->> 'name' AS template_name,
       p.c ->> 'status' AS conv_status,
       p.c ->> 'created_at' AS conv_created_at,
       p.c ->> 'updated_at' AS conv_updated_at,
       p.c ->> 'last_active_at' AS conv_last_active_at,
       p.c ->> 'phone_number' AS conv_phone,
       p.c ->> 'business_scoped_user_id' AS conv_bsuid,
       p.c -> 'kapso' ->> 'contact_name' AS contact_name,
       e.payload -> 'since_message' ->> 'created_at' AS inactive_since,
       e.payload -> 'inactivity' ->> 'minutes' AS inactivity_minutes,
       CASE WHEN e.kind = 'meta' THEN e.payload END AS meta
FROM events e
CROSS JOIN LATERAL (
    SELECT CASE WHEN jsonb_typeof(e.payload -> 'message') = 'object' THEN e.payload -> 'message' END AS m,
           CASE WHEN jsonb_typeof(e.payload -> 'conversation') = 'object' THEN e.payload -> 'conversation' END AS c
) p
WHERE e.position > $1
ORDER BY e.position
LIMIT $2;

-- name: save_checkpoint
-- Move a projection's checkpoint (same transaction as its read-model writes).
UPDATE projection_checkpoints SET position = $2, skipped = skipped + $3, updated_at = now()
WHERE name = $1;

-- name: load_messages
-- Current message rows for a set of ids.
SELECT * FROM messages WHERE id = ANY($1::text[]);

-- name: upsert_messages
-- Write folded message states.
INSERT INTO messages (id, conversation_id, phone_number_id, direction, type, origin, template_name,
    message_at, sent_at, delivered_at, read_at, failed_at, status, read_without_delivered,
    error_code, error_title, pricing_category, updated_position, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[],
    $12::timestamptz[], $13::text[], $14::boolean[], $15::int[], $16::text[], $17::text[],
    $18::bigint[], $19::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    conversation_id = EXCLUDED.conversation_id, phone_number_id = EXCLUDED.phone_number_id,
    direction = EXCLUDED.direction, type = EXCLUDED.type, origin = EXCLUDED.origin,
    template_name = EXCLUDED.template_name, message_at = EXCLUDED.message_at,
    sent_at = EXCLUDED.sent_at, delivered_at = EXCLUDED.delivered_at, read_at = EXCLUDED.read_at,
    failed_at = EXCLUDED.failed_at, status = EXCLUDED.status,
    read_without_delivered = EXCLUDED.read_without_delivered, error_code = EXCLUDED.error_code,
    error_title = EXCLUDED.error_title, pricing_category = EXCLUDED.pricing_category,
    updated_position = EXCLUDED.updated_position, updated_at = EXCLUDED.updated_at;

-- name: load_conversations
-- Current conversation rows for a set of ids.
SELECT * FROM conversations WHERE id = ANY($1::text[]);

-- name: upsert_conversations
-- Write folded conversation states (message counts are refreshed separately).
INSERT INTO conversations (id, phone_number_id, contact_phone, contact_bsuid, contact_name,
    contact_name_at, status, created_at, ended_at, last_active_at, snapshot_at,
    last_inactive_at, inactivity_minutes, updated_position, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::timestamptz[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
    $11::timestamptz[], $12::timestamptz[], $13::int[], $14::bigint[], $15::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    phone_number_id = EXCLUDED.phone_number_id, contact_phone = EXCLUDED.contact_phone,
    contact_bsuid = EXCLUDED.contact_bsuid, contact_name = EXCLUDED.contact_name,
    contact_name_at = EXCLUDED.contact_name_at, status = EXCLUDED.status,
    created_at = EXCLUDED.created_at, ended_at = EXCLUDED.ended_at,
    last_active_at = EXCLUDED.last_active_at, snapshot_at = EXCLUDED.snapshot_at,
    last_inactive_at = EXCLUDED.last_inactive_at, inactivity_minutes = EXCLUDED.inactivity_minutes,
    updated_position = EXCLUDED.updated_position, updated_at = EXCLUDED.updated_at;

-- name: refresh_conversation_counts
-- Recount distinct inbound/outbound messages and the last message of some conversations.
UPDATE conversations c
SET inbound_count = s.inbound, outbound_count = s.outbound,
    last_message_id = s.last_id, last_message_at = s.last_at
FROM (
    SELECT conversation_id,
           count(*) FILTER (WHERE direction = 'inbound') AS inbound,
           count(*) FILTER (WHERE direction = 'outbound') AS outbound,
           (array_agg(id ORDER BY message_at DESC NULLS LAST, id DESC))[1] AS last_id,
           max(message_at) AS last_at
    FROM messages
    WHERE conversation_id = ANY($1::text[])
    GROUP BY conversation_id
) s
WHERE c.id = s.conversation_id
  AND (c.inbound_count, c.outbound_count, c.last_message_id, c.last_message_at)
      IS DISTINCT FROM (s.inbound, s.outbound, s.last_id, s.last_at);

-- name: refresh_all_conversation_counts
-- Recount every conversation (after a rebuild).
UPDATE conversations c
SET inbound_count = coalesce(s.inbound, 0), outbound_count = coalesce(s.outbound, 0),
    last_message_id = s.last_id, last_message_at = s.last_at
FROM conversations c2
LEFT JOIN (
    SELECT conversation_id,
           count(*) FILTER (WHERE direction = 'inbound') AS inbound,
           count(*) FILTER (WHERE direction = 'outbound') AS outbound,
           (array_agg(id ORDER BY message_at DESC NULLS LAST, id DESC))[1] AS last_id,
           max(message_at) AS last_at
    FROM messages GROUP BY conversation_id
) s ON s.conversation_id = c2.id
WHERE c.id = c2.id;

-- name: truncate_messages
-- Empty the messages read model (rebuild).
TRUNCATE messages;

-- name: truncate_conversations
-- Empty the conversations read model (rebuild).
TRUNCATE conversations;

-- name: reset_checkpoint
-- Start a projection again from the beginning of the log.
UPDATE projection_checkpoints SET position = 0, skipped = 0, updated_at = now() WHERE name = $1;

-- name: projection_status
-- Checkpoint, head and lag of every projection.
SELECT c.name, c.position, c.skipped, h.head,
       (SELECT count(*) FROM events e WHERE e.position > c.position) AS lag_events,
       coalesce(extract(epoch FROM now() - (
           SELECT min(e.received_at) FROM events e WHERE e.position > c.position)), 0)::float8
           AS lag_seconds
FROM projection_checkpoints c
CROSS JOIN (SELECT coalesce(max(position), 0) AS head FROM events) h
ORDER BY c.name;
