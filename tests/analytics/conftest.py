"""An export of simulated traffic, made once per session, and helpers to compare it with the log."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest_asyncio

from analytics import export, simulator, warehouse
from service.projections import runner
from tests import support


async def until(condition, what: str, *, timeout: float = 30, alive=None) -> None:
    """Poll `condition()` (sync or async) until true; fail if `alive()` turns false first."""
    async with asyncio.timeout(timeout):
        while True:
            done = condition()
            if asyncio.iscoroutine(done):
                done = await done
            if done:
                return
            if alive is not None and not alive():
                raise AssertionError(f"gave up waiting for {what}")
            await asyncio.sleep(0.02)


@dataclass
class Exported:
    """A database filled through the real sink, projected and exported."""

    dsn: str
    out: Path
    figures: dict


async def send_traffic(sink: support.Sink, conversations: int, seed: int) -> None:
    """Post simulated deliveries through HTTP and project them into the read models."""
    deliveries = simulator.generate(conversations, seed, support.SECRET)
    counts = await simulator.send(sink.url + "/webhooks/kapso", deliveries, progress=False)
    assert set(counts) == {200}, counts
    await runner.catch_up(sink.pool)


async def log_counts(dsn: str) -> dict:
    """Rows in the log and read models, as the export should see them."""
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "events": await conn.fetchval("SELECT count(*) FROM events"),
            "head": await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"),
            "messages": await conn.fetchval("SELECT count(*) FROM messages"),
            "conversations": await conn.fetchval("SELECT count(*) FROM conversations"),
        }
    finally:
        await conn.close()


def export_counts(out: Path) -> dict:
    """The same figures read back from the committed export with DuckDB."""
    con = warehouse.connect(out)
    try:

        def one(query: str):
            return con.execute(query).fetchall()[0][0]

        return {
            "events": one("SELECT count(*) FROM raw_events"),
            "head": one("SELECT coalesce(max(position), 0) FROM raw_events"),
            "messages": one("SELECT count(*) FROM raw_messages"),
            "conversations": one("SELECT count(*) FROM raw_conversations"),
        }
    finally:
        con.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def exported(databases, tmp_path_factory):
    """120 simulated conversations through the sink, exported once."""
    dsn = await databases.create()
    tmp = tmp_path_factory.mktemp("exported")
    sink = await support.start_sink(dsn, support.make_settings(tmp))
    try:
        await send_traffic(sink, 120, seed=11)
    finally:
        await support.stop_sink(sink)
    out = tmp / "exports"
    figures = await export.export_once(dsn, out)
    yield Exported(dsn, out, figures)
    await databases.drop(dsn)
