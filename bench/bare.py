"""The baseline: an aiohttp app on uvloop that reads the body and answers 200, nothing else.

python -m bench.bare --port P
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text='{"ok":true}')


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)  # GET /readyz works too
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        loop=uvloop.new_event_loop(),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
