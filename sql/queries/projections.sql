-- name: lock_checkpoints
-- Take the named projections' checkpoints for this transaction (serialises projectors). It is
-- a projector batch's first statement, so it also sets, in the same round trip, the batch's
-- settings for the rest of its transaction (set_config(..., true) is SET LOCAL). Each batch
-- query is planned for its own arguments: a generic plan cached while a table was empty (a
-- fresh install, a rebuild after TRUNCATE) would seq-scan it for ever after. No WAL flush at
-- commit: a crash can lose only the newest batches, read models and checkpoint together, and
-- they are folded again from the log.
SELECT c.name, c.position, c.skipped
FROM projection_checkpoints c,
     (SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
             set_config('synchronous_commit', 'off', true)) AS settings
WHERE c.name = ANY($1::text[]) ORDER BY c.name FOR UPDATE OF c;

-- name: min_checkpoint
-- Where the least advanced of the named projections stands (no lock: a hint for reading ahead).
SELECT min(position) FROM projection_checkpoints WHERE name = ANY($1::text[]);

-- name: fetch_projection_input
-- Log events after a position, with the fields the folds need pulled out in SQL
-- (status times are the earliest per status in the payload's Meta status history: Kapso's
-- message.kapso.statuses, or the one status of a Meta-kind status event).
-- Path operators (#>>) read nested values without copying the objects on the way.
-- Unix-second strings are checked to be 1-11 digits with ltrim instead of a regular
-- expression: the same test, at a third of the regex's cost per status entry.
-- Times come as text (ISO, the pool's DateStyle) for facts.py to parse: PostgreSQL writes
-- that text in about 40 ns, and Python parses it 5x faster than the driver decodes a binary
-- timestamptz into a datetime, which was the largest single cost of reading a batch.
SELECT e.position, e.received_at::text AS received_at, e.event_name, e.phone_number_id,
       e.conversation_id, e.message_id, e.payload IS NULL AS unparseable,
       CASE WHEN octet_length(e.payload #>> '{message,timestamp}') BETWEEN 1 AND 11
                 AND ltrim(e.payload #>> '{message,timestamp}', '0123456789') = ''
            THEN to_timestamp((e.payload #>> '{message,timestamp}')::bigint)::text END AS message_ts,
       coalesce(e.payload #>> '{message,type}', e.payload #>> '{message,message_type}') AS message_type,
       coalesce(e.payload #>> '{message,kapso,direction}', e.payload #>> '{message,direction}') AS direction,
       coalesce(e.payload #>> '{message,kapso,origin}', e.payload #>> '{message,origin}') AS origin,
       e.payload #>> '{message,template,name}' AS template_name,
       coalesce(nullif(e.payload #>> '{conversation,business_scoped_user_id}', ''),
                nullif(e.payload #>> '{message,from_user_id}', ''),
                nullif(e.payload #>> '{status,recipient_user_id}', ''),
                nullif(e.payload #>> '{status,user_id}', ''),
                nullif(e.payload #>> '{status,business_scoped_user_id}', ''),
                nullif(e.payload #>> '{contacts,0,user_id}', '')) AS contact_bsuid,
       coalesce(nullif(e.payload #>> '{conversation,phone_number}', ''),
                CASE WHEN e.kind = 'meta' THEN coalesce(
                    nullif(e.payload #>> '{message,from}', ''),
                    nullif(e.payload #>> '{status,recipient_id}', ''),
                    nullif(e.payload #>> '{contacts,0,wa_id}', '')) END) AS contact_phone,
       st.sent_at::text AS sent_at, st.delivered_at::text AS delivered_at,
       st.read_at::text AS read_at, st.failed_at::text AS failed_at,
       st.error_code, st.error_title, st.pricing_category,
       e.payload #>> '{conversation,status}' AS conv_status,
       e.payload #>> '{conversation,created_at}' AS conv_created_at,
       e.payload #>> '{conversation,updated_at}' AS conv_updated_at,
       e.payload #>> '{conversation,last_active_at}' AS conv_last_active_at,
       e.payload #>> '{conversation,phone_number}' AS conv_phone,
       e.payload #>> '{conversation,business_scoped_user_id}' AS conv_bsuid,
       e.payload #>> '{conversation,kapso,contact_name}' AS contact_name,
       e.payload #>> '{since_message,created_at}' AS inactive_since,
       e.payload #>> '{inactivity,minutes}' AS inactivity_minutes
FROM events e
CROSS JOIN LATERAL (
    SELECT min(ts) FILTER (WHERE status = 'sent') AS sent_at,
           min(ts) FILTER (WHERE status = 'delivered') AS delivered_at,
           min(ts) FILTER (WHERE status = 'read') AS read_at,
           min(ts) FILTER (WHERE status = 'failed') AS failed_at,
           min(error_code) FILTER (WHERE status = 'failed') AS error_code,
           min(error_title) FILTER (WHERE status = 'failed' AND error_code IS NOT NULL) AS error_title,
           min(category) AS pricing_category
    FROM (
        SELECT s ->> 'status' AS status,
               CASE WHEN octet_length(s ->> 'timestamp') BETWEEN 1 AND 11
                         AND ltrim(s ->> 'timestamp', '0123456789') = ''
                    THEN to_timestamp((s ->> 'timestamp')::bigint) END AS ts,
               CASE WHEN s #>> '{errors,0,code}' ~ '^-?[0-9]{1,9}$'
                    THEN (s #>> '{errors,0,code}')::int END AS error_code,
               coalesce(s #>> '{errors,0,title}', s #>> '{errors,0,message}', '') AS error_title,
               s #>> '{pricing,category}' AS category
        FROM jsonb_array_elements(CASE
                 WHEN jsonb_typeof(e.payload #> '{message,kapso,statuses}') = 'array'
                 THEN e.payload #> '{message,kapso,statuses}'
                 WHEN e.kind = 'meta' AND jsonb_typeof(e.payload -> 'status') = 'object'
                 THEN jsonb_build_array(e.payload -> 'status')
                 ELSE '[]'::jsonb END) AS s
        WHERE jsonb_typeof(s) = 'object' AND coalesce(s ->> 'id', e.message_id) = e.message_id
    ) entries
    WHERE ts IS NOT NULL
) st
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
-- Write folded message states, given as a JSON array of row objects.
INSERT INTO messages
SELECT * FROM json_populate_recordset(NULL::messages, $1::json)
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
-- Write folded conversation states as a JSON array (message counts are refreshed separately).
INSERT INTO conversations (id, phone_number_id, contact_phone, contact_bsuid, contact_name,
    contact_name_at, status, created_at, ended_at, last_active_at, snapshot_at,
    last_inactive_at, inactivity_minutes, updated_position, updated_at)
SELECT id, phone_number_id, contact_phone, contact_bsuid, contact_name, contact_name_at, status,
       created_at, ended_at, last_active_at, snapshot_at, last_inactive_at, inactivity_minutes,
       updated_position, updated_at
FROM json_populate_recordset(NULL::conversations, $1::json)
ON CONFLICT (id) DO UPDATE SET
    phone_number_id = EXCLUDED.phone_number_id, contact_phone = EXCLUDED.contact_phone,
    contact_bsuid = EXCLUDED.contact_bsuid, contact_name = EXCLUDED.contact_name,
    contact_name_at = EXCLUDED.contact_name_at, status = EXCLUDED.status,
    created_at = EXCLUDED.created_at, ended_at = EXCLUDED.ended_at,
    last_active_at = EXCLUDED.last_active_at, snapshot_at = EXCLUDED.snapshot_at,
    last_inactive_at = EXCLUDED.last_inactive_at, inactivity_minutes = EXCLUDED.inactivity_minutes,
    updated_position = EXCLUDED.updated_position, updated_at = EXCLUDED.updated_at;

-- name: refresh_conversation_counts
-- Bring some conversations' message counts and last message up to date, at a cost that does
-- not grow with their size: counts move by the deltas the messages fold computed ($2, $3), or
-- are counted afresh where $4 says so (a row created after some of its messages); the last
-- message is kapso_sink_last_message (migration 0008): the newest timed one, else the highest id.
UPDATE conversations c
SET inbound_count = CASE WHEN t.fresh THEN n.inbound ELSE c.inbound_count + t.d_in END,
    outbound_count = CASE WHEN t.fresh THEN n.outbound ELSE c.outbound_count + t.d_out END,
    last_message_id = l.id, last_message_at = l.message_at
FROM unnest($1::text[], $2::int[], $3::int[], $4::bool[]) AS t(id, d_in, d_out, fresh)
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE m.direction = 'inbound') AS inbound,
           count(*) FILTER (WHERE m.direction = 'outbound') AS outbound
    FROM messages m WHERE t.fresh AND m.conversation_id = t.id
) n ON true
LEFT JOIN LATERAL kapso_sink_last_message(t.id) l ON true
WHERE c.id = t.id AND c.id = ANY($1::text[])
  AND (c.inbound_count, c.outbound_count, c.last_message_id, c.last_message_at)
      IS DISTINCT FROM (CASE WHEN t.fresh THEN n.inbound ELSE c.inbound_count + t.d_in END,
                        CASE WHEN t.fresh THEN n.outbound ELSE c.outbound_count + t.d_out END,
                        l.id, l.message_at);

-- name: refresh_all_conversation_counts
-- Recount every conversation (after a rebuild). The last message comes from the same
-- function as in refresh_conversation_counts, two index probes per conversation: sorting all
-- messages by conversation and time for one aggregate took twice as long (1M events: 0.7 s).
UPDATE conversations c
SET inbound_count = coalesce(n.inbound, 0), outbound_count = coalesce(n.outbound, 0),
    last_message_id = l.id, last_message_at = l.message_at
FROM conversations c2
LEFT JOIN (
    SELECT conversation_id,
           count(*) FILTER (WHERE direction = 'inbound') AS inbound,
           count(*) FILTER (WHERE direction = 'outbound') AS outbound
    FROM messages GROUP BY conversation_id
) n ON n.conversation_id = c2.id
LEFT JOIN LATERAL kapso_sink_last_message(c2.id) l ON true
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

-- name: projector_leader
-- application_name of the session holding the projector's leader lock (one-key advisory lock).
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1::bigint::oid
  AND l.objsubid = 1
LIMIT 1;
