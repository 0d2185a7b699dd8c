"""Kapso-kind deliveries: envelope (single, batch, v1, project, unknown) into logical events.

Verified bodies are never rejected for their shape: anything unexpected is stored with a
`parse_error` and the raw bytes stay in the `deliveries` table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

import orjson

from service.log.records import DeliveryRecord, EventRecord, clean_text, idem_hash

KIND = "kapso"
UNKNOWN_EVENT = "unknown"
_KEPT_HEADERS = ("content-type", "user-agent", "content-length")


def parse_delivery(
    body: bytes, headers: Mapping[str, str], secret_id: str, received_at: datetime
) -> tuple[DeliveryRecord, list[EventRecord]]:
    """Split one verified Kapso delivery into its raw record and its logical events."""
    body_sha = hashlib.sha256(body).digest()
    delivery = DeliveryRecord(body_sha, received_at, KIND, headers_json(headers), body)
    doc, error = load_json(body)
    header_event = clean_text(headers.get("X-Webhook-Event"), 200)
    version = clean_text(headers.get("X-Webhook-Payload-Version"), 20) or _sniff_version(doc)
    common = dict(
        idempotency_key=clean_text(headers.get("X-Idempotency-Key"), 200),
        kind=KIND,
        payload_version=version,
        received_at=received_at,
        secret_id=secret_id,
        body_sha256=body_sha,
    )

    items = _batch_items(doc, headers)
    if items is not None:
        batch_info = doc.get("batch_info")
        info_text = _dump(batch_info)[0] if batch_info is not None else None
        name = header_event or _body_event(doc) or UNKNOWN_EVENT
        events = []
        for index, item in enumerate(items):
            payload, item_error = _dump(item)
            events.append(EventRecord(
                idem_hash=idem_hash(KIND, body_sha, str(index)),
                event_name=name, batch_index=index, batch_info=info_text,
                payload=payload, parse_error=item_error,
                **_ids(item, batch_info), **common,
            ))
        return delivery, events

    name = header_event or _body_event(doc) or UNKNOWN_EVENT
    payload = None
    if error is None:
        payload, error = _single_payload(body)
    return delivery, [EventRecord(
        idem_hash=idem_hash(KIND, body_sha, "single"),
        event_name=name, batch_index=None, batch_info=None,
        payload=payload, parse_error=error,
        **_ids(doc, None), **common,
    )]


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


def headers_json(headers: Mapping[str, str]) -> str:
    """The delivery's protocol headers (X-*, content type) as a JSON object."""
    kept: dict[str, str] = {}
    for name in headers.keys():
        lower = name.lower()
        if (lower.startswith("x-") or lower in _KEPT_HEADERS) and lower not in kept:
            values = headers.getall(name) if hasattr(headers, "getall") else [headers[name]]
            kept[lower] = clean_text(", ".join(values), 2000) or ""
        if len(kept) >= 64:
            break
    return orjson.dumps(kept).decode()


def _single_payload(body: bytes) -> tuple[str | None, str | None]:
    if b"\\u0000" in body:
        return None, "body holds \\u0000, which jsonb cannot store; raw body kept"
    return body.decode("utf-8"), None


def _dump(value) -> tuple[str | None, str | None]:
    try:
        text = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        return None, clean_text(f"item not storable as JSON: {exc}", 300)
    if b"\\u0000" in text:
        return None, "item holds \\u0000, which jsonb cannot store; raw body kept"
    return text.decode(), None


def _batch_items(doc, headers: Mapping[str, str]) -> list | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return None
    flagged = doc.get("batch") is True or str(headers.get("X-Webhook-Batch", "")).lower() == "true"
    if not flagged or not doc["data"]:
        return None  # an empty batch is stored whole, as one event
    return doc["data"]


def _body_event(doc) -> str | None:
    if isinstance(doc, dict):
        for key in ("type", "event"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return clean_text(value, 200)
    return None


def _sniff_version(doc) -> str | None:
    if isinstance(doc, dict):
        return "v1" if "whatsapp_config" in doc else "v2"
    return None


def _get(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _first(*values) -> str | None:
    for value in values:
        text = clean_text(value)
        if text:
            return text
    return None


def _ids(doc, batch_info) -> dict:
    """Pull the ids projections need out of any known Kapso shape (v1, v2, project)."""
    return {
        "phone_number_id": _first(
            _get(doc, "phone_number_id"),
            _get(doc, "conversation", "phone_number_id"),
            _get(doc, "message", "kapso", "phone_number_id"),
            _get(doc, "whatsapp_config", "phone_number_id"),
        ),
        "conversation_id": _first(
            _get(doc, "conversation", "id"),
            _get(doc, "message", "kapso", "whatsapp_conversation_id"),
            _get(doc, "whatsapp_conversation_id"),
            _get(doc, "conversation_id"),
            _get(batch_info, "conversation_id"),
        ),
        "message_id": _first(_get(doc, "message", "id")),
    }
