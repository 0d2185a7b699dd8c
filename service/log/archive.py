"""Archive whole months of the log to Parquet: the only way anything ever leaves the log.

For each monthly partition older than the cut-off: write its events and that month's raw
deliveries to Parquet (aside, then renamed), read the files back with DuckDB and compare row
counts and a checksum over the ordered idempotency hashes with PostgreSQL's, and only then, in
one transaction, record the archive, remove the month's deliveries and drop the partition.
Idempotency keys stay in `event_keys`, so an archived event replayed later is still a duplicate.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date
from pathlib import Path

import asyncpg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from service.db import Q
from service.log import layout

log = structlog.get_logger("service.log.archive")

_PARTITION = re.compile(r"^events_(\d{4})_(\d{2})$")
_CHUNK = 10_000


class ArchiveError(Exception):
    """The written files do not match the database; nothing was removed."""


def month_partitions(names: list[str], before: date) -> list[tuple[str, date]]:
    """The monthly partitions (name, first day) strictly before `before`, oldest first."""
    found = []
    for name in names:
        match = _PARTITION.match(name)
        if match:
            month = date(int(match[1]), int(match[2]), 1)
            if month < before:
                found.append((name, month))
    return sorted(found, key=lambda item: item[1])


async def archive_before(pool: asyncpg.Pool, before: date, out_dir: Path) -> list[dict]:
    """Archive every monthly partition before `before`; return what was archived."""
    async with pool.acquire() as conn:
        names = [r["name"] for r in await conn.fetch(Q["list_partitions"])]
    done = []
    for name, month in month_partitions(names, before):
        done.append(await archive_partition(pool, name, month, out_dir))
    return done


async def _stream_to_parquet(conn, query: str, args: tuple, path: Path, schema) -> int:
    """Copy a query's rows into a Parquet file in chunks (written aside, then renamed)."""
    tmp = path.with_suffix(".parquet.tmp")
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        async with conn.transaction():
            cursor = await conn.cursor(query, *args)
            while batch := await cursor.fetch(_CHUNK):
                columns = {name: [r[name] for r in batch] for name in schema.names}
                writer.write_table(pa.table(columns, schema=schema))
                rows += len(batch)
    tmp.rename(path)
    return rows


async def archive_partition(pool: asyncpg.Pool, name: str, month: date, out_dir: Path) -> dict:
    """Write one month to Parquet, verify it, then remove it from the database."""
    if not _PARTITION.match(name):
        raise ValueError(f"not a monthly log partition: {name}")
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    events_file = out_dir / f"{name}.parquet"
    deliveries_file = out_dir / f"deliveries_{month:%Y_%m}.parquet"
    async with pool.acquire() as conn:
        # the partition name is checked against _PARTITION above, so it is a safe identifier
        count, checksum = await conn.fetchrow(Q["partition_checksum"].replace("{partition}", name))
        n_deliveries = await conn.fetchval(Q["count_month_deliveries"], month)
        written = await _stream_to_parquet(
            conn,
            Q["partition_rows"].replace("{partition}", name),
            (),
            events_file,
            layout.EVENT_SCHEMA,
        )
        written_deliveries = await _stream_to_parquet(
            conn, Q["month_deliveries"], (month,), deliveries_file, layout.DELIVERY_SCHEMA
        )
    file_count, file_checksum = await asyncio.to_thread(_parquet_checksum, events_file, written)
    if (written, file_count, file_checksum) != (
        count,
        count,
        checksum,
    ) or written_deliveries != n_deliveries:
        raise ArchiveError(f"{name}: files do not match the database; nothing removed")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('kapso_sink.archiving', 'on', true)")
        await conn.execute(
            Q["record_archive"],
            name,
            month,
            count,
            n_deliveries,
            checksum,
            str(events_file),
            str(deliveries_file),
        )
        await conn.execute(Q["delete_month_deliveries"], month)
        await conn.execute(Q["drop_partition"].replace("{partition}", name))
    result = {
        "partition": name,
        "month": month.isoformat(),
        "events": count,
        "deliveries": n_deliveries,
        "checksum": checksum,
        "events_file": str(events_file),
        "deliveries_file": str(deliveries_file),
    }
    log.info("partition_archived", **result)
    return result


def _parquet_checksum(path: Path, rows: int) -> tuple[int, str]:
    if rows == 0:
        return 0, "d41d8cd98f00b204e9800998ecf8427e"  # md5 of the empty string
    con = duckdb.connect()
    try:
        return con.execute(
            "SELECT count(*), md5(string_agg(lower(hex(idem_hash)), ',' ORDER BY position)) "
            "FROM read_parquet(?)",
            [str(path)],
        ).fetchone()
    finally:
        con.close()
