"""`python -m analytics.demo`: a simulated day through a real sink, exported and charted.

Starts kapso-sink as its own process on a fresh `kapso_sink_demo` database (on DATABASE_URL's
server, or the embedded one), sends a day of simulated Kapso webhooks to it, projects and
exports them, runs the notebooks into HTML next to them and saves the delivery-rates chart to
notebooks/img/delivery_rates.png.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from analytics import export, notebooks, simulator, warehouse

DATABASE = "kapso_sink_demo"
SECRET = "whsec_demo_not_for_production"
IMAGE = notebooks.DIR / "img" / "delivery_rates.png"


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _fresh_database(admin_dsn: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    return _with_database(admin_dsn, DATABASE)


def _empty_out(out: Path) -> None:
    """The demo starts a new log, so its export folder starts empty too."""
    if out.exists():
        if any(out.iterdir()) and not (out / warehouse.DATABASE).exists():
            raise SystemExit(f"demo: {out} is not an export folder; choose another --out")
        shutil.rmtree(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sink(dsn: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    """`python -m service serve` on a free port, once /readyz answers 200."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAPSO_SINK_HOST": "127.0.0.1",
        "KAPSO_SINK_PORT": str(port),
        "KAPSO_WEBHOOK_SECRETS": SECRET,
        "KAPSO_SINK_EXPORT_INTERVAL": "0",
        "KAPSO_SINK_DATA_DIR": str(data_dir),
        "KAPSO_SINK_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the sink exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:  # refused while starting, or 503 until migrated
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            raise SystemExit("demo: the sink did not become ready in 60 s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _send_and_project(url: str, dsn: str, args: argparse.Namespace) -> dict:
    from service import db
    from service.projections import runner

    deliveries = simulator.generate(args.conversations, args.seed, SECRET)
    print(
        f"demo: sending {len(deliveries)} deliveries ({args.conversations} conversations "
        f"over a simulated day) to {url}"
    )
    counts = await simulator.send(
        url + "/webhooks/kapso", deliveries, progress=not args.no_progress
    )
    pool = await db.create_pool(dsn, size=2)
    try:
        await runner.catch_up(pool)
    finally:
        await pool.close()
    return counts


def run(settings, args: argparse.Namespace) -> int:
    from service import cli

    out = Path(args.out or settings.export_dir / "demo").resolve()
    _empty_out(out)
    with cli.database(settings) as admin_dsn:
        dsn = asyncio.run(_fresh_database(admin_dsn))
        print(f"demo: database {DATABASE}, starting the sink")
        proc, url = _start_sink(dsn, settings.data_dir / "demo")
        try:
            counts = asyncio.run(_send_and_project(url, dsn, args))
        finally:
            _stop(proc)
        print(f"demo: responses {counts}")
        figures = asyncio.run(export.export_once(dsn, out))
    print(f"demo: exported {figures['new_events']} events to {out}")
    for name in notebooks.NAMES:
        nb = notebooks.execute(name, out, timeout=300)
        page = notebooks.to_html(nb, notebooks.DIR / f"{name}.html")
        print(f"demo: open {page}")
        if name == "delivery_metrics":
            IMAGE.parent.mkdir(exist_ok=True)
            IMAGE.write_bytes(notebooks.figure(nb, "delivery_rates"))
            print(f"demo: chart saved to {IMAGE}")
    return 0 if set(counts) == {200} else 1


def main(argv: list[str] | None = None) -> int:
    from service import logs
    from service.settings import ConfigError, load

    parser = argparse.ArgumentParser(
        prog="python -m analytics.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--conversations", type=int, default=600, help="conversations in the simulated day"
    )
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--out", type=Path, help="export folder (default: EXPORT_DIR/demo)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        settings = load()
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    logs.configure("warning", settings.log_format)
    return run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
