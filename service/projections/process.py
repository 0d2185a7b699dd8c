"""The projector as a child process of `kapso-sink serve`, so that folding never stalls the
event loop answering webhooks and can use the second core. It is supervised: if it exits, it
is started again a second later; on shutdown it gets SIGTERM (then SIGKILL after a grace)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import structlog

log = structlog.get_logger("service.projections.process")


class ProjectorProcess:
    def __init__(self, dsn: str):
        self._dsn = dsn
        self._proc: asyncio.subprocess.Process | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="projector-process")

    async def _supervise(self) -> None:
        env = {**os.environ, "DATABASE_URL": self._dsn}
        while not self._stop.is_set():
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                "project",
                "--parent-pid",
                str(os.getpid()),
                env=env,
            )
            log.info("projector_process_started", pid=self._proc.pid)
            code = await self._proc.wait()
            if not self._stop.is_set():
                log.warning("projector_process_exited", code=code)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def close(self, grace: float = 10.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            await self._task
