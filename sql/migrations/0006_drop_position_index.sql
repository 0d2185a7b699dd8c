-- The primary key (position, received_at) already serves every `position > $1 ORDER BY
-- position` scan (position leads it), so the separate index on position only cost each
-- append one more B-tree insert and its WAL.
DROP INDEX IF EXISTS events_position_idx;
