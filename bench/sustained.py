"""Scenario `sustained`: ingest at a fixed 80% of the measured ceiling for --sustain seconds
(default 300): p99 latency and the service's RSS at start and end (must not grow); then the
database is stopped and wrk runs flat out, measuring how fast the outage spool takes
deliveries, and the spool is checked to drain completely once PostgreSQL is back."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from bench import api_latency, common, ingest
from bench.bodies import write_streams

CONNECTIONS = 128  # each pauses between requests, so the pause, not the latency, sets the rate
CALIBRATION_SECONDS = 15
FALLBACK_CEILING = 1000.0  # req/s, when the ingest scenario has not been run yet


def _ceiling() -> float:
    path = common.RESULTS / "ingest.json"
    try:
        return float(json.loads(path.read_text())["kapso_sink"]["rps"])
    except (OSError, KeyError, ValueError):
        return FALLBACK_CEILING


WARMUP_SHARE = 0.2  # RSS growth is judged from the end of this share of the run
RSS_SLACK_MIB = 5.0  # allowed difference between the warm and the final RSS
SAMPLE_EVERY = 10.0  # seconds between RSS samples
CATCH_UP_LIMIT = 30.0  # the projector must have folded everything this soon after the load


def _rss_mib(pid: int) -> float:
    return round(sum(_rss_by_process(pid).values()), 1)


def _rss_by_process(pid: int) -> dict[str, float]:
    """MiB per process of the service tree: `service`, and each child by its subcommand."""
    proc = psutil.Process(pid)
    out = {"service": proc.memory_info().rss / 2**20}
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            args = child.cmdline()
            name = args[3] if len(args) > 3 and args[1:3] == ["-m", "service"] else child.name()
            out[name] = out.get(name, 0.0) + child.memory_info().rss / 2**20
    return out


class RssSampler:
    """RSS of the service tree every SAMPLE_EVERY seconds, in a thread, while wrk runs."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.processes: list[dict[str, float]] = []  # MiB per process, with each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            each = _rss_by_process(self.pid)
            self.samples.append(
                (round(time.monotonic() - self._started), round(sum(each.values()), 1))
            )
            self.processes.append({name: round(mib, 1) for name, mib in each.items()})

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample()

    def warm(self, seconds: float) -> int:
        """Index of the first sample taken after the warm-up share of the run."""
        return next(
            (i for i, (t, _) in enumerate(self.samples) if t >= seconds * WARMUP_SHARE),
            len(self.samples) - 1,
        )


def _paced(url: str, requests: Path, delay_ms: int, seconds: int, pid: int) -> dict:
    return common.run_wrk(
        url + ingest.PATH,
        ingest.SCRIPT,
        threads=ingest.THREADS,
        connections=CONNECTIONS,
        duration=seconds,
        env={"BENCH_REQUESTS_DIR": str(requests), "BENCH_DELAY_MS": str(delay_ms)},
        watch={"server": pid},
    )


def _calibrate(url: str, requests: Path, rate: float, pid: int) -> tuple[dict, int]:
    """The pause per connection that gives `rate`: wrk waits for each answer before pausing,
    so a connection's cycle is pause + latency; measure the latency at a first guess."""
    guess = round(CONNECTIONS * 1000 / rate)
    trial = _paced(url, requests, guess, CALIBRATION_SECONDS, pid)
    achieved = ingest.wrk_figures(trial)["rps"]
    cycle_ms = CONNECTIONS * 1000 / max(achieved, 1.0)
    latency_ms = max(0.0, cycle_ms - guess)
    delay_ms = max(1, round(CONNECTIONS * 1000 / rate - latency_ms))
    print(
        f"  calibration: pause {guess} ms gave {achieved:.0f} req/s "
        f"(latency ~{latency_ms:.0f} ms); pausing {delay_ms} ms",
        flush=True,
    )
    return trial, delay_ms


def _projection_lag(url: str) -> int:
    """Log events the projector has yet to fold, the most behind of the read models."""
    with urllib.request.urlopen(url + "/v1/projections", timeout=5) as resp:
        return max(p["lag_events"] for p in json.load(resp)["projections"])


def _catch_up_seconds(url: str, limit: float = CATCH_UP_LIMIT) -> float | None:
    """Seconds until the projector has folded everything, or None if not within `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if _projection_lag(url) == 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.05)
    return None


def _readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def run(args) -> dict:
    from service.embedded import EmbeddedPostgres

    common.require_wrk()
    seconds = args.sustain
    ceiling = _ceiling()
    rate = 0.8 * ceiling
    pg = EmbeddedPostgres(common.ROOT / ".kapso-sink" / "pg-bench-sustained")
    admin = pg.start()
    with tempfile.TemporaryDirectory(prefix="kapso-bench-sustained-") as tmp_name:
        tmp = Path(tmp_name)
        spool_seconds = 10
        per_thread = math.ceil(rate * seconds * 1.1 / ingest.THREADS)
        print(f"generating {per_thread * ingest.THREADS} signed deliveries ...", flush=True)
        write_streams(tmp, ingest.SECRET.encode(), per_thread, ingest.THREADS)
        # other deliveries for the calibration and the outage, so none of them is a duplicate
        calibration_dir = tmp / "calibration"
        calibration_dir.mkdir()
        write_streams(
            calibration_dir,
            ingest.SECRET.encode(),
            math.ceil(rate * CALIBRATION_SECONDS * 1.2 / ingest.THREADS),
            ingest.THREADS,
            seed=9,
        )
        outage_dir = tmp / "outage"
        outage_dir.mkdir()
        write_streams(
            outage_dir,
            ingest.SECRET.encode(),
            math.ceil(ingest.MAX_RATE * spool_seconds / ingest.THREADS),
            ingest.THREADS,
            seed=8,
        )
        with common.fresh_database(admin) as dsn:
            sink, url = api_latency.start_sink(dsn, tmp)
            try:
                time.sleep(2)
                rss_start = _rss_mib(sink.pid)
                calibration, delay_ms = _calibrate(url, calibration_dir, rate, sink.pid)
                print(
                    f"fixed rate ~{rate:.0f} req/s (80% of {ceiling:.0f}) for {seconds} s ...",
                    flush=True,
                )
                with RssSampler(sink.pid) as sampler:
                    steady = _paced(url, tmp, delay_ms, seconds, sink.pid)
                rss_end = sampler.samples[-1][1]
                lag = _projection_lag(url)
                caught_up = _catch_up_seconds(url)
                warm_at = sampler.warm(seconds)
                rss_warm = sampler.samples[warm_at][1]
                # the outage: PostgreSQL stops, the sink keeps answering from its spool
                pg.stop(mode="immediate")
                outage = common.run_wrk(
                    url + ingest.PATH,
                    ingest.SCRIPT,
                    threads=ingest.THREADS,
                    connections=args.connections,
                    duration=spool_seconds,
                    env={"BENCH_REQUESTS_DIR": str(outage_dir)},
                    watch={"server": sink.pid},
                )
                _, during = _readyz(url)
                spooled = during["checks"].get("spool_records", 0)
                pg.start()
                started = time.monotonic()
                while True:
                    status, doc = _readyz(url)
                    if status == 200 and doc["checks"].get("spool_records") == 0:
                        break
                    if time.monotonic() - started > 300:
                        raise TimeoutError("spool did not drain")
                    time.sleep(0.2)
                drain_seconds = round(time.monotonic() - started, 1)
                rows = common.sql(
                    dsn, "SELECT count(*) AS n, count(DISTINCT idem_hash) AS d FROM events"
                )[0]
            finally:
                exit_code = sink.stop(timeout=30)
    pg.stop()
    a, b = ingest.wrk_figures(steady), ingest.wrk_figures(outage)
    acked = sum(t["acked"] for run in (calibration, steady, outage) for t in run["threads"])
    figures = {
        "scenario": "sustained",
        "seconds": seconds,
        "target_rate": round(rate),
        "pause_ms": delay_ms,
        "projection_lag_at_end": lag,
        "projection_caught_up_s": caught_up,
        "steady": a,
        "rss_mib": {
            "idle": rss_start,
            "warm": rss_warm,
            "end": rss_end,
            "growth": round(rss_end - rss_warm, 1),
            "samples": sampler.samples,
            "by_process": sampler.processes,
        },
        "outage": {**b, "spooled_records": spooled, "drain_seconds": drain_seconds},
        "log": {"acknowledged_events": acked, "rows": rows["n"], "distinct": rows["d"]},
        "service_exit_code": exit_code,
    }
    log_ok = rows["n"] >= acked and rows["n"] == rows["d"] and b["status_other"] == 0
    rss_ok = rss_end - rss_warm <= RSS_SLACK_MIB
    figures["ok"] = exit_code == 0 and log_ok and rss_ok and caught_up is not None
    print(f"\nscenario sustained ({seconds} s at ~{rate:.0f} req/s, {CONNECTIONS} connections)")
    print(
        f"  achieved {a['rps']:.0f} req/s, p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, "
        f"non-200: {a['status_other']}"
    )
    print(
        f"  RSS (service and its children): {rss_start} MiB idle, {rss_warm} MiB after "
        f"{WARMUP_SHARE:.0%} of the run, {rss_end} MiB at end "
        f"(growth {rss_end - rss_warm:+.1f} MiB, allowed {RSS_SLACK_MIB:.0f}): "
        f"{'PASS' if rss_ok else 'FAIL'}"
    )
    print(
        "  RSS every {:.0f} s: {}".format(
            SAMPLE_EVERY, " ".join(f"{m:.0f}" for _, m in sampler.samples)
        )
    )
    for name, end in sampler.processes[-1].items():
        warm = sampler.processes[warm_at].get(name, 0.0)
        print(f"    {name}: {warm:.1f} -> {end:.1f} MiB ({end - warm:+.1f})")
    after = f"caught up {caught_up} s later" if caught_up is not None else "NOT caught up"
    print(f"  projector lag when the load stopped: {lag} events, {after}")
    print(
        f"  database down: spool took {b['rps']:.0f} req/s (p99 {b['p99_ms']:.1f} ms, "
        f"non-200: {b['status_other']}), {spooled} records, drained in {drain_seconds} s"
    )
    print(
        f"  log: {acked} acknowledged events, {rows['n']} rows, "
        f"{'no duplicates' if rows['n'] == rows['d'] else 'DUPLICATES'}: "
        f"{'PASS' if log_ok else 'FAIL'}"
    )
    return figures
