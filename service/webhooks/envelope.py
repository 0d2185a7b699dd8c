"""Shared pieces of every webhook kind: lenient JSON, kept headers, safe value access."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime

import orjson

from service.log.records import DeliveryRecord, clean_text

_KEPT_HEADERS = ("content-type", "user-agent", "content-length")


def delivery_record(
    body: bytes, headers: Mapping[str, str], kind: str, received_at: datetime, **extra
) -> DeliveryRecord:
    """The raw record of one verified delivery, keyed by the SHA-256 of its body."""
    return DeliveryRecord(
        hashlib.sha256(body).digest(), received_at, kind, headers_json(headers), body, **extra
    )


def load_json(body: bytes):
    """Parse JSON leniently; return (document, None) or (None, reason)."""
    if not body:
        return None, "empty body"
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError:
        pass
    try:  # the stdlib accepts a few things orjson does not (lone surrogate escapes)
        return json.loads(body.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, clean_text(f"body is not JSON: {exc}", 300)
    except RecursionError:
        return None, "body is nested too deeply to parse; raw body kept"


def headers_json(headers: Mapping[str, str]) -> str:
    """The delivery's protocol headers (X-*, content type) as a JSON object: names in lower
    case, the values of a repeated header joined with ", ", at most 64 names."""
    every_value = hasattr(headers, "getall")  # a multidict repeats names
    kept: dict[str, list[str]] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-") or lower in _KEPT_HEADERS:
            values = kept.get(lower)
            if values is None:
                if len(kept) < 64:
                    kept[lower] = [value]
            elif every_value:
                values.append(value)
    return orjson.dumps(
        {name: clean_text(", ".join(values), 2000) or "" for name, values in kept.items()}
    ).decode()


def dump_json(value) -> tuple[str | None, str | None]:
    """Serialise a value for a jsonb column; return (text, None) or (None, reason)."""
    try:
        text = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        text = None  # the reason is found below, checked in the usual order
    try:
        # orjson writes NaN and infinities as null: without a null there are none to look for
        if (text is None or b"null" in text) and _has_nonfinite(value):
            return (
                None,
                "item holds a number JSON cannot carry (NaN, Infinity or overflow); raw body kept",
            )
        if text is None:
            text = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError, RecursionError) as exc:
        return None, clean_text(f"item not storable as JSON: {type(exc).__name__} {exc}", 300)
    if b"\\u0000" in text:
        return None, "item holds \\u0000, which jsonb cannot store; raw body kept"
    return text.decode(), None


def _has_nonfinite(value) -> bool:
    """Whether any float in the value is NaN or infinite (orjson would write null)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False


def get(obj, *path):
    """obj[path...] through nested objects, or None when any step is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def first_text(*values) -> str | None:
    """The first value that makes non-empty text."""
    for value in values:
        text = clean_text(value)
        if text:
            return text
    return None


def first_text_at(obj, *paths: tuple[str, ...]) -> str | None:
    """The first non-empty text found at any of `paths` in obj; later paths are not read."""
    for path in paths:
        text = clean_text(get(obj, *path))
        if text:
            return text
    return None
