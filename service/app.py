"""The app factory: settings in, a wired aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import structlog
from aiohttp import web

from service import db, keys, metrics, middleware, ops
from service.api import openapi
from service.api import routes as api_routes
from service.log.spool import Spool
from service.log.writer import LogWriter
from service.projections.process import ProjectorProcess
from service.projections.runner import Projector
from service.settings import Settings, webhook_secrets
from service.webhooks import parse
from service.webhooks import routes as webhook_routes
from service.webhooks.signature import Keyring

log = structlog.get_logger("service.app")


def create_app(settings: Settings, dsn: str) -> web.Application:
    """Build the application; the pool, migrations and writer start with it."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middleware.request_context, api_routes.require_token],
    )
    app[keys.settings] = settings
    app[keys.dsn] = dsn
    secrets, secret_file = webhook_secrets(settings)
    app[keys.keyring] = Keyring.from_secrets(secrets)
    if settings.meta_app_secret is not None:
        app[keys.meta_keyring] = Keyring.from_secrets(
            [settings.meta_app_secret.get_secret_value().encode()]
        )
    if secret_file is not None:
        log.info("webhook_secret_file", path=str(secret_file.resolve()))
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_writer)
    if settings.projector == "inline":
        app.cleanup_ctx.append(_projector)
    elif settings.projector == "process":
        app.cleanup_ctx.append(_projector_process)
    if settings.export_interval > 0:
        app.cleanup_ctx.append(_exporter)
    webhook_routes.setup(app)
    ops.setup(app)
    api_routes.setup(app)
    openapi.setup(app)
    metrics.setup(app)
    return app


async def _database(app: web.Application):
    settings = app[keys.settings]
    pool = await _connect(app[keys.dsn], settings.pool_size)
    async with pool.acquire() as conn:
        await db.migrate(conn)
        await conn.execute(db.Q["ensure_partitions"])
    app[keys.pool] = pool
    maintenance = asyncio.create_task(_ensure_partitions_hourly(pool), name="partitions")
    yield
    maintenance.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await maintenance
    await pool.close()


async def _ensure_partitions_hourly(pool) -> None:
    """Keep next months' log partitions created ahead of time."""
    while True:
        await asyncio.sleep(3600)
        try:
            await pool.execute(db.Q["ensure_partitions"])
        except Exception as exc:  # noqa: BLE001 - retried in an hour; the default partition catches rows
            log.warning("partition_maintenance_failed", error=type(exc).__name__)


async def _connect(dsn: str, size: int, attempts: int = 30):
    for attempt in range(1, attempts + 1):
        try:
            return await db.create_pool(dsn, size=size)
        except (TimeoutError, OSError) as exc:
            if attempt == attempts:
                raise
            log.warning("database_unreachable", attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(1.0)


async def _writer(app: web.Application):
    settings = app[keys.settings]
    spool = None
    if settings.spool_max_bytes > 0:
        spool = Spool(
            settings.data_dir / "spool" / f"spool-{settings.port}.log", settings.spool_max_bytes
        )
        spool.open()
    writer = LogWriter(
        app[keys.pool],
        batch_max=settings.batch_max,
        commit_timeout=settings.commit_timeout,
        concurrency=max(1, min(4, settings.pool_size // 2)),  # leave connections for queries
        spool=spool,
        reparse=parse.parse_raw,
    )
    writer.start()
    app[keys.writer] = writer
    yield
    await writer.close()
    if spool is not None:
        spool.close()
    log.info("writer_closed", stored=writer.stats.stored, duplicates=writer.stats.duplicates)


async def _projector(app: web.Application):
    settings = app[keys.settings]
    projector = Projector(app[keys.pool], app[keys.dsn], min_interval=settings.projector_interval)
    app[keys.projector] = projector
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop), name="projector")
    yield
    stop.set()
    await task


async def _exporter(app: web.Application):
    """Every KAPSO_SINK_EXPORT_INTERVAL seconds, run `kapso-sink export` as a child process:
    its memory and CPU stay out of the server, and its lock keeps one export per database."""
    settings = app[keys.settings]
    stop = asyncio.Event()
    running: list[asyncio.subprocess.Process] = []

    async def loop() -> None:
        env = {
            **os.environ,
            "DATABASE_URL": app[keys.dsn],
            "KAPSO_SINK_EXPORT_DIR": str(settings.export_dir),
        }
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.export_interval)
                return
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                "export",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            running[:] = [proc]
            out, _ = await proc.communicate()
            running.clear()
            line = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
            if proc.returncode == 0:
                log.info("export_finished", result=line[0])
            else:
                log.error("export_failed", code=proc.returncode, output=line[0][:500])

    task = asyncio.create_task(loop(), name="exporter")
    yield
    stop.set()
    for proc in running:  # an interrupted export leaves the previous one in place
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    await task


async def _projector_process(app: web.Application):
    child = ProjectorProcess(app[keys.dsn])
    app[keys.projector_process] = child
    child.start()
    yield
    await child.close()
