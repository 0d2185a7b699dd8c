"""Real service processes: kill -9 under traffic, and two instances on one database."""

import asyncio
import signal

import aiohttp
import asyncpg
import pytest

from analytics import simulator
from service import db
from service.projections import runner
from tests import support

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def post(http, url, d):
    try:
        async with http.post(url + "/webhooks/kapso", data=d.body, headers=d.headers) as resp:
            return resp.status
    except (TimeoutError, aiohttp.ClientError):
        return None


async def ready(http, url):
    try:
        async with http.get(url + "/readyz") as resp:
            return await resp.json()
    except aiohttp.ClientError:
        return None


async def projected(http, url) -> bool:
    async with http.get(url + "/v1/projections") as resp:
        doc = await resp.json()
    return all(p["lag_events"] == 0 for p in doc["projections"])


async def snapshot(pool):
    return {
        name: [dict(r) for r in await pool.fetch(f"SELECT * FROM {name} ORDER BY id")]
        for name in ("conversations", "messages")
    }


async def check_log_and_models(dsn, acked):
    pool = await db.create_pool(dsn, size=2)
    try:
        stored = {r["body_sha256"] for r in await pool.fetch("SELECT body_sha256 FROM deliveries")}
        assert {d.body_sha for d in acked} <= stored
        assert await pool.fetchval("SELECT count(*) - count(DISTINCT idem_hash) FROM events") == 0
        before = await snapshot(pool)
        await runner.rebuild(pool)
        assert await snapshot(pool) == before
    finally:
        await pool.close()


async def _head(dsn) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT max(position) FROM events")
    finally:
        await conn.close()


def _exported_to(folder, head) -> bool:
    """The shared export reached `head`, and its runs never overlapped: one exporter at a time."""
    import duckdb

    path = folder / "kapso.duckdb"
    if not path.exists():
        return False
    con = duckdb.connect(str(path), read_only=True)
    try:
        runs = con.execute(
            "SELECT from_position, to_position FROM export_runs ORDER BY run"
        ).fetchall()
    finally:
        con.close()
    for (_, previous_end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start == previous_end, f"overlapping exports: {runs}"
    return bool(runs) and runs[-1][1] >= head


class Sent:
    def __init__(self, d):
        import hashlib

        self.delivery = d
        self.body_sha = hashlib.sha256(d.body).digest()


async def test_kill_9_under_traffic_loses_nothing_acknowledged(database, tmp_path):
    deliveries = simulator.generate(30, 11, support.SECRET)
    service = support.ServiceProcess(database, tmp_path)
    await service.start()
    acked, unanswered = [], []
    try:
        async with aiohttp.ClientSession() as http:
            queue = list(deliveries)

            async def worker():
                while queue:
                    d = queue.pop(0)
                    status = await post(http, service.url, d)
                    (acked if status == 200 else unanswered).append(Sent(d))

            workers = [asyncio.create_task(worker()) for _ in range(12)]
            await support.wait_until(lambda: len(acked) >= len(deliveries) // 3)
            service.proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*workers)
            assert service.proc.wait() == -signal.SIGKILL
            restarted = support.ServiceProcess(database, tmp_path, port=service.port)
            await restarted.start()
            try:
                for sent in unanswered:  # Kapso retries what got no 200
                    assert await post(http, restarted.url, sent.delivery) == 200
                    acked.append(sent)
                await support.wait_until(lambda: projected(http, restarted.url), 60)
            finally:
                restarted.proc.send_signal(signal.SIGTERM)
                assert await restarted.wait() == 0
    finally:
        service.kill()
    assert len(acked) == len(deliveries)
    await check_log_and_models(database, acked)


async def test_two_instances_one_database(database, tmp_path):
    shared = {"KAPSO_SINK_EXPORT_INTERVAL": 1, "KAPSO_SINK_EXPORT_DIR": str(tmp_path / "exports")}
    a = support.ServiceProcess(database, tmp_path / "a", **shared)
    b = support.ServiceProcess(database, tmp_path / "b", **shared)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    await a.start()
    await b.start()
    deliveries = simulator.generate(20, 5, support.SECRET)
    acked = []
    try:
        async with aiohttp.ClientSession() as http:

            async def send(i, d):
                # a load balancer spreads deliveries; some retries land on the other instance
                for target in [a, b] if i % 7 == 0 else [(a, b)[i % 2]]:
                    assert await post(http, target.url, d) == 200
                acked.append(Sent(d))

            await asyncio.gather(*(send(i, d) for i, d in enumerate(deliveries)))
            roles = [(await ready(http, s.url))["checks"]["projector"] for s in (a, b)]
            assert sorted(roles) == ["leader", "standby"]
            leader, standby = (a, b) if roles[0] == "leader" else (b, a)
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait()

            async def took_over() -> bool:
                doc = await ready(http, standby.url)
                return doc is not None and doc["checks"].get("projector") == "leader"

            await support.wait_until(took_over, 10)
            await support.wait_until(lambda: projected(http, standby.url), 60)
            head = await _head(database)
            await support.wait_until(
                lambda: _exported_to(tmp_path / "exports", head), 60, every=0.2
            )
    finally:
        for s in (a, b):
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
                await s.wait()
            s.kill()
    await check_log_and_models(database, acked)
    conn = await asyncpg.connect(database)
    try:
        distinct = len({d.body for d in deliveries})  # the simulator repeats some bodies
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == distinct
    finally:
        await conn.close()
