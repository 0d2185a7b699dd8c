"""The outage spool: verified deliveries survive PostgreSQL being down, in arrival order."""

import asyncio
import hashlib
import signal

import aiohttp
import asyncpg
import pytest

from analytics import simulator
from service.embedded import EmbeddedPostgres
from service.log.records import idem_hash
from tests import support

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def body(i: int) -> bytes:
    return support.dumps(
        {
            "message": {
                "id": f"wamid.S{i:05d}",
                "timestamp": "1730092800",
                "kapso": {"direction": "inbound"},
            },
            "conversation": {"id": "conv-spool"},
            "phone_number_id": "1",
        }
    )


@pytest.fixture
async def pg(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg", port=5434)
    dsn = server.start()
    yield server, dsn
    server.stop(mode="immediate")


async def test_outage_is_spooled_then_drained_in_arrival_order(pg, tmp_path):
    server, dsn = pg
    sink = await support.start_sink(
        dsn, support.make_settings(tmp_path, KAPSO_SINK_COMMIT_TIMEOUT=2, KAPSO_SINK_PROJECTOR=True)
    )
    try:
        assert (await sink.post(*support.delivery(body(1))))[1] == {"stored": 1, "duplicates": 0}
        server.stop(mode="immediate")
        answers = []
        retried = support.delivery(body(2), key="k2")
        for raw, headers in [
            retried,
            support.delivery(body(3)),
            retried,
            support.delivery(body(4)),
        ]:
            answers.append(await sink.post(raw, headers))
        assert [a[:2] for a in answers] == [
            (200, {"stored": 1, "duplicates": 0, "spooled": True})
        ] * 4
        status, ready, _ = await sink.get("/readyz")
        assert status == 503 and ready["checks"]["spool_records"] == 4
        async with sink.http.get(sink.url + "/metrics") as resp:
            assert "kapso_sink_spool_records 4.0" in await resp.text()
        server.start()
        await support.wait_until(lambda: _spool_empty(sink), 30)
        await sink.pool.expire_connections()
        rows = await sink.pool.fetch("SELECT message_id FROM events ORDER BY position")
        assert [r["message_id"] for r in rows] == [f"wamid.S{i:05d}" for i in (1, 2, 3, 4)]
        assert (await sink.get("/readyz"))[1]["checks"]["spool_bytes"] == 0
        # the projector carries on from the drained events
        await support.wait_until(lambda: _messages(sink.pool, 4), 30)
    finally:
        await support.stop_sink(sink)


async def _spool_empty(sink) -> bool:
    status, doc, _ = await sink.get("/readyz")
    return status == 200 and doc["checks"]["spool_records"] == 0


async def _messages(pool, n) -> bool:
    try:
        return await pool.fetchval("SELECT count(*) FROM messages") == n
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


async def test_full_spool_means_503(pg, tmp_path):
    server, dsn = pg
    sink = await support.start_sink(
        dsn,
        support.make_settings(
            tmp_path, KAPSO_SINK_COMMIT_TIMEOUT=2, KAPSO_SINK_SPOOL_MAX_BYTES=1500
        ),
    )
    try:
        server.stop(mode="immediate")
        first = await sink.post(*support.delivery(body(1)))
        assert first[1].get("spooled") is True
        status, doc, headers = await sink.post(*support.delivery({"pad": "x" * 2000}))
        assert status == 503 and "spool is full" in doc["detail"] and headers["Retry-After"]
    finally:
        server.start()
        await support.stop_sink(sink)


async def test_database_down_while_traffic_flows_loses_nothing(pg, tmp_path):
    """A real service process, the simulator's traffic, and PostgreSQL gone for a while."""
    server, dsn = pg
    service = support.ServiceProcess(dsn, tmp_path, KAPSO_SINK_COMMIT_TIMEOUT=1)
    await service.start()
    deliveries = simulator.generate(25, 3, support.SECRET)
    acked: list[bytes] = []
    try:
        async with aiohttp.ClientSession() as http:

            async def send(d):
                async with http.post(
                    service.url + "/webhooks/kapso", data=d.body, headers=d.headers
                ) as resp:
                    if resp.status == 200:
                        acked.append(d.body)

            half = len(deliveries) // 3
            await asyncio.gather(*(send(d) for d in deliveries[:half]))
            server.stop(mode="immediate")
            await asyncio.gather(*(send(d) for d in deliveries[half : 2 * half]))
            server.start()
            await asyncio.gather(*(send(d) for d in deliveries[2 * half :]))
            assert len(acked) == len(deliveries)  # nothing refused: spooled while down

            async def drained() -> bool:
                async with http.get(service.url + "/readyz") as resp:
                    doc = await resp.json()
                return resp.status == 200 and doc["checks"]["spool_records"] == 0

            await support.wait_until(drained, 60)
        conn = await asyncpg.connect(dsn)
        try:
            stored = {
                r["body_sha256"] for r in await conn.fetch("SELECT body_sha256 FROM deliveries")
            }
            hashes = {r["idem_hash"] for r in await conn.fetch("SELECT idem_hash FROM events")}
            dupes = await conn.fetchval("SELECT count(*) - count(DISTINCT idem_hash) FROM events")
        finally:
            await conn.close()
        assert {hashlib.sha256(b).digest() for b in acked} <= stored
        singles = [b for b in acked if b'"batch":true' not in b]
        assert {idem_hash("kapso", hashlib.sha256(b).digest(), "single") for b in singles} <= hashes
        assert dupes == 0
        service.proc.send_signal(signal.SIGTERM)
        assert await service.wait() == 0
    finally:
        service.kill()
