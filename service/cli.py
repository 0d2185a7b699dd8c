"""The `kapso-sink` command: serve, migrate, and the operational subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from service import logs
from service.settings import ConfigError, Settings, load

log = structlog.get_logger("service.cli")

PROJECTOR_NICE = 5  # the projector child's niceness, relative to the server


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The DSN to use: DATABASE_URL, or a project-local embedded server started for the block."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    from service.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "pg")
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop_if_started()


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_on_uvloop(coro):
    """asyncio.run on uvloop, the loop the server runs on, for the other long-running
    commands (rebuild, projector), so that all of them are measured on the same loop."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)


def tune_gc() -> None:
    """For the request path: move what start-up built out of the collector's way, and collect
    young objects less often (fewer, shorter pauses). Not for the projector: its batches make
    cyclic garbage that then waits too long for a full collection (RSS crept up in a soak)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from service.app import create_app

    with database(settings) as dsn:
        app = create_app(settings, dsn)
        tune_gc()
        log.info("serving", host=settings.host, port=settings.port)
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            loop=new_loop(),
            access_log=None,
            print=None,
            shutdown_timeout=settings.commit_timeout + 2,
            handle_signals=True,
        )
    log.info("stopped")
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from service import db

    async def run(dsn: str) -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            return await db.migrate(conn)
        finally:
            await conn.close()

    with database(settings) as dsn:
        applied = asyncio.run(run(dsn))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service import db
    from service.projections import runner

    names = [args.name] if args.name else list(runner.NAMES)

    async def run(dsn: str) -> int:
        pool = await db.create_pool(dsn, size=len(names) + 1)  # a reader and one per model
        try:
            async with pool.acquire() as conn:
                await db.migrate(conn)
                head = await conn.fetchval(db.Q["log_head"])
            with tqdm(
                total=head, unit="ev", desc=f"rebuild {', '.join(names)}", disable=args.no_progress
            ) as bar:
                return await runner.rebuild(pool, names, progress=bar.update)
        finally:
            await pool.close()

    with database(settings) as dsn:
        total = run_on_uvloop(run(dsn))
    print(f"rebuilt {', '.join(names)} from {total} log events")
    return 0


def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import date

    from service import db
    from service.log import archive

    try:
        year, month = (int(part) for part in args.before.split("-"))
        before = date(year, month, 1)
    except ValueError:
        print(f"kapso-sink: --before must be YYYY-MM, not {args.before!r}", file=sys.stderr)
        return 2

    async def run(dsn: str) -> list[dict]:
        pool = await db.create_pool(dsn, size=2)
        try:
            async with pool.acquire() as conn:
                await db.migrate(conn)
            return await archive.archive_before(pool, before, Path(args.dir))
        finally:
            await pool.close()

    with database(settings) as dsn:
        done = asyncio.run(run(dsn))
    for item in done:
        print(
            f"archived {item['partition']}: {item['events']} events, "
            f"{item['deliveries']} deliveries -> {item['events_file']}"
        )
    if not done:
        print(f"nothing to archive before {args.before}")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from analytics import export

    return asyncio.run(export.run(settings, args))


def cmd_project(settings: Settings, args: argparse.Namespace) -> int:
    """Run the leader-elected projector until SIGTERM/SIGINT."""
    import signal

    from service import db
    from service.projections.runner import Projector

    async def run(dsn: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watcher = None
        if args.parent_pid:  # started by serve: end with it, even if it was killed -9
            watcher = asyncio.create_task(_stop_when_orphaned(args.parent_pid, stop))
            # webhooks wait on the server's CPU, folds can wait: under full load the server
            # wins the core (ingest p99 about halved); spare CPU still goes to the projector
            os.nice(PROJECTOR_NICE)
        pool = await db.create_pool(dsn, size=3)
        try:
            projector = Projector(
                pool, dsn, batch_size=args.batch, min_interval=settings.projector_interval
            )
            await projector.run(stop)
        finally:
            await pool.close()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    with database(settings) as dsn:
        run_on_uvloop(run(dsn))
    return 0


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("parent_gone", parent=parent)
            stop.set()
            return
        await asyncio.sleep(0.2)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from analytics import simulator

    return asyncio.run(simulator.run(args))


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "rebuild": cmd_rebuild,
    "archive": cmd_archive,
    "export": cmd_export,
    "project": cmd_project,
    "simulate": cmd_simulate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kapso-sink", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the webhook sink and query API (default)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    rebuild = sub.add_parser("rebuild", help="rebuild read models from the event log")
    rebuild.add_argument(
        "name",
        nargs="?",
        choices=["conversations", "messages"],
        help="one read model (default: all)",
    )
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar")
    proj = sub.add_parser("project", help="run the projector alone (serve starts one itself)")
    proj.add_argument(
        "--batch", type=int, default=5000, help="events folded per transaction (bounds its memory)"
    )
    proj.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    arch = sub.add_parser("archive", help="move whole months of the log to Parquet")
    arch.add_argument(
        "--before", required=True, metavar="YYYY-MM", help="archive every month before this one"
    )
    arch.add_argument("--dir", default="archive", help="where the Parquet files go")
    exp = sub.add_parser(
        "export", help="export the log, read models and analytics models to Parquet and DuckDB"
    )
    # defined here rather than imported: the export's modules (Arrow, DuckDB) are heavy
    exp.add_argument(
        "--out", type=Path, metavar="DIR", help="export folder (default: KAPSO_SINK_EXPORT_DIR)"
    )
    exp.add_argument("--readers", type=int, default=2, help="parallel connections reading the log")
    sim = sub.add_parser("simulate", help="send realistic signed Kapso traffic to a sink")
    try:
        from analytics import simulator

        simulator.add_arguments(sim)
    except ImportError:  # pragma: no cover
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        settings = load()
    except ConfigError as exc:
        print(f"kapso-sink: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    return COMMANDS[command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
