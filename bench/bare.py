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


def serve(app: web.Application, host: str, port: int) -> None:
    """Run a bench server the way every one here runs: uvloop, no access log, quiet."""
    web.run_app(
        app, host=host, port=port, loop=uvloop.new_event_loop(), access_log=None, print=None
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)  # GET /readyz works too
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
