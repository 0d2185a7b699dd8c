"""A real exporter process killed mid-way leaves the previous export whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import asyncpg
import pytest

from analytics import export, warehouse
from tests import support
from tests.analytics.conftest import export_counts, log_counts, send_traffic, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _exporter(dsn: str, out, tmp_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAPSO_SINK_LOG_LEVEL": "warning",
        "KAPSO_SINK_DATA_DIR": str(tmp_path),
    }
    with open(tmp_path / "exporter.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "analytics.export", "--out", str(out)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )


async def test_sigkill_mid_export_keeps_the_previous_export(database, tmp_path):
    out = tmp_path / "exports"
    sink = await support.start_sink(database, support.make_settings(tmp_path))
    try:
        await send_traffic(sink, 20, seed=3)
        await export.export_once(database, out)
        old = export_counts(out)
        await send_traffic(sink, 20, seed=4)
    finally:
        await support.stop_sink(sink)

    # Hold the messages table so the exporter stalls after writing its event files.
    blocker, monitor = await asyncpg.connect(database), await asyncpg.connect(database)
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    proc = _exporter(database, out, tmp_path)
    try:

        async def stalled() -> bool:
            waiting = await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%FROM messages%'"
            )
            parts = [
                p
                for p in out.glob("events/*/part-*.parquet")
                if int(p.stem.removeprefix("part-")) > old["head"]
            ]
            return waiting > 0 and bool(parts)

        await until(
            stalled,
            "the exporter to write its event files and stall",
            alive=lambda: proc.poll() is None,
        )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await tx.rollback()
        await blocker.close()

    # The interrupted run's files are on disk, yet the committed export is the old one.
    leftovers = [
        p
        for p in out.glob("events/*/part-*.parquet")
        if int(p.stem.removeprefix("part-")) > old["head"]
    ]
    assert leftovers
    assert export_counts(out) == old
    assert [r.run for r in warehouse.runs(out)] == [1]

    async def unlocked() -> bool:  # the killed process's session must end first
        return not await monitor.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
            export.EXPORT_LOCK,
        )

    try:
        await until(unlocked, "the killed exporter's session to end")
    finally:
        await monitor.close()

    figures = await export.export_once(database, out)
    assert figures["run"] == 2 and figures["from_position"] == old["head"]
    assert export_counts(out) == await log_counts(database)
    assert not list(out.rglob("*.tmp"))
    con = warehouse.connect(out)
    try:
        assert con.execute(
            "SELECT count(*) = count(DISTINCT position) FROM raw_events"
        ).fetchall() == [(True,)]
    finally:
        con.close()
