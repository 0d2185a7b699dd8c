"""`kapso-sink export`: the log, the read models and the analytics models as Parquet + DuckDB.

An export folder holds

    kapso.duckdb                                    views, models, run history: the export
    events/day=YYYY-MM-DD/part-<position>.parquet   the log: per day, a part per run (more when days interleave)
    read_models/run-NNNNNN/<model>.parquet          read-model snapshots of one run

A run takes the exporter lock, starts from the position the committed export reached, writes
the new event parts and a snapshot folder under temporary names and renames them into place,
then builds a new database file aside and renames it over the old one. That rename commits
the run: until then readers and the next run see the previous export, whose views stop at its
own position. What a killed run leaves (temporary files, parts past the committed position,
snapshots of runs never committed) is removed by the next run before it writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog

from analytics import extract, warehouse
from analytics.sql import PG

log = structlog.get_logger("analytics.export")

EXPORT_LOCK = 7263503  # session advisory lock: one exporter per database
READERS = min(8, os.cpu_count() or 2)  # parallel log readers for large exports


async def export_once(dsn: str, out_dir: Path, *, readers: int = READERS) -> dict:
    """Export what is new since the last run; skip when another process is exporting."""
    out_dir = Path(out_dir)
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", EXPORT_LOCK):
            log.info(
                "export_skipped", reason="another exporter holds the lock", out_dir=str(out_dir)
            )
            return _figures(skipped=True)
        work = asyncio.ensure_future(asyncio.to_thread(_export, dsn, out_dir, readers))
        try:
            figures = await asyncio.shield(work)
        except asyncio.CancelledError:
            # the thread cannot be stopped: keep the lock until it is done writing
            await asyncio.wait([work])
            raise
    finally:
        await conn.close()  # ending the session releases the lock
    log.info("export_done", **figures)
    return figures


def _figures(**values) -> dict:
    base = {
        "skipped": False,
        "unchanged": False,
        "run": None,
        "from_position": None,
        "position": None,
        "new_events": 0,
        "files": 0,
        "seconds": 0.0,
    }
    return {**base, **values}


def _export(dsn: str, out_dir: Path, readers: int) -> dict:
    started, clock = datetime.now(UTC), time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    history = warehouse.runs(out_dir)
    after = history[-1].to_position if history else 0
    run = history[-1].run + 1 if history else 1
    _remove_leftovers(out_dir, after, run - 1)

    snapshot = extract.connect(dsn)
    try:
        extract.execute(snapshot, PG["begin_snapshot"])
        head = extract.fetch_rows(snapshot, PG["log_head"])[0][0]
        checkpoints = dict(extract.fetch_rows(snapshot, PG["checkpoints"]))
        if head < after:
            raise RuntimeError(
                f"{out_dir} holds positions up to {after} but the log ends at "
                f"{head}: it was exported from another database"
            )
        if history and head == after and checkpoints == history[-1].checkpoints:
            return _figures(unchanged=True, run=run - 1, from_position=after, position=head)
        models_tmp = out_dir / "read_models" / f".run-{run:06d}.tmp"
        models_tmp.mkdir(parents=True)
        queries = {name: PG[f"snapshot_{name}"] for name in extract.READ_MODELS}
        with ThreadPoolExecutor(1, thread_name_prefix="export-models") as pool:
            models = pool.submit(extract.write_tables, snapshot, queries, models_tmp)
            parts = extract.write_events(dsn, after, head, out_dir / "events", readers)
            for part in parts:
                os.rename(part.tmp, part.final)
            models.result()
        extract.execute(snapshot, "COMMIT")
    finally:
        snapshot.close()
    os.rename(models_tmp, out_dir / "read_models" / f"run-{run:06d}")
    for folder in {part.final.parent for part in parts} | {out_dir / "read_models"}:
        extract.fsync(folder)

    new_events = sum(part.rows for part in parts)
    history.append(
        warehouse.Run(run, started, datetime.now(UTC), after, head, new_events, checkpoints)
    )
    db_tmp = out_dir / f".{warehouse.DATABASE}.tmp"
    has_events = any((out_dir / "events").glob("day=*/part-*.parquet"))
    warehouse.build(db_tmp, out_dir, history, has_events)
    os.replace(db_tmp, out_dir / warehouse.DATABASE)  # the commit
    extract.fsync(out_dir)
    _remove_old_snapshots(out_dir, run)
    seconds = time.perf_counter() - clock
    return _figures(
        run=run,
        from_position=after,
        position=head,
        new_events=new_events,
        files=len(parts) + len(extract.READ_MODELS) + 1,
        seconds=round(seconds, 3),
    )


def _remove_leftovers(out_dir: Path, position: int, run: int) -> None:
    """Delete what a run that never committed left behind."""
    for path in out_dir.glob(f".{warehouse.DATABASE}.tmp*"):
        path.unlink()
    for path in out_dir.glob("events/day=*/.part-*.tmp"):
        path.unlink()
    for path in out_dir.glob("events/day=*/part-*.parquet"):
        if int(path.stem.removeprefix("part-")) > position:
            path.unlink()
    for path in out_dir.glob("read_models/.run-*.tmp"):
        shutil.rmtree(path)
    for path in out_dir.glob("read_models/run-*"):
        if int(path.name.removeprefix("run-")) > run:
            shutil.rmtree(path)


def _remove_old_snapshots(out_dir: Path, run: int) -> None:
    """Keep this run's snapshots and the previous ones (a reader may still have them open)."""
    for path in out_dir.glob("read_models/run-*"):
        if int(path.name.removeprefix("run-")) < run - 1:
            shutil.rmtree(path)


async def run_periodically(dsn: str, settings, stop: asyncio.Event) -> None:
    """Export every `settings.export_interval` seconds until `stop` is set; never raises."""
    if settings.export_interval <= 0:
        return
    while True:
        try:
            await asyncio.wait_for(stop.wait(), settings.export_interval)
            return
        except TimeoutError:
            pass
        try:
            await export_once(dsn, settings.export_dir)
        except Exception as exc:  # a failed export must never stop the service
            log.error("export_failed", error=type(exc).__name__, detail=str(exc)[:500])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="export folder (default: KAPSO_SINK_EXPORT_DIR)"
    )
    parser.add_argument(
        "--readers", type=int, default=READERS, help="parallel connections reading the log"
    )


async def run(settings, args: argparse.Namespace) -> int:
    """The `export` subcommand: one export now; 0 also when skipped because one is running."""
    from service import cli, db

    out_dir = args.out or settings.export_dir
    with cli.database(settings) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await db.migrate(conn)
        finally:
            await conn.close()
        figures = await export_once(dsn, out_dir, readers=max(1, args.readers))
    if figures["skipped"]:
        print("export skipped: another process is exporting this database right now")
    elif figures["unchanged"]:
        print(f"export unchanged: {out_dir} is already at position {figures['position']}")
    else:
        print(
            f"exported {figures['new_events']} new events (positions "
            f"{figures['from_position']}..{figures['position']}) to {out_dir} "
            f"in {figures['seconds']} s, run {figures['run']}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from service import logs
    from service.settings import ConfigError, load

    parser = argparse.ArgumentParser(
        prog="python -m analytics.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = load()
    except ConfigError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
