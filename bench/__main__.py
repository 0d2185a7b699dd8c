"""`python -m bench [--scenario NAME ...] [--duration S] [--connections N] [--repeat N]`.

A scenario is a module function run(args) -> dict of figures that prints its own table;
register it in SCENARIOS. Each result is also written to bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback

from bench import api_latency, common, ingest, rebuild, sustained
from bench import export as export_bench

SCENARIOS = {
    "ingest": ingest.run,
    "api": api_latency.run,
    "rebuild": rebuild.run,
    "export": export_bench.run,
    "sustained": sustained.run,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run benchmark scenarios.")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run (repeatable; default: all)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run (wrk -d)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="ingest: measure (a), (c) and (b) this many times in turn and report the median "
        "round by ratio b/a (the upper one for an even count); the ratios swing between runs "
        "on a busy machine",
    )
    parser.add_argument(
        "--sustain",
        type=int,
        default=300,
        help="seconds of fixed-rate load in the sustained scenario",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="synthetic log events for rebuild/export (default 1,000,000)",
    )
    return parser.parse_args(argv)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through every finally: children get stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    failed = []
    for name in args.scenario or list(SCENARIOS):
        try:
            figures = SCENARIOS[name](args)
        except KeyboardInterrupt:  # the scenario's finally blocks have stopped its processes
            print(f"bench: {name} interrupted", file=sys.stderr)
            return 130
        except Exception:  # noqa: BLE001 - one broken scenario must not hide the others
            traceback.print_exc()
            print(f"bench: scenario {name} crashed\n", file=sys.stderr)
            failed.append(name)
            continue
        path = common.write_result(name, figures)
        print(f"results written to {path.relative_to(common.ROOT)}\n")
        if not figures.get("ok", True):
            failed.append(name)
    if failed:
        print(f"bench: checks failed in {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
