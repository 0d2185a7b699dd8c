"""Scenario `export`: 1,000,000 log events plus read models to Parquet and DuckDB.

The events are generated in the database with set-based SQL (bench.synthetic) and projected
into the read models. A child process then exports, each time with its wall time, events/s and
peak RSS: the first quarter of the log into a fresh folder, the whole log into another fresh
folder (memory must not grow with the log), and the remaining three quarters incrementally.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg

from bench import common, synthetic

TARGET = 200_000  # events/s
CHUNK = 100_000


async def _append(dsn: str, start: int, end: int) -> None:
    """Synthetic events numbered [start, end), then the projector drained over them."""
    from service import db
    from service.projections import runner

    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        for lo in range(start, end, CHUNK):
            await conn.execute(synthetic.GENERATE, lo, min(lo + CHUNK, end))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    pool = await db.create_pool(dsn, size=2)
    try:
        await runner.catch_up(pool)
    finally:
        await pool.close()


def _export(dsn: str, out: Path) -> dict:
    """One export in a fresh child process; its figures and its peak RSS as it reports them."""
    argv = [sys.executable, "-m", "bench.export", "child", dsn, str(out)]
    done = subprocess.run(argv, cwd=common.ROOT, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"export child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    figures["events_per_second"] = round(figures["new_events"] / figures["seconds"])
    return figures


def _exported_rows(out: Path) -> int:
    from analytics import warehouse

    con = warehouse.connect(out)
    try:
        return con.execute("SELECT count(*) FROM raw_events").fetchall()[0][0]
    finally:
        con.close()


def run(args) -> dict:
    events = getattr(args, "events", None) or 1_000_000
    quarter = events // 4
    work = Path(tempfile.mkdtemp(prefix="kapso-bench-export-"))
    try:
        with common.database_server() as server, common.fresh_database(server[0]) as dsn:
            print(f"scenario export ({events} synthetic log events, {server[1]})")
            asyncio.run(_append(dsn, 0, quarter))
            small = _export(dsn, work / "quarter")
            asyncio.run(_append(dsn, quarter, events))
            full = _export(dsn, work / "full")
            incremental = _export(dsn, work / "quarter")
            log_rows = common.sql(dsn, "SELECT count(*) AS n FROM events")[0]["n"]
            checks = {
                "full_rows": _exported_rows(work / "full"),
                "incremental_rows": _exported_rows(work / "quarter"),
                "log_rows": log_rows,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ok = checks["full_rows"] == checks["incremental_rows"] == checks["log_rows"]
    for label, f in (("first quarter", small), ("whole log", full), ("incremental", incremental)):
        print(
            f"  {label:>13}: {f['new_events']:>9} events in {f['seconds']:6.2f} s = "
            f"{f['events_per_second']:>7} events/s, peak RSS {f['peak_rss_mb']} MB"
        )
    print(
        f"  target >= {TARGET} events/s: "
        f"{'met' if full['events_per_second'] >= TARGET else 'NOT met'}; peak RSS at "
        f"{small['new_events']} vs {full['new_events']} events: "
        f"{small['peak_rss_mb']} vs {full['peak_rss_mb']} MB"
    )
    print(
        f"  check: exported rows {checks['full_rows']} (full), {checks['incremental_rows']} "
        f"(incremental) vs {checks['log_rows']} in the log: {'ok' if ok else 'MISMATCH'}"
    )
    return {
        "events": events,
        "quarter": small,
        "full": full,
        "incremental": incremental,
        "target": TARGET,
        "target_met": full["events_per_second"] >= TARGET,
        **checks,
        "ok": ok,
    }


def _child(dsn: str, out: str) -> int:
    from analytics import export

    figures = asyncio.run(export.export_once(dsn, Path(out)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    figures["peak_rss_mb"] = round(peak / 1024, 1)
    print("BENCH_RESULT " + json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        sys.exit(_child(sys.argv[2], sys.argv[3]))
    print(
        "usage: python -m bench.export child DSN OUT (the scenario runs from python -m bench)",
        file=sys.stderr,
    )
    sys.exit(2)
