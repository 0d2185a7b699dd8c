-- name: list_partitions
-- The partitions of the event log.
SELECT c.relname AS name
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass
ORDER BY c.relname;

-- name: partition_checksum
-- Row count and md5 over the ordered idempotency hashes of one partition ({partition} is a
-- checked identifier).
SELECT count(*),
       md5(coalesce(string_agg(encode(idem_hash, 'hex'), ',' ORDER BY position), ''))
FROM {partition};

-- name: partition_rows
-- Every event of one partition, in position order, with JSON as text (the export's layout).
SELECT position, idem_hash, idempotency_key, kind, event_name, payload_version, batch_index,
       batch_info::text AS batch_info, received_at, secret_id, body_sha256, phone_number_id,
       conversation_id, message_id, payload::text AS payload, parse_error
FROM {partition}
ORDER BY position;

-- name: count_month_deliveries
-- Raw deliveries first received in a month.
SELECT count(*) FROM deliveries
WHERE received_at >= $1::date AND received_at < ($1::date + interval '1 month');

-- name: month_deliveries
-- The raw deliveries first received in a month.
SELECT body_sha256, received_at, kind, headers::text AS headers, body, key_is_body_sha256
FROM deliveries
WHERE received_at >= $1::date AND received_at < ($1::date + interval '1 month')
ORDER BY received_at, body_sha256;

-- name: record_archive
-- Remember what was archived, where, and its checksum.
INSERT INTO archives (partition, month, events, deliveries, checksum, events_file, deliveries_file)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: delete_month_deliveries
-- Remove an archived month's raw deliveries (allowed only with kapso_sink.archiving on).
DELETE FROM deliveries
WHERE received_at >= $1::date AND received_at < ($1::date + interval '1 month');

-- name: drop_partition
-- Detach and drop an archived month ({partition} is a checked identifier).
ALTER TABLE events DETACH PARTITION {partition};
DROP TABLE {partition};
