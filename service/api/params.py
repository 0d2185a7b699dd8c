"""Query-parameter parsing: every bad value is a 400 naming the parameter."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson
from aiohttp import web

from service.errors import ApiError


def _bad(name: str, why: str) -> ApiError:
    return ApiError(400, "bad_parameter", f"{name}: {why}")


def text(request: web.Request, name: str, *, choices=None, max_len: int = 512) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if value == "" and choices is None:
        return None
    if len(value) > max_len or "\x00" in value:
        raise _bad(name, "too long or not text")
    if choices is not None and value not in choices:
        raise _bad(name, f"must be one of {', '.join(choices)}")
    return value


def integer(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, "must be an integer") from None
    if not low <= value <= high:
        raise _bad(name, f"must be between {low} and {high}")
    return value


def timestamp(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except ValueError:
        raise _bad(name, "must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    except OverflowError:
        raise _bad(name, "out of range") from None


def encode_cursor(*parts) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts, default=str)).decode().rstrip("=")


def cursor(request: web.Request, name: str = "cursor") -> list | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise _bad(name, "not a cursor this API returned") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, str) and ("\x00" in v or len(v) > 512) for v in value)
    ):
        raise _bad(name, "not a cursor this API returned")
    return value


def path_id(request: web.Request, kind: str) -> str:
    """The {id} of the path; one no row can have (NUL, absurd length) is a 404 at once."""
    value = request.match_info["id"]
    if "\x00" in value or len(value) > 512:
        raise ApiError(404, "not_found", f"no {kind} with that id")
    return value
