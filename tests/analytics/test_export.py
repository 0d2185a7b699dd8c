"""The export against the log it came from: counts, keys, increments, the lock, the loop."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pyarrow.parquet as pq
import pytest

from analytics import export, sql, warehouse
from tests import support
from tests.analytics.conftest import export_counts, log_counts, send_traffic, until


async def test_row_counts_equal_the_log(exported):
    assert exported.figures["run"] == 1 and not exported.figures["skipped"]
    expected = await log_counts(exported.dsn)
    assert export_counts(exported.out) == expected
    assert exported.figures["new_events"] == expected["events"]
    assert exported.figures["position"] == expected["head"]


async def test_events_match_the_log_per_name(exported):
    conn = await asyncpg.connect(exported.dsn)
    try:
        log = dict(await conn.fetch("SELECT event_name, count(*) FROM events GROUP BY 1"))
    finally:
        await conn.close()
    con = warehouse.connect(exported.out)
    try:
        rows = con.execute("SELECT event_name, count(*) FROM raw_events GROUP BY 1").fetchall()
    finally:
        con.close()
    assert dict(rows) == log


async def test_event_ranges_are_read_in_key_order_not_sorted(exported):
    # a seq scan and an external sort of each range made the export about 40% slower
    conn = await asyncpg.connect(exported.dsn)
    try:
        await conn.execute(sql.PG["read_in_position_order"])
        query = sql.PG["events_range"].format(after=0, until=10**9)
        plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query))[0]["Plan"]
    finally:
        await conn.close()
    nodes = set(_node_types(plan))
    assert "Index Scan" in nodes and "Sort" not in nodes, nodes


def _node_types(plan: dict):
    yield plan["Node Type"]
    for child in plan.get("Plans", ()):
        yield from _node_types(child)


@pytest.mark.parametrize("model", sql.models(), ids=lambda m: m.name)
def test_model_keys_are_unique_and_not_null(exported, model):
    keys = ", ".join(model.grain)
    nulls = " OR ".join(f"{column} IS NULL" for column in model.grain)
    con = warehouse.connect(exported.out)
    try:
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT ({keys})) FROM {model.name}"
        ).fetchall()[0]
        null_keys = con.execute(f"SELECT count(*) FROM {model.name} WHERE {nulls}").fetchall()
    finally:
        con.close()
    assert rows > 0, f"{model.name} is empty"
    assert rows == distinct, f"{model.name}: ({keys}) is not unique"
    assert null_keys == [(0,)], f"{model.name}: ({keys}) has nulls"


def test_funnel_adds_up(exported):
    con = warehouse.connect(exported.out)
    try:
        funnel = con.execute(
            "SELECT sum(messages), sum(delivered), sum(read), sum(failed) FROM delivery_funnel"
        ).fetchall()[0]
        outbound = con.execute(
            "SELECT count(*) FROM stg_messages WHERE direction = 'outbound'"
        ).fetchall()[0][0]
        failures = con.execute("SELECT sum(failures) FROM failures_by_error").fetchall()[0][0]
    finally:
        con.close()
    messages, delivered, read, failed = funnel
    assert messages == outbound
    assert messages >= delivered >= read > 0
    assert failed == failures > 0


async def test_incremental_export_adds_exactly_the_new_events(database, tmp_path):
    out = tmp_path / "exports"
    sink = await support.start_sink(database, support.make_settings(tmp_path))
    try:
        await send_traffic(sink, 15, seed=1)
        first = await export.export_once(database, out)
        before = await log_counts(database)
        old_files = {p: p.stat().st_mtime_ns for p in out.glob("events/*/*.parquet")}

        await send_traffic(sink, 15, seed=2)
        second = await export.export_once(database, out)
        after = await log_counts(database)
    finally:
        await support.stop_sink(sink)

    assert second["run"] == first["run"] + 1 == 2
    assert second["from_position"] == first["position"] == before["head"]
    assert second["new_events"] == after["events"] - before["events"] > 0
    assert export_counts(out) == after
    assert {p: p.stat().st_mtime_ns for p in old_files} == old_files  # never rewritten
    new_files = set(out.glob("events/*/*.parquet")) - set(old_files)
    new_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in new_files)
    assert new_rows == second["new_events"]
    con = warehouse.connect(out)
    try:
        assert con.execute(
            "SELECT count(*) = count(DISTINCT position) FROM raw_events"
        ).fetchall() == [(True,)]
        assert [r[0] for r in con.execute("SELECT run FROM export_runs").fetchall()] == [1, 2]
    finally:
        con.close()

    third = await export.export_once(database, out)
    assert third["unchanged"] and third["run"] == 2 and third["new_events"] == 0


async def test_empty_log_exports_an_empty_database(database, tmp_path):
    figures = await export.export_once(database, tmp_path)
    assert figures["run"] == 1 and figures["new_events"] == 0
    assert export_counts(tmp_path) == {"events": 0, "head": 0, "messages": 0, "conversations": 0}
    con = warehouse.connect(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM delivery_funnel").fetchall() == [(0,)]
    finally:
        con.close()


async def test_a_second_exporter_skips_while_one_runs(database, tmp_path):
    holder = await asyncpg.connect(database)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", export.EXPORT_LOCK)
        figures = await export.export_once(database, tmp_path)
    finally:
        await holder.close()
    assert figures["skipped"] and figures["new_events"] == 0
    assert not (tmp_path / warehouse.DATABASE).exists()


async def test_periodic_export_runs_until_stopped_and_survives_errors(database, tmp_path):
    good = support.make_settings(
        tmp_path, KAPSO_SINK_EXPORT_INTERVAL=0.05, KAPSO_SINK_EXPORT_DIR=str(tmp_path / "good")
    )
    bad = support.make_settings(
        tmp_path, KAPSO_SINK_EXPORT_INTERVAL=0.05, KAPSO_SINK_EXPORT_DIR=str(tmp_path / "bad")
    )
    missing = support.with_database(database, "kapso_no_such_database")
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(export.run_periodically(database, good, stop)),
        asyncio.create_task(export.run_periodically(missing, bad, stop)),
    ]
    await until((tmp_path / "good" / warehouse.DATABASE).exists, "a periodic export")
    assert not any(task.done() for task in tasks)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_export_interval_zero_disables_the_loop(database, tmp_path):
    settings = support.make_settings(tmp_path, KAPSO_SINK_EXPORT_INTERVAL=0)
    await asyncio.wait_for(export.run_periodically(database, settings, asyncio.Event()), 1)
