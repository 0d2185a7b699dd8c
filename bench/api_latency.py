"""Scenario `api`: p50/p99 of GET /v1/conversations/{id} and /v1/messages/{id} while wrk drives
ingest at full load against the same kapso-sink (projector running, as deployed)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from analytics import simulator
from bench import common, ingest
from bench.bodies import write_streams

GET_SCRIPT = Path(__file__).resolve().parent / "get.lua"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def start_sink(dsn: str, tmp: Path, **env) -> tuple[common.Child, str]:
    port = common.free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAPSO_WEBHOOK_SECRETS": ingest.SECRET,
        "KAPSO_SINK_HOST": "127.0.0.1",
        "KAPSO_SINK_PORT": str(port),
        "KAPSO_SINK_LOG_LEVEL": "warning",
        "KAPSO_SINK_DATA_DIR": str(tmp / "sink-data"),
        "KAPSO_SINK_EXPORT_INTERVAL": "0",
        **env,
    }
    child = common.Child(
        "kapso-sink", [sys.executable, "-m", "service", "serve"], tmp / "kapso-sink.log", full_env
    )
    url = f"http://127.0.0.1:{port}"
    common.wait_ready(child, url + "/readyz")
    return child, url


def wait_projected(url: str, timeout: float = 120.0) -> None:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/v1/projections", timeout=5) as resp:
            doc = json.load(resp)
        if all(p["lag_events"] == 0 for p in doc["projections"]):
            return
        time.sleep(0.2)
    raise TimeoutError("projector did not catch up")


def wrk_percentiles(output: str) -> dict:
    """p50/p99 (ms) and req/s from wrk's --latency text."""
    found = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        found[f"p{pct}_ms"] = round(float(m[1]) * _UNITS[m[2]], 2) if m else None
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    found["rps"] = float(rate[1]) if rate else None
    return found


def run(args) -> dict:
    common.require_wrk()
    duration = args.duration
    with tempfile.TemporaryDirectory(prefix="kapso-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        per_thread = math.ceil(ingest.MAX_RATE * duration / ingest.THREADS)
        write_streams(tmp, ingest.SECRET.encode(), per_thread, ingest.THREADS)
        with (
            common.database_server() as (admin_dsn, where, _),
            common.fresh_database(admin_dsn) as dsn,
        ):
            sink, url = start_sink(dsn, tmp)
            try:
                seed = simulator.generate(150, 1, ingest.SECRET)
                asyncio.run(simulator.send(url + "/webhooks/kapso", seed, progress=False))
                wait_projected(url)
                rows = common.sql(
                    dsn,
                    "SELECT 'c' AS k, id FROM conversations UNION ALL SELECT 'm', id FROM messages",
                )
                paths = {
                    "conversation": [f"/v1/conversations/{r['id']}" for r in rows if r["k"] == "c"],
                    "message": [f"/v1/messages/{r['id']}" for r in rows if r["k"] == "m"],
                }
                queries = {}
                for name, items in paths.items():
                    (tmp / f"{name}.paths").write_text("\n".join(items) + "\n")
                    queries[name] = subprocess.Popen(
                        [
                            common.require_wrk(),
                            "-t1",
                            "-c4",
                            f"-d{duration}s",
                            "--latency",
                            "-s",
                            str(GET_SCRIPT),
                            url,
                        ],
                        env={**os.environ, "BENCH_PATHS": str(tmp / f"{name}.paths")},
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                load = common.run_wrk(
                    url + ingest.PATH,
                    ingest.SCRIPT,
                    threads=ingest.THREADS,
                    connections=args.connections,
                    duration=duration,
                    env={"BENCH_REQUESTS_DIR": str(tmp)},
                    watch={"server": sink.pid},
                )
                results = {
                    name: wrk_percentiles(p.communicate(timeout=duration + 60)[0])
                    for name, p in queries.items()
                }
            finally:
                exit_code = sink.stop(timeout=30)
    ingest_rps = ingest.wrk_figures(load)["rps"]
    figures = {
        "scenario": "api",
        "duration_s": duration,
        "database": where,
        "ingest": {"rps": ingest_rps, "p99_ms": load["latency_us"]["p99"] / 1000},
        "get_conversation": results["conversation"],
        "get_message": results["message"],
        "service_exit_code": exit_code,
        "ok": exit_code == 0,
    }
    print(
        f"\nscenario api (ingest with {args.connections} connections, {duration} s, plus "
        "4 connections per GET endpoint)"
    )
    print(
        f"  ingest at full load: {ingest_rps:.0f} req/s, p99 {figures['ingest']['p99_ms']:.1f} ms"
    )
    for name in ("get_conversation", "get_message"):
        r = figures[name]
        print(
            f"  GET /v1/{name.split('_')[1]}s/{{id}}: {r['rps']} req/s, p50 {r['p50_ms']} ms, "
            f"p99 {r['p99_ms']} ms"
        )
    return figures
