"""Shared helpers: child processes, readiness, RSS sampling, databases, wrk, result files."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:
    # the child gets SIGTERM if the bench dies without cleaning up (even on SIGKILL)
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A process we started: own process group, output to a log file, always reaped."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL the group if needed; return the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def wait_ready(child: Child, url: str, timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name} not ready at {url}:\n{child.tail()}")
        time.sleep(0.05)


class Watch:
    """CPU use of named process trees, and peak RSS of those in `rss_of` (every `interval` s).

    Also measures this process (`bench`) and every other process on the machine (`others`),
    since the load generator, the servers and PostgreSQL share the same cores.
    """

    def __init__(self, pids: dict[str, int | None], interval: float = 0.1, rss_of=("server",)):
        self.procs = {}
        for name, pid in pids.items():
            if pid is not None:  # psutil.Process(None) would be this process
                with contextlib.suppress(psutil.Error):
                    self.procs[name] = psutil.Process(pid)
        self.interval = interval
        self.rss_peak = {name: 0 for name in self.procs if name in rss_of}
        self.final_cpu: dict[str, float] = {}  # CPU seconds of processes reaped before exit
        self.cores: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(proc: psutil.Process) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [proc, *proc.children(recursive=True)]
        return []

    def rss(self, name: str) -> int:
        total = 0
        for p in self._tree(self.procs[name]):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        self.rss_peak[name] = max(self.rss_peak[name], total)
        return total

    def _cpu(self) -> dict[str, float]:
        used = {}
        for name, proc in self.procs.items():
            used[name] = 0.0
            for p in self._tree(proc):
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    used[name] += t.user + t.system
        t = psutil.cpu_times()
        used["bench"] = sum(psutil.Process().cpu_times()[:2])  # this process, no children
        used[" tasks"] = t.user + t.nice + t.system  # all processes; irq time is not theirs
        return used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name in self.rss_peak:
                self.rss(name)

    def __enter__(self) -> Watch:
        self._started, self._cpu0 = time.monotonic(), self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        wall, cpu1 = time.monotonic() - self._started, {**self._cpu(), **self.final_cpu}
        # backends or children that exited during the run are not counted
        used = {n: (cpu1[n] - self._cpu0[n]) / wall for n in cpu1}
        tasks = used.pop(" tasks")
        self.cores = {n: round(v, 2) for n, v in used.items()}
        self.cores["others"] = round(max(0.0, tasks - sum(used.values())), 2)


# --- databases -------------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.contextmanager
def database_server() -> Iterator[tuple[str, str, int | None]]:
    """(admin DSN, description, postmaster pid if known): DATABASE_URL, or an embedded server."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"], "DATABASE_URL", None
        return
    from service.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(ROOT / ".kapso-sink" / "pg-bench")
    dsn = server.start()
    try:
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        yield dsn, f"embedded PostgreSQL in {server.root.relative_to(ROOT)}", pid
    finally:
        server.stop_if_started()  # leave a server alone that was already running


def sql(dsn: str, query: str) -> list:
    """Run one statement on its own connection; return the rows."""
    import asyncpg

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query)
        finally:
            await conn.close()

    return asyncio.run(run())


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """A new, empty database for one run, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    sql(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_dsn, name)
    finally:
        sql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- wrk -------------------------------------------------------------------------------------


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "bench: wrk not found; install it (apt-get install -y wrk) or run make bench"
        )
    return path


def run_wrk(
    url: str,
    script: Path,
    *,
    threads: int,
    connections: int,
    duration: int,
    env: dict,
    watch: dict[str, int | None],
    timeout: str = "10s",
) -> dict:
    """Run wrk; return what its Lua `done()` printed, plus CPU and peak RSS of `watch` + wrk.

    The script writes "BENCH_READY" to stderr once a thread has loaded its requests; the
    watch starts when all have, so file loading is not counted as load time.
    """
    argv = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout}",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )
    killer = threading.Timer(duration + 120, proc.kill)
    killer.start()
    try:
        ready, errors = 0, []
        while ready < threads:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("BENCH_READY"):
                ready += 1
            else:
                errors.append(line)
        with Watch({"wrk": proc.pid, **watch}) as usage:
            out = proc.stdout.read()
            errors.append(proc.stderr.read())
            _, status, rusage = os.wait4(proc.pid, 0)  # reap wrk ourselves to get its CPU time
            proc.returncode = os.waitstatus_to_exitcode(status)
            usage.final_cpu["wrk"] = rusage.ru_utime + rusage.ru_stime
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
            result.update(wrk_output=out, cores=usage.cores, rss_peak=usage.rss_peak)
            return result
    raise RuntimeError(
        f"wrk exited {proc.returncode} without a result:\n{out[-2000:]}{''.join(errors)[-2000:]}"
    )


def write_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return path
