"""The issue's calibration prototype: check the HMAC, append with one unnest INSERT per batch.

python -m bench.prototype --port P --dsn DSN --secret S

No parsing, no event rows, no spool, no metrics, no projector: the least a durable sink can
do. Measured beside the bare handler, it shows what ratio this machine allows that minimum,
so kapso-sink's ratio can be read against it on a slower or busier machine than the one the
issue's figures came from.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac

import asyncpg
from aiohttp import web

from bench.bare import serve

TABLE = """CREATE TABLE IF NOT EXISTS prototype_log (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idem_hash bytea NOT NULL UNIQUE,
    payload jsonb NOT NULL)"""
INSERT = """INSERT INTO prototype_log (idem_hash, payload)
SELECT * FROM unnest($1::bytea[], $2::text[]::jsonb[]) ON CONFLICT DO NOTHING"""
ANSWER = b'{"stored":1,"duplicates":0}'


class Appender:
    """Queue (hash, body, future); one task commits whatever queued while the last ran."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool, self.queue, self.wake = pool, [], asyncio.Event()

    async def append(self, body: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((hashlib.sha256(body).digest(), body.decode(), future))
        self.wake.set()
        await future

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            if not batch:
                continue
            try:
                await self.pool.execute(INSERT, [b[0] for b in batch], [b[1] for b in batch])
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                for _, _, future in batch:
                    future.set_exception(exc)
                continue
            for _, _, future in batch:
                future.set_result(None)


def make_app(dsn: str, secret: bytes) -> web.Application:
    app = web.Application(client_max_size=10 * 1024 * 1024)

    async def lifecycle(app):
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2)
        await pool.execute(TABLE)
        appender = Appender(pool)
        task = asyncio.create_task(appender.run())
        app["appender"] = appender
        yield
        task.cancel()
        await pool.close()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get("X-Webhook-Signature", "").removeprefix("sha256=")
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.encode("ascii", "replace")):
            return web.json_response({"error": "invalid_signature"}, status=401)
        await request.app["appender"].append(body)
        return web.Response(body=ANSWER, content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/webhooks/kapso", receive)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prototype")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    serve(make_app(args.dsn, args.secret.encode()), args.host, args.port)


if __name__ == "__main__":
    main()
