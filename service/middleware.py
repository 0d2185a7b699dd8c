"""Request id, one log line per request, and JSON errors (never a traceback)."""

from __future__ import annotations

import itertools
import logging
import os
import time

import structlog
from aiohttp import web

from service import keys, logs
from service.errors import ApiError, error_response
from service.log.records import clean_text

log = structlog.get_logger("service.http")

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


_ID_PREFIX = os.urandom(6).hex()  # per process; a counter makes each id unique within it
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    """A 24-hex-digit id, unique per process and (by its random prefix) across processes;
    cheaper than reading the system's randomness on every request."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) % 16**12:012x}"


@web.middleware
async def request_context(request: web.Request, handler):
    request_id = clean_text(request.headers.get("X-Request-Id"), 100) or _new_request_id()
    request[keys.request_id] = request_id
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason, headers=_kept_headers(exc))
    except Exception:  # noqa: BLE001 - the client sees a JSON 500, the log gets the trace
        log.exception("unhandled_error", path=request.path, request_id=request_id)
        response = error_response(500, "internal_error", f"unexpected error (request {request_id})")
    response.headers["X-Request-Id"] = request_id
    if logs.enabled(logging.INFO):
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            stored=request.get(keys.stored),
            duplicates=request.get(keys.duplicates),
            request_id=request_id,
        )
    observe = request.app.get(_OBSERVER)
    if observe is not None:
        observe(request, response.status, time.perf_counter() - started)
    return response


def _kept_headers(exc: web.HTTPException) -> dict:
    return {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}


_OBSERVER = web.AppKey("request_observer", object)


def set_observer(app: web.Application, observer) -> None:
    """Register a callable (request, status, seconds) run after each request (metrics)."""
    app[_OBSERVER] = observer
