-- name: log_head
-- The highest position in the log (0 when empty).
SELECT coalesce(max(position), 0) FROM events;

-- name: append_batch
-- Everything one group commit does, in one statement (see migration 0004).
SELECT idem_hash, "position" FROM kapso_sink_append(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21);

-- name: ensure_partitions
-- Monthly log partitions for this month and the next two.
SELECT kapso_sink_ensure_month(m::date)
FROM generate_series(date_trunc('month', now(), 'UTC'),
                     date_trunc('month', now(), 'UTC') + interval '2 months',
                     interval '1 month') AS m;
