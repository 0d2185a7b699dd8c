-- DuckDB statements that point an export's database at its Parquet files. Paths are relative
-- to the export folder (readers set file_search_path to it); {until:d} and {run:d} are integers.

-- name: raw_events
-- The log up to the export's position; parts past it belong to an unfinished export.
CREATE VIEW raw_events AS
SELECT * FROM read_parquet('events/*/*.parquet', hive_partitioning = true,
                           hive_types = {{'day': DATE}})
WHERE position <= {until:d};

-- name: raw_read_model
-- One read-model snapshot of this export's run.
CREATE VIEW raw_{name} AS
SELECT * FROM read_parquet('read_models/run-{run:06d}/{name}.parquet');

-- name: export_runs
-- Every export that reached this folder, the newest last.
CREATE TABLE export_runs (
    run           integer PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    from_position bigint NOT NULL,
    to_position   bigint NOT NULL,
    new_events    bigint NOT NULL,
    checkpoints   varchar NOT NULL  -- JSON {projection: position}
);
