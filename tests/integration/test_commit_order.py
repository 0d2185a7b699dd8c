"""Position order equals commit order, also with several writers (processes) on one database."""

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from service import db
from service.db import Q
from service.log import writer as log_writer
from service.webhooks import kapso
from tests import support


def record(i: int, tag: str = "w"):
    body = f'{{"message":{{"id":"wamid.{tag}{i}"}}}}'.encode()
    return kapso.parse_delivery(body, {"X-Webhook-Event": "x"}, "sid", datetime.now(UTC))


async def wait_for_advisory_waiter(conn):
    """Poll until some backend is blocked on an advisory lock."""
    await support.wait_until(
        lambda: conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ),
        10,
    )


async def test_an_append_waits_for_another_processes_open_transaction(database):
    pool = await db.create_pool(database, size=2)
    writer = log_writer.LogWriter(pool, commit_timeout=9.0)
    writer.start()
    other = await asyncpg.connect(database)
    watcher = await asyncpg.connect(database)
    try:
        tx = other.transaction()
        await tx.start()
        delivery, events = record(1, "first")  # another process, mid-append
        [row] = await other.fetch(Q["append_batch"], [delivery], events)
        task = asyncio.create_task(writer.append(*record(2, "second")))
        await wait_for_advisory_waiter(watcher)
        assert not task.done()
        await tx.commit()
        result = await task
        assert result.positions[0] > row["position"]
    finally:
        await writer.close()
        await other.close()
        await watcher.close()
        await pool.close()


@pytest.mark.parametrize("writers", [3])
async def test_a_tailing_reader_never_skips_an_event(database, writers):
    """Several writers append concurrently; a reader follows `position > checkpoint`."""
    pools = [await db.create_pool(database, size=2) for _ in range(writers)]
    ws = [log_writer.LogWriter(p, batch_max=7, commit_timeout=9.0) for p in pools]
    for w in ws:
        w.start()
    reader = await asyncpg.connect(database)
    seen: list[int] = []
    done = asyncio.Event()

    async def tail():
        checkpoint = 0
        while True:
            finished = done.is_set()
            rows = await reader.fetch(
                "SELECT position FROM events WHERE position > $1 ORDER BY position", checkpoint
            )
            if rows:
                seen.extend(r["position"] for r in rows)
                checkpoint = rows[-1]["position"]
            elif finished:
                return
            await asyncio.sleep(0)

    async def produce(w, tag):
        await asyncio.gather(*(w.append(*record(i, tag)) for i in range(150)))

    tailer = asyncio.create_task(tail())
    try:
        await asyncio.gather(*(produce(w, f"p{n}-") for n, w in enumerate(ws)))
        done.set()
        await tailer
        all_positions = [
            r["position"]
            for r in await reader.fetch("SELECT position FROM events ORDER BY position")
        ]
        assert len(all_positions) == writers * 150
        assert seen == all_positions
    finally:
        for w in ws:
            await w.close()
        for p in pools:
            await p.close()
        await reader.close()


async def test_one_writer_keeps_several_appends_in_flight_and_in_order(database):
    """While one append waits for the lock, the next batches are already queued behind it in
    PostgreSQL (not in Python), and they still commit in the order they were started."""
    pool = await db.create_pool(database, size=4)
    writer = log_writer.LogWriter(pool, commit_timeout=9.0, concurrency=3)
    writer.start()
    other = await asyncpg.connect(database)
    watcher = await asyncpg.connect(database)

    async def waiting() -> int:
        return await watcher.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )

    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock(7263501)")  # an append mid-commit
        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(writer.append(*record(i, "inflight"))))
            await support.wait_until(lambda n=i + 1: _at_least(waiting, n), 10)
        tasks.append(asyncio.create_task(writer.append(*record(3, "inflight"))))
        await asyncio.sleep(0.2)
        assert await waiting() == 3  # the limit: the fourth batch waits in the writer
        assert writer.queued == 1
        await tx.commit()
        results = await asyncio.gather(*tasks)
        positions = [r.positions[0] for r in results]
        assert positions == sorted(positions)
        assert [r.stored for r in results] == [1, 1, 1, 1]
    finally:
        await writer.close()
        await other.close()
        await watcher.close()
        await pool.close()


async def _at_least(count, n: int) -> bool:
    return await count() >= n


async def test_the_previous_releases_append_call_still_appends_during_an_upgrade(database):
    # the 21-column-array call of the release before migration 0007, as its writer made it
    previous = (
        'SELECT idem_hash, "position" FROM kapso_sink_append('
        + ", ".join(f"${i}" for i in range(1, 22))
        + ")"
    )
    conn = await asyncpg.connect(database)
    await db._init_connection(conn)
    try:
        deliveries, events = [], []
        for i in range(3):
            delivery, evs = record(i, "old")
            deliveries.append(delivery)
            events += evs
        columns = [*zip(*deliveries, strict=True), *zip(*events, strict=True)]
        first = await conn.fetch(previous, *columns)
        again = await conn.fetch(previous, *columns)  # a retry: stored once
        stored = await conn.fetch(
            "SELECT idem_hash, message_id, payload FROM events ORDER BY position"
        )
    finally:
        await conn.close()
    assert [r["idem_hash"] for r in first] == [e.idem_hash for e in events] and again == []
    assert [r["message_id"] for r in stored] == ["wamid.old0", "wamid.old1", "wamid.old2"]
    assert stored[0]["payload"] == {"message": {"id": "wamid.old0"}}
