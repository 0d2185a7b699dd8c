"""Real processes: SIGTERM under load, and the database stopping under a running service."""

import asyncio
import hashlib
import signal

import aiohttp
import asyncpg
import pytest

from service.embedded import EmbeddedPostgres
from service.log.records import idem_hash
from tests import support

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def body(i: int) -> bytes:
    return support.dumps(
        {
            "message": {"id": f"wamid.F{i:06d}", "type": "text"},
            "conversation": {"id": f"conv-{i % 17}"},
            "phone_number_id": "1",
        }
    )


async def post(http, url, i):
    raw, headers = support.delivery(body(i))
    try:
        async with http.post(url + "/webhooks/kapso", data=raw, headers=headers) as resp:
            return i, resp.status, await resp.read()
    except aiohttp.ClientError:
        return i, None, b""


def event_hash(i: int) -> bytes:
    return idem_hash("kapso", hashlib.sha256(body(i)).digest(), "single")


async def stored_hashes(dsn) -> set[bytes]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["idem_hash"] for r in await conn.fetch("SELECT idem_hash FROM events")}
    finally:
        await conn.close()


async def test_sigterm_under_load_loses_nothing_acknowledged(database, tmp_path):
    service = support.ServiceProcess(database, tmp_path)
    await service.start()
    results = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            counter = iter(range(10**6))

            async def worker():
                while True:
                    r = await post(http, service.url, next(counter))
                    results.append(r)
                    if r[1] is None:
                        return

            workers = [asyncio.create_task(worker()) for _ in range(48)]
            await support.wait_until(lambda: sum(1 for r in results if r[1] == 200) >= 300)
            service.proc.send_signal(signal.SIGTERM)
            assert await service.wait() == 0
            await asyncio.wait_for(asyncio.gather(*workers), 30)
    finally:
        service.kill()
    acked = {i for i, status, _ in results if status == 200}
    assert len(acked) >= 300
    assert all(status in (200, 503, None) for _, status, _ in results)
    stored = await stored_hashes(database)
    missing = [i for i in acked if event_hash(i) not in stored]
    assert missing == []


async def test_database_stopped_mid_run_gives_503_then_recovers(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg", port=5433)
    dsn = pg.start()
    # without a spool, an unreachable database means 503 so that Kapso retries
    service = support.ServiceProcess(
        dsn, tmp_path, KAPSO_SINK_COMMIT_TIMEOUT=2, KAPSO_SINK_SPOOL_MAX_BYTES=0
    )
    try:
        await service.start()
        async with aiohttp.ClientSession() as http:
            assert (await post(http, service.url, 1))[1] == 200
            pg.stop(mode="immediate")
            _, status, raw = await post(http, service.url, 2)
            assert status == 503
            assert b"store_unavailable" in raw
            async with http.get(service.url + "/readyz") as resp:
                assert resp.status == 503
            raw_body, headers = support.delivery(body(3))
            async with http.post(
                service.url + "/webhooks/kapso", data=raw_body, headers=headers
            ) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
            pg.start()
            # Kapso retries: the same deliveries succeed once the database is back
            statuses = []
            for _ in range(100):
                _, status, _ = await post(http, service.url, 2)
                statuses.append(status)
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 200
            assert (await post(http, service.url, 3))[1] == 200
            async with http.get(service.url + "/readyz") as resp:
                assert resp.status == 200
        assert {event_hash(i) for i in (1, 2, 3)} <= await stored_hashes(dsn)
        service.proc.send_signal(signal.SIGTERM)
        assert await service.wait() == 0
    finally:
        service.kill()
        pg.stop(mode="immediate")
