import asyncio

import asyncpg
import pytest

from service import db
from tests import support


async def test_migrating_an_empty_database_builds_the_expected_catalog(databases, pg_dsn):
    name = "kapso_empty_" + databases.template[-8:]
    dsn = support.with_database(pg_dsn, name)
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        # three processes starting at once: the advisory lock lets exactly one apply each file
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(db.migrations())]
        conn = conns[0]
        assert await db.schema_version(conn) == db.latest_version()
        assert await db.migrate(conn) == []  # idempotent
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"events", "deliveries", "schema_migrations"} <= tables
        unique = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'events_idem_hash_key'")
        assert unique == "UNIQUE (idem_hash)"
        triggers = {r["tgname"] for r in await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
        assert {"events_append_only", "events_no_truncate",
                "deliveries_append_only", "deliveries_no_truncate"} <= triggers
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("table", ["events", "deliveries"])
@pytest.mark.parametrize("statement", [
    "UPDATE {t} SET received_at = now()",
    "DELETE FROM {t}",
    "TRUNCATE {t}",
    "TRUNCATE {t} CASCADE",
])
async def test_log_rejects_changes(sink, table, statement):
    status, _, _ = await sink.send({"message": {"id": "wamid.1"}})
    assert status == 200
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await sink.pool.execute(statement.format(t=table))
    assert await sink.pool.fetchval(f"SELECT count(*) FROM {table}") == 1
