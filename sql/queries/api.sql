-- name: list_conversations
-- A keyset page of conversations ordered by (updated_position, id), with optional filters.
SELECT * FROM conversations
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR phone_number_id = $2)
  AND ($3::timestamptz IS NULL OR updated_at > $3)
  AND (updated_position, id) > ($4::bigint, $5::text)
ORDER BY updated_position, id
LIMIT $6;

-- name: get_conversation
-- One conversation by id.
SELECT * FROM conversations WHERE id = $1;

-- name: conversation_messages
-- A conversation's messages in conversation order (message time, then id).
SELECT * FROM messages
WHERE conversation_id = $1
  AND (coalesce(message_at, 'infinity'::timestamptz), id) > ($2::timestamptz, $3::text)
ORDER BY coalesce(message_at, 'infinity'::timestamptz), id
LIMIT $4;

-- name: get_message
-- One message by wamid.
SELECT * FROM messages WHERE id = $1;

-- name: delivery_metrics
-- Outbound delivery funnel and latencies per phone number and time bucket (UTC); latencies
-- in seconds. Percentiles are interpolated between intervals, exact to the microsecond (over
-- float seconds they showed noise such as 333.1000000000003).
WITH outbound AS (
    SELECT phone_number_id, sent_at, delivered_at, read_at, failed_at,
           date_trunc($1::text, coalesce(sent_at, failed_at, delivered_at, read_at), 'UTC') AS bucket
    FROM messages
    WHERE direction = 'outbound'
      AND ($2::text IS NULL OR phone_number_id = $2)
      AND coalesce(sent_at, failed_at, delivered_at, read_at) >= $3::timestamptz
      AND coalesce(sent_at, failed_at, delivered_at, read_at) < $4::timestamptz
),
final AS (
    SELECT phone_number_id, bucket,
           count(sent_at) AS sent, count(delivered_at) AS delivered,
           count(read_at) AS read, count(failed_at) AS failed,
           extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY delivered_at - sent_at)
               FILTER (WHERE delivered_at >= sent_at))::float8 AS sent_to_delivered_p50,
           extract(epoch FROM percentile_cont(0.9) WITHIN GROUP (ORDER BY delivered_at - sent_at)
               FILTER (WHERE delivered_at >= sent_at))::float8 AS sent_to_delivered_p90,
           extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY read_at - delivered_at)
               FILTER (WHERE read_at >= delivered_at))::float8 AS delivered_to_read_p50,
           extract(epoch FROM percentile_cont(0.9) WITHIN GROUP (ORDER BY read_at - delivered_at)
               FILTER (WHERE read_at >= delivered_at))::float8 AS delivered_to_read_p90
    FROM outbound
    GROUP BY phone_number_id, bucket
)
SELECT * FROM final ORDER BY bucket, phone_number_id;

-- name: events_after
-- Raw log entries after a position, optionally of one event name.
SELECT * FROM events
WHERE position > $1 AND ($2::text IS NULL OR event_name = $2)
ORDER BY position LIMIT $3;

-- name: events_by_conversation
-- Raw log entries of one conversation after a position.
SELECT * FROM events
WHERE conversation_id = $1 AND position > $2 AND ($3::text IS NULL OR event_name = $3)
ORDER BY conversation_id, position LIMIT $4;

-- name: events_by_message
-- Raw log entries of one message after a position.
SELECT * FROM events
WHERE message_id = $1 AND position > $2 AND ($3::text IS NULL OR event_name = $3)
  AND ($4::text IS NULL OR conversation_id = $4)
ORDER BY message_id, position LIMIT $5;

-- name: get_delivery
-- One raw delivery by the hex SHA-256 of its body.
SELECT body_sha256, received_at, kind, headers, body, key_is_body_sha256
FROM deliveries WHERE body_sha256 = $1;
