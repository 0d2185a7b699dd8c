"""Meta-kind deliveries: raw WhatsApp Cloud API payloads into one logical event per item.

A body holds entries, each with changes; a `messages` change holds messages, statuses and
value-level errors. Each message and each status becomes its own event, keyed by its natural
key (wamid; wamid and status), so Meta re-sending a notification stores nothing new. Every
other field (account_update, template status, user preferences, ...) is stored verbatim as
one event per change, keyed by its content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

import orjson

from service.log.records import DeliveryRecord, EventRecord, clean_text, idem_hash
from service.webhooks import envelope

KIND = "meta"
MESSAGE = "meta.message.received"
STATUS = "meta.message.status"
ERRORS = "meta.messages.errors"
UNKNOWN = "meta.unknown"


def parse_delivery(
    body: bytes, headers: Mapping[str, str], secret_id: str, received_at: datetime
) -> tuple[DeliveryRecord, list[EventRecord]]:
    """Split one verified Meta delivery into its raw record and its logical events."""
    delivery = envelope.delivery_record(
        body, headers, KIND, received_at, key_is_body_sha256=key_matches_body(headers, body)
    )
    body_sha = delivery.body_sha256
    common = dict(
        idempotency_key=clean_text(headers.get("X-Idempotency-Key"), 200),
        kind=KIND,
        payload_version=None,
        batch_index=None,
        batch_info=None,
        received_at=received_at,
        secret_id=secret_id,
        body_sha256=body_sha,
    )
    doc, error = envelope.load_json(body)
    items = list(_items(doc)) if error is None else []
    if not items:
        payload, dump_error = (None, error) if error else envelope.dump_json(doc)
        reason = error or dump_error or "no entries/changes in a Meta payload"
        return delivery, [
            EventRecord(
                idem_hash=idem_hash(KIND, body_sha, "whole"),
                event_name=UNKNOWN,
                phone_number_id=None,
                conversation_id=None,
                message_id=None,
                payload=payload,
                parse_error=reason,
                **common,
            )
        ]
    events = []
    for index, (name, key, payload_obj, ids) in enumerate(items):
        payload, dump_error = envelope.dump_json(payload_obj)
        events.append(
            EventRecord(
                idem_hash=idem_hash(KIND, name, *key)
                if key
                else idem_hash(KIND, body_sha, str(index)),
                event_name=name,
                payload=payload,
                parse_error=dump_error,
                conversation_id=None,
                **ids,
                **common,
            )
        )
    return delivery, events


def key_matches_body(headers: Mapping[str, str], body: bytes) -> bool | None:
    """Whether X-Idempotency-Key is the hex SHA-256 of the body (None when absent)."""
    key = headers.get("X-Idempotency-Key")
    if key is None:
        return None
    return key.strip().lower() == hashlib.sha256(body).hexdigest()


def _canonical(value) -> str | None:
    """A stable text of a value for its natural key (sorted keys), None if it has none."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return None


def _content_key(*parts) -> tuple | None:
    """A natural key from content, or None (then the body hash and item index are used)."""
    return None if None in parts else parts


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _items(doc):
    """(event name, natural key, payload, ids) for every logical item of a Meta body."""
    if not isinstance(doc, dict):
        return
    for entry in _list(doc.get("entry")):
        if not isinstance(entry, dict):
            continue
        waba_id = envelope.first_text(entry.get("id"))
        for change in _list(entry.get("changes")):
            if not isinstance(change, dict):
                continue
            field = envelope.first_text(change.get("field")) or "unknown"
            value = change.get("value")
            if field == "messages" and isinstance(value, dict):
                yield from _messages_change(value, waba_id)
            else:
                ids = {
                    "phone_number_id": envelope.first_text(
                        envelope.get(value, "metadata", "phone_number_id")
                    ),
                    "message_id": None,
                }
                payload = {"value": value, "waba_id": waba_id}
                yield f"meta.{field}", _content_key(field, _canonical(value)), payload, ids


def _messages_change(value: dict, waba_id):
    metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else None
    phone_number_id = envelope.first_text(envelope.get(metadata, "phone_number_id"))
    contacts = value.get("contacts") if isinstance(value.get("contacts"), list) else None
    context = {"metadata": metadata, "contacts": contacts, "waba_id": waba_id}
    for message in _list(value.get("messages")):
        wamid = envelope.first_text(envelope.get(message, "id"))
        key = ("message", wamid) if wamid else None
        yield (
            MESSAGE,
            key,
            {"message": message, **context},
            {"phone_number_id": phone_number_id, "message_id": wamid},
        )
    for status in _list(value.get("statuses")):
        wamid = envelope.first_text(envelope.get(status, "id"))
        state = envelope.first_text(envelope.get(status, "status"))
        key = ("status", wamid, state) if wamid and state else None
        yield (
            STATUS,
            key,
            {"status": status, **context},
            {"phone_number_id": phone_number_id, "message_id": wamid},
        )
    if value.get("errors"):
        yield (
            ERRORS,
            _content_key("errors", phone_number_id or "", _canonical(value["errors"])),
            {"errors": value["errors"], **context},
            {"phone_number_id": phone_number_id, "message_id": None},
        )
