"""The export's event files: one day per file, a bounded number open at once."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from analytics.extract import EVENT_SCHEMA, EventParts


def batch(first_position: int, days: list[int]) -> pa.RecordBatch:
    """Rows at consecutive positions, received on the given day offsets (one per row)."""
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    columns = {f.name: pa.nulls(len(days), f.type) for f in EVENT_SCHEMA}
    columns["position"] = pa.array(range(first_position, first_position + len(days)), pa.int64())
    columns["received_at"] = pa.array(
        [start + timedelta(days=d) for d in days], pa.timestamp("us", tz="UTC")
    )
    return pa.RecordBatch.from_pydict(columns, schema=EVENT_SCHEMA)


def test_years_of_days_keep_only_a_few_files_open(tmp_path):
    parts = EventParts(tmp_path, max_open=3)
    position, most_open = 1, 0
    # twelve days, each seen again after the others (a late commit, a drained spool)
    for _ in range(2):
        for day in range(12):
            parts.write(batch(position, [day] * 5))
            position += 5
            most_open = max(most_open, len(parts.parts))
    written = parts.close()
    assert most_open == 3
    assert sum(p.rows for p in written) == 120
    for part in written:
        table = pq.read_table(part.tmp)
        days = {t.date() for t in table.column("received_at").to_pylist()}
        assert len(days) == 1 and part.final.parent.name == f"day={days.pop().isoformat()}"
        assert part.final.name == f"part-{table.column('position')[0].as_py():020d}.parquet"
    assert len({p.final for p in written}) == len(written) == 24  # each return: a new part


def test_a_batch_across_days_is_split_by_day(tmp_path):
    parts = EventParts(tmp_path)
    parts.write(batch(1, [0, 0, 1, 2, 1]))
    written = parts.close()
    rows = {
        p.final.parent.name: pq.read_table(p.tmp).column("position").to_pylist() for p in written
    }
    assert rows == {"day=2026-01-01": [1, 2], "day=2026-01-02": [3, 5], "day=2026-01-03": [4]}
