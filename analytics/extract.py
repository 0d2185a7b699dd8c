"""PostgreSQL to Parquet through ADBC: COPY in binary, Arrow batches, written as they come.

Nothing here holds more than one batch per open file, so memory does not grow with the log.
All functions are synchronous (ADBC and Arrow release the GIL); the exporter runs them in
threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics.sql import PG
from service.log.layout import EVENT_SCHEMA

READ_MODELS = ("conversations", "messages", "projection_checkpoints")
_DICTIONARY = ["kind", "event_name", "payload_version", "secret_id", "phone_number_id"]
_STATISTICS = ["position", "received_at", "event_name", "phone_number_id"]  # not the payloads
_BATCH_BYTES = str(8 * 1024 * 1024)  # ADBC's target batch size
MIN_RANGE = 50_000  # positions per parallel reader, at least


def connect(dsn: str):
    """An ADBC connection in autocommit mode (transactions are explicit statements)."""
    return adbc.connect(dsn, autocommit=True)


def _cursor(conn):
    cur = conn.cursor()
    cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": _BATCH_BYTES})
    return cur


def fetch_rows(conn, sql: str) -> list[tuple]:
    """A small result, as tuples."""
    with _cursor(conn) as cur:
        cur.execute(sql)
        return cur.fetchall()


def execute(conn, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)


def _writer(path: Path, schema: pa.Schema, dictionary, statistics) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        path,
        schema,
        compression="zstd",
        compression_level=1,
        use_dictionary=dictionary,
        write_statistics=statistics,
    )


def fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (before and after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Part:
    """One Parquet file being written under a temporary name."""

    tmp: Path
    final: Path
    writer: pq.ParquetWriter
    rows: int = 0


@dataclass
class EventParts:
    """The event files of one reader, named after their first position: one per day touched,
    with at most `max_open` open at once. When a batch brings one day too many, the file
    least recently written is closed, so a first export of years of history holds a few
    files (and their buffers) open, not one per day; a day that comes back later (a late
    commit, a drained spool) starts another part."""

    root: Path
    max_open: int = 8
    parts: dict = field(default_factory=dict)  # day (date) -> open Part, oldest write first
    closed: list = field(default_factory=list)

    def write(self, batch: pa.RecordBatch) -> None:
        days = pc.cast(batch.column("received_at"), pa.date32())
        lo, hi = pc.min(days).as_py(), pc.max(days).as_py()
        if lo == hi:
            self._write_day(lo, batch)
            return
        for day in pc.unique(days).to_pylist():
            self._write_day(day, batch.filter(pc.equal(days, pa.scalar(day, pa.date32()))))

    def _write_day(self, day, batch: pa.RecordBatch) -> None:
        part = self.parts.pop(day, None)
        if part is None:
            if len(self.parts) >= self.max_open:
                self._close(self.parts.pop(next(iter(self.parts))))
            folder = self.root / f"day={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{batch.column('position')[0].as_py():020d}.parquet"
            tmp = folder / f".{name}.tmp"
            part = Part(tmp, folder / name, _writer(tmp, EVENT_SCHEMA, _DICTIONARY, _STATISTICS))
        self.parts[day] = part  # (re)inserted last: the most recently written
        part.writer.write_batch(batch)
        part.rows += batch.num_rows

    def _close(self, part: Part) -> None:
        part.writer.close()
        fsync(part.tmp)
        self.closed.append(part)

    def close(self) -> list[Part]:
        for part in self.parts.values():
            self._close(part)
        self.parts.clear()
        return self.closed


def _read_events(dsn: str, after: int, until: int, root: Path) -> list[Part]:
    conn = connect(dsn)
    parts = EventParts(root)
    try:
        execute(conn, PG["read_in_position_order"])
        with _cursor(conn) as cur:
            cur.execute(PG["events_range"].format(after=after, until=until))
            for batch in cur.fetch_record_batch():
                if batch.num_rows:
                    parts.write(pa.RecordBatch.from_arrays(batch.columns, schema=EVENT_SCHEMA))
    finally:
        closed = parts.close()
        conn.close()
    return closed


def ranges(after: int, until: int, readers: int) -> list[tuple[int, int]]:
    """Split (after, until] into at most `readers` contiguous ranges of MIN_RANGE or more."""
    span = until - after
    count = max(1, min(readers, span // MIN_RANGE))
    bounds = [after + span * i // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(count) if bounds[i] < bounds[i + 1]]


def write_events(dsn: str, after: int, until: int, root: Path, readers: int) -> list[Part]:
    """Log events in (after, until] as Parquet parts under `root` (temporary names), in parallel.

    Every position up to `until` is committed and immutable (appends commit in position
    order), so readers on separate connections need no shared snapshot.
    """
    work = ranges(after, until, readers)
    if not work:
        return []
    with ThreadPoolExecutor(len(work), thread_name_prefix="export-events") as pool:
        futures = [pool.submit(_read_events, dsn, lo, hi, root) for lo, hi in work]
        return [part for future in futures for part in future.result()]


def write_tables(conn, queries: dict[str, str], folder: Path) -> dict[str, int]:
    """Each query's result as `<name>.parquet` in `folder`; return the row counts."""
    return {
        name: write_table(conn, sql, folder / f"{name}.parquet") for name, sql in queries.items()
    }


def write_table(conn, sql: str, path: Path) -> int:
    """Stream one query's result into a Parquet file; return its rows."""
    rows = 0
    with _cursor(conn) as cur:
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        schema = pa.schema([f.remove_metadata() for f in reader.schema])
        # no dictionaries: on unique keys (ids) they cost CPU and double the file size
        with _writer(path, schema, False, True) as writer:
            for batch in reader:
                writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
                rows += batch.num_rows
    fsync(path)
    return rows
