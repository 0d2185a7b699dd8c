"""Scenario `rebuild`: rebuild the read models from 1,000,000 synthetic log events."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import asyncpg

from bench import synthetic
from service import db
from service.cli import run_on_uvloop
from service.projections import runner

TARGET = 50_000


def _server_dsn() -> tuple[str, object | None]:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], None
    from service.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(Path(".kapso-sink/pg-bench-rebuild"))
    return server.start(), server


async def _run(dsn: str, events: int) -> dict:
    from tests.support import with_database

    name = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        target = with_database(dsn, name)
        conn = await asyncpg.connect(target)
        await db.migrate(conn)
        started = time.perf_counter()
        await synthetic.generate(conn, events)
        vacuumed = os.environ.get("BENCH_REBUILD_FRESH_LOG") != "1"
        if vacuumed:
            # a log the service wrote has been vacuumed by autovacuum (it vacuums tables that
            # only grow, too) long before anyone rebuilds from it. Rows read for the first
            # time since they were bulk-loaded would also have their hint bits set by the
            # rebuild, which with data checksums writes each page to the WAL once more.
            await conn.execute("VACUUM events")
        await conn.execute("ANALYZE events")
        # the generator's writes are flushed before the clock starts, not during the rebuild
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        generated = time.perf_counter() - started
        await conn.close()
        pool = await db.create_pool(target, size=4)
        try:
            wal_before = await pool.fetchval("SELECT pg_current_wal_lsn()")
            started = time.perf_counter()
            total = await runner.rebuild(pool)
            seconds = time.perf_counter() - started
            wal_bytes = await pool.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint", wal_before
            )
            messages = await pool.fetchval("SELECT count(*) FROM messages")
            conversations = await pool.fetchval("SELECT count(*) FROM conversations")
        finally:
            await pool.close()
        return {
            "events": total,
            "seconds": round(seconds, 2),
            "events_per_second": round(total / seconds),
            "target": TARGET,
            "messages": messages,
            "conversations": conversations,
            "generate_seconds": round(generated, 1),
            "wal_mib": round(wal_bytes / 2**20, 1),
            "log_vacuumed": vacuumed,
        }
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def run(args) -> dict:
    events = getattr(args, "events", None) or 1_000_000
    dsn, server = _server_dsn()
    try:
        result = run_on_uvloop(_run(dsn, events))
    finally:
        if server is not None:
            server.stop_if_started()
    print(f"scenario rebuild ({result['events']} synthetic log events)")
    print(
        f"  rebuild: {result['seconds']} s, {result['events_per_second']} events/s "
        f"(target >= {TARGET})"
    )
    print(f"  read models: {result['messages']} messages, {result['conversations']} conversations")
    print(
        f"  WAL written by the rebuild: {result['wal_mib']} MiB "
        f"(log vacuumed first: {result['log_vacuumed']})"
    )
    return result
