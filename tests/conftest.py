"""Shared fixtures: a real PostgreSQL (DATABASE_URL, or the project-local embedded one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_asyncio

from service import logs
from tests import support

ROOT = Path(__file__).resolve().parent.parent

logs.configure("warning", "console")


@pytest.fixture(scope="session")
def pg_dsn():
    """The server tests run against; the embedded one is started and stopped here."""
    url = os.environ.get("KAPSO_SINK_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from service.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(ROOT / ".kapso-sink" / "pg-test")
    dsn = server.start()
    yield dsn
    if not _others_connected(dsn):  # another test session may share the cluster
        server.stop_if_started()


def _others_connected(dsn: str) -> bool:
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()

    try:
        return asyncio.run(count()) > 0
    except (OSError, asyncpg.PostgresError):
        return False


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def databases(pg_dsn):
    dbs = support.Databases(pg_dsn)
    await dbs.create_template()
    yield dbs
    await dbs.drop_template()


@pytest_asyncio.fixture(loop_scope="session")
async def database(databases):
    """A fresh, migrated database for one test."""
    dsn = await databases.create()
    yield dsn
    await databases.drop(dsn)


@pytest.fixture
def sink_settings(tmp_path):
    return support.make_settings(tmp_path)


@pytest_asyncio.fixture(loop_scope="session")
async def sink(database, sink_settings):
    """The real service on a real socket, with its own pool, against a fresh database."""
    running = await support.start_sink(database, sink_settings)
    yield running
    await support.stop_sink(running)
