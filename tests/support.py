"""Test helpers: databases cloned from a migrated template, a real sink over HTTP, signing."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestServer

from service import db
from service.app import create_app
from service.settings import Settings

SECRET = "wh_sec_3kfj9dmfkg8s2"
OLD_SECRET = "wh_sec_previous_0001"


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointed at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dumps(obj) -> bytes:
    return orjson.dumps(obj)


def delivery(
    body,
    *,
    event: str | None = "whatsapp.message.received",
    secret: str = SECRET,
    key: str | None = None,
    **headers,
) -> tuple[bytes, dict]:
    """A signed Kapso delivery: (raw body, headers)."""
    raw = body if isinstance(body, bytes) else dumps(body)
    hdrs = {
        "Content-Type": "application/json",
        "X-Webhook-Signature": sign(raw, secret),
        "X-Idempotency-Key": key or str(uuid.uuid4()),
        "X-Webhook-Payload-Version": "v2",
    }
    if event is not None:
        hdrs["X-Webhook-Event"] = event
    hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
    return raw, hdrs


class Databases:
    """Creates per-test databases from a migrated template on one server."""

    def __init__(self, admin_dsn: str):
        self.admin_dsn = admin_dsn
        self.template = f"kapso_tpl_{uuid.uuid4().hex[:8]}"

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.admin_dsn)

    async def create_template(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        tpl = await asyncpg.connect(with_database(self.admin_dsn, self.template))
        try:
            await db.migrate(tpl)
        finally:
            await tpl.close()

    async def create(self) -> str:
        name = f"kapso_t_{uuid.uuid4().hex[:12]}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def drop_template(self) -> None:
        await self.drop(with_database(self.admin_dsn, self.template))


@dataclass
class Sink:
    """A running sink (in this process, over a real socket) and a client for it."""

    url: str
    dsn: str
    http: aiohttp.ClientSession
    server: TestServer
    pool: asyncpg.Pool
    settings: Settings

    async def post(self, raw: bytes, headers: dict, path: str = "/webhooks/kapso"):
        async with self.http.post(self.url + path, data=raw, headers=headers) as resp:
            body = await resp.read()
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            return resp.status, doc, resp.headers

    async def send(self, body, **kwargs):
        raw, headers = delivery(body, **kwargs)
        return await self.post(raw, headers)

    async def get(self, path: str, **kwargs):
        async with self.http.get(self.url + path, **kwargs) as resp:
            return resp.status, orjson.loads(await resp.read()), resp.headers

    async def events(self) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM events ORDER BY position")


def make_settings(tmp_path, **overrides) -> Settings:
    values = {
        "KAPSO_WEBHOOK_SECRETS": f"{SECRET},{OLD_SECRET}",
        "KAPSO_SINK_DATA_DIR": str(tmp_path),
        "KAPSO_SINK_LOG_LEVEL": "warning",
        "KAPSO_SINK_PROJECTOR": False,
        "KAPSO_SINK_EXPORT_INTERVAL": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def start_sink(dsn: str, settings: Settings) -> Sink:
    app = create_app(settings, dsn)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    http = aiohttp.ClientSession()
    pool = await db.create_pool(dsn, size=4)
    return Sink(str(server.make_url("")).rstrip("/"), dsn, http, server, pool, settings)


async def stop_sink(sink: Sink) -> None:
    await sink.http.close()
    await sink.pool.close()
    await sink.server.close()


class ServiceProcess:
    """`python -m service serve` in its own process, as a user starts it."""

    def __init__(self, dsn: str, tmp_path, port: int | None = None, **env):
        import os
        import socket
        import sys

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "KAPSO_SINK_PORT": str(port),
            "KAPSO_WEBHOOK_SECRETS": f"{SECRET},{OLD_SECRET}",
            "KAPSO_SINK_DATA_DIR": str(tmp_path),
            "KAPSO_SINK_LOG_LEVEL": "warning",
            "KAPSO_SINK_EXPORT_DIR": str(tmp_path / "exports"),
            **{k: str(v) for k, v in env.items()},
        }
        self.log_path = tmp_path / f"service-{port}.log"
        self.argv = [sys.executable, "-m", "service", "serve"]
        self.proc = None

    async def start(self, timeout: float = 30.0) -> None:
        import asyncio
        import subprocess

        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log, stderr=self._log)
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"service exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(self.log_path.read_text()[-2000:])
                await asyncio.sleep(0.05)

    async def wait(self, timeout: float = 30.0) -> int:
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while self.proc.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("service did not exit")
            await asyncio.sleep(0.05)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()


async def wait_until(predicate, limit: float = 30.0, every: float = 0.02):
    """Poll an (async or plain) condition until it holds; fail after `limit` seconds."""
    import asyncio
    import inspect

    async with asyncio.timeout(limit):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(every)
