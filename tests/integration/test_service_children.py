"""serve's helpers run as child processes: the projector, and the periodic export."""

import asyncio
import signal

import aiohttp
import duckdb
import psutil

from analytics import simulator
from service import cli
from tests import support


async def test_serve_runs_projector_and_exports_in_children(database, tmp_path):
    exports = tmp_path / "exports"
    service = support.ServiceProcess(
        database, tmp_path, KAPSO_SINK_EXPORT_INTERVAL=1, KAPSO_SINK_EXPORT_DIR=str(exports)
    )
    await service.start()
    try:
        deliveries = simulator.generate(4, 2, support.SECRET)
        result = await simulator.send(service.url + "/webhooks/kapso", deliveries, progress=False)
        assert set(result) == {200}
        async with aiohttp.ClientSession() as http:

            async def caught_up() -> bool:
                async with http.get(service.url + "/v1/projections") as resp:
                    doc = await resp.json()
                return all(p["lag_events"] == 0 for p in doc["projections"])

            await support.wait_until(caught_up, 30)
            async with http.get(service.url + "/readyz") as resp:
                assert (await resp.json())["checks"]["projector"] == "leader"
            server = psutil.Process(service.proc.pid)
            [projector] = [c for c in server.children() if "project" in c.cmdline()]
            # folding yields the CPU to the server answering webhooks
            assert projector.nice() == server.nice() + cli.PROJECTOR_NICE > server.nice()
            head = await _head(database)

            def exported() -> bool:
                path = exports / "kapso.duckdb"
                if not path.exists():
                    return False
                con = duckdb.connect(str(path), read_only=True)
                try:
                    return (
                        con.execute("SELECT max(to_position) FROM export_runs").fetchone()[0]
                        >= head
                    )
                finally:
                    con.close()

            await support.wait_until(exported, 60, every=0.2)
        service.proc.send_signal(signal.SIGTERM)
        assert await service.wait() == 0
        await asyncio.sleep(0)
        assert "service project" not in _processes(), "projector child outlived serve"
    finally:
        service.kill()


async def _head(dsn):
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT max(position) FROM events")
    finally:
        await conn.close()


def _processes() -> str:
    import subprocess

    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
