"""Response models of the query API; the OpenAPI document is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Error(_Model):
    error: str = Field(description="machine-readable code")
    detail: str = Field(description="why, for a person")


class WebhookAck(_Model):
    stored: int = Field(description="logical events newly committed to the log")
    duplicates: int = Field(description="logical events that were already in the log")


class Inactivity(_Model):
    at: datetime
    minutes: int | None


class Conversation(_Model):
    id: str
    phone_number_id: str | None
    status: Literal["active", "ended"]
    contact_phone: str | None = Field(description="the contact's phone number, digits only")
    contact_bsuid: str | None = Field(description="business-scoped user id")
    contact_name: str | None
    created_at: datetime | None
    ended_at: datetime | None
    last_active_at: datetime | None
    last_inactivity: Inactivity | None
    inbound_count: int
    outbound_count: int
    last_message_id: str | None
    last_message_at: datetime | None
    updated_at: datetime = Field(description="when the last event applied to it was received")


class ConversationPage(_Model):
    conversations: list[Conversation]
    next_cursor: str | None


class Message(_Model):
    id: str
    conversation_id: str | None
    phone_number_id: str | None
    contact_id: str | None = Field(description="business-scoped user id, else phone digits")
    direction: str | None
    type: str | None
    origin: str | None
    template_name: str | None
    status: str = Field(description="failed, read, delivered, sent; received for inbound")
    message_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None
    read_without_delivered: bool
    error_code: int | None
    error_title: str | None
    pricing_category: str | None
    updated_at: datetime


class MessagePage(_Model):
    messages: list[Message]
    next_cursor: str | None


class MetricsBucket(_Model):
    phone_number_id: str | None
    bucket_start: datetime
    sent: int
    delivered: int
    read: int
    failed: int
    sent_to_delivered_p50: float | None = Field(description="seconds")
    sent_to_delivered_p90: float | None
    delivered_to_read_p50: float | None
    delivered_to_read_p90: float | None


class DeliveryMetrics(_Model):
    bucket: Literal["hour", "day"]
    since: datetime
    until: datetime
    buckets: list[MetricsBucket]


class LogEvent(_Model):
    position: int
    event_name: str
    kind: str
    received_at: datetime
    idempotency_key: str | None
    idem_hash: str = Field(description="hex SHA-256 idempotency hash")
    payload_version: str | None
    batch_index: int | None
    batch_info: Any | None
    secret_id: str
    body_sha256: str
    phone_number_id: str | None
    conversation_id: str | None
    message_id: str | None
    payload: Any | None
    parse_error: str | None


class EventPage(_Model):
    events: list[LogEvent]
    next_after: int = Field(description="pass as `after` to read on from here")


class Delivery(_Model):
    body_sha256: str
    kind: str
    received_at: datetime
    headers: dict[str, Any] = Field(
        description="the protocol headers as received (X-*, content type)"
    )
    key_is_body_sha256: bool | None = Field(
        description="Meta kind: X-Idempotency-Key was the body's SHA-256"
    )
    body_base64: str = Field(description="the body exactly as received, base64-encoded")


class Projection(_Model):
    name: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    skipped: int = Field(description="unknown or unparseable events seen")


class ProjectionList(_Model):
    projections: list[Projection]


class Health(_Model):
    status: str
    checks: dict[str, Any] | None = None
