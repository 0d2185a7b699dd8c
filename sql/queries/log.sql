-- name: log_head
-- The highest position in the log (0 when empty).
SELECT coalesce(max(position), 0) FROM events;

-- name: append_batch
-- Everything one group commit does, in one statement (see migrations 0004 and 0007):
-- $1 the deliveries, $2 the events, each an array of rows.
SELECT idem_hash, "position"
FROM kapso_sink_append($1::kapso_sink_delivery_row[], $2::kapso_sink_event_row[]);

-- name: ensure_partitions
-- Monthly log partitions for this month and the next two.
SELECT kapso_sink_ensure_month(m::date)
FROM generate_series(date_trunc('month', now(), 'UTC'),
                     date_trunc('month', now(), 'UTC') + interval '2 months',
                     interval '1 month') AS m;
