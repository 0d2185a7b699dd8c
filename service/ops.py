"""Health and readiness."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from service import db, keys
from service.projections import runner


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, object] = {}
    try:
        async with asyncio.timeout(2.0):
            async with request.app[keys.pool].acquire() as conn:
                version = await db.schema_version(conn)
        checks["database"] = "ok"
        checks["schema_version"] = version
        checks["migrations"] = "ok" if version >= db.latest_version() else "pending"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
    writer = request.app[keys.writer]
    checks["queued"] = writer.queued
    if writer.spool is not None:
        checks["spool_records"] = writer.spool.records
        checks["spool_bytes"] = writer.spool.size
    projector = request.app.get(keys.projector)
    child = request.app.get(keys.projector_process)
    if projector is not None:
        checks["projector"] = "leader" if projector.is_leader else "standby"
    elif child is not None and checks.get("database") == "ok":
        with contextlib.suppress(Exception):
            leader = await runner.leader_pid(request.app[keys.pool])
            checks["projector"] = (
                "leader" if leader is not None and leader == child.pid else "standby"
            )
    ready = checks.get("database") == "ok" and checks.get("migrations") == "ok"
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
