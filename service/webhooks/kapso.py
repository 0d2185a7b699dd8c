"""Kapso-kind deliveries: envelope (single, batch, v1, project, unknown) into logical events.

Verified bodies are never rejected for their shape: anything unexpected is stored with a
`parse_error` and the raw bytes stay in the `deliveries` table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from service.log.records import DeliveryRecord, EventRecord, clean_text, idem_hash
from service.webhooks import envelope

KIND = "kapso"
UNKNOWN_EVENT = "unknown"


def parse_delivery(
    body: bytes, headers: Mapping[str, str], secret_id: str, received_at: datetime
) -> tuple[DeliveryRecord, list[EventRecord]]:
    """Split one verified Kapso delivery into its raw record and its logical events."""
    delivery = envelope.delivery_record(body, headers, KIND, received_at)
    body_sha = delivery.body_sha256
    doc, error = envelope.load_json(body)
    header_event = clean_text(headers.get("X-Webhook-Event"), 200)
    version = clean_text(headers.get("X-Webhook-Payload-Version"), 20) or _sniff_version(doc)
    key = clean_text(headers.get("X-Idempotency-Key"), 200)

    def event(part, name, index, info, payload, parse_error, ids) -> EventRecord:
        # positional, in EventRecord's field order: this runs for every webhook
        return EventRecord(
            idem_hash(KIND, body_sha, part),
            key,
            KIND,
            name,
            version,
            index,
            info,
            received_at,
            secret_id,
            body_sha,
            *ids,
            payload,
            parse_error,
        )

    items = _batch_items(doc, headers)
    if items is not None:
        batch_info = doc.get("batch_info")
        info_text = envelope.dump_json(batch_info)[0] if batch_info is not None else None
        name = header_event or _body_event(doc) or UNKNOWN_EVENT
        events = []
        for index, item in enumerate(items):
            payload, item_error = envelope.dump_json(item)
            ids = _ids(item, batch_info)
            events.append(event(str(index), name, index, info_text, payload, item_error, ids))
        return delivery, events

    name = header_event or _body_event(doc) or UNKNOWN_EVENT
    payload = None
    if error is None:
        payload, error = _single_payload(body)
    return delivery, [event("single", name, None, None, payload, error, _ids(doc, None))]


def _single_payload(body: bytes) -> tuple[str | None, str | None]:
    if b"\\u0000" in body:
        return None, "body holds \\u0000, which jsonb cannot store; raw body kept"
    return body.decode("utf-8"), None


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


_PHONE_NUMBER_ID = (
    ("phone_number_id",),
    ("conversation", "phone_number_id"),
    ("message", "kapso", "phone_number_id"),
    ("whatsapp_config", "phone_number_id"),
)
_CONVERSATION_ID = (
    ("conversation", "id"),
    ("message", "kapso", "whatsapp_conversation_id"),
    ("whatsapp_conversation_id",),
    ("conversation_id",),
)


def _ids(doc, batch_info) -> tuple[str | None, str | None, str | None]:
    """(phone number id, conversation id, message id) from any known Kapso shape (v1, v2,
    project): the ids projections need."""
    return (
        envelope.first_text_at(doc, *_PHONE_NUMBER_ID),
        envelope.first_text_at(doc, *_CONVERSATION_ID)
        or envelope.first_text(envelope.get(batch_info, "conversation_id")),
        envelope.first_text(envelope.get(doc, "message", "id")),
    )
