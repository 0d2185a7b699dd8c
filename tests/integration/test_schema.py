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
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {
            "events_default",
            "event_keys",
            "deliveries",
            "conversations",
            "messages",
            "projection_checkpoints",
            "archives",
            "schema_migrations",
        } <= tables
        partitioned = await conn.fetchval(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'events'::regclass"
        )
        assert partitioned == b"r"  # by range of received_at, one partition per month
        months = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        )
        assert months >= 4  # default + this month + two ahead
        log_indexes = {
            r["def"].split(" USING ", 1)[1]
            for r in await conn.fetch(
                "SELECT indexdef AS def FROM pg_indexes WHERE tablename = 'events'"
            )
        }
        # each index costs every append; position scans use the primary key, which it leads
        assert log_indexes == {
            'btree ("position", received_at)',
            'btree (conversation_id, "position") WHERE (conversation_id IS NOT NULL)',
            'btree (message_id, "position") WHERE (message_id IS NOT NULL)',
        }
        unique = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'event_keys_pkey'"
        )
        assert unique == "PRIMARY KEY (idem_hash)"
        triggers = {
            r["tgname"]
            for r in await conn.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
        assert {
            "events_append_only",
            "events_no_truncate",
            "events_default_no_truncate",
            "event_keys_append_only",
            "event_keys_no_truncate",
            "deliveries_append_only",
            "deliveries_no_truncate",
        } <= triggers
        functions = {
            r["proname"]
            for r in await conn.fetch(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'kapso_sink_%'"
            )
        }
        assert functions == {
            "kapso_sink_append",
            "kapso_sink_ensure_month",
            "kapso_sink_last_message",
            "kapso_sink_reject_change",
        }
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("table", ["events", "deliveries", "event_keys"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {t} SET received_at = now()",
        "DELETE FROM {t}",
        "TRUNCATE {t}",
        "TRUNCATE {t} CASCADE",
    ],
)
async def test_log_rejects_changes(sink, table, statement):
    status, _, _ = await sink.send({"message": {"id": "wamid.1"}})
    assert status == 200
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await sink.pool.execute(statement.format(t=table))
    assert await sink.pool.fetchval(f"SELECT count(*) FROM {table}") == 1


async def test_each_month_partition_rejects_truncate(sink):
    await sink.send({"message": {"id": "wamid.1"}})
    partition = await sink.pool.fetchval("SELECT tableoid::regclass::text FROM events LIMIT 1")
    assert partition.startswith("events_2")
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await sink.pool.execute(f"TRUNCATE {partition}")
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await sink.pool.execute(f"DELETE FROM {partition}")


async def test_pool_release_costs_no_reset_query_but_still_ends_an_open_transaction(database):
    pool = await db.create_pool(database, size=1)
    try:
        sent = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            await conn.execute("CREATE TABLE release_probe (n int)")
            await conn.execute("BEGIN")  # left open on purpose
            await conn.execute("INSERT INTO release_probe VALUES (1)")
        async with pool.acquire() as conn:  # the same connection (pool of one)
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM release_probe") == 0
        # asyncpg's default reset would have run UNLISTEN, RESET ALL and unlock-all here
        assert "ROLLBACK" in sent
        assert not [q for q in sent if "RESET ALL" in q or "advisory_unlock_all" in q]
    finally:
        await pool.close()
