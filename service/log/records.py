"""Rows of the event log, as the webhook parsers produce them and the writer stores them."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import NamedTuple

_MAX_TEXT = 512


class DeliveryRecord(NamedTuple):
    """One verified HTTP delivery, kept byte for byte."""

    body_sha256: bytes
    received_at: datetime
    kind: str
    headers: str  # JSON object text
    body: bytes
    key_is_body_sha256: bool | None = None  # Meta kind: X-Idempotency-Key == sha256(body)


class EventRecord(NamedTuple):
    """One logical event: a single body, or one item of a batch or of a Meta payload."""

    idem_hash: bytes
    idempotency_key: str | None
    kind: str
    event_name: str
    payload_version: str | None
    batch_index: int | None
    batch_info: str | None  # JSON text
    received_at: datetime
    secret_id: str
    body_sha256: bytes
    phone_number_id: str | None
    conversation_id: str | None
    message_id: str | None
    payload: str | None  # JSON text; None when the body is not storable JSON
    parse_error: str | None

    def without_payload(self, reason: str) -> EventRecord:
        """The same event with its payload dropped (the raw body stays in `deliveries`)."""
        return self._replace(payload=None, parse_error=clean_text(reason, 1000))


def idem_hash(*parts: bytes | str) -> bytes:
    """SHA-256 over length-prefixed parts: the UNIQUE key of a logical event."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


def clean_text(value, limit: int = _MAX_TEXT) -> str | None:
    """A value as text PostgreSQL accepts: no NULs, no lone surrogates, bounded length."""
    if not isinstance(value, str):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit] or None
