"""Facts: the typed, already-parsed inputs of the pure folds, built from log rows.

One log event yields at most one message fact and one conversation fact. Everything here is
defensive: odd values become None, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MESSAGE_EVENTS = {
    "whatsapp.message.received": "received",
    "whatsapp.message.sent": "sent",
    "whatsapp.message.delivered": "delivered",
    "whatsapp.message.read": "read",
    "whatsapp.message.failed": "failed",
}
CONVERSATION_EVENTS = {
    "whatsapp.conversation.created", "whatsapp.conversation.ended", "whatsapp.conversation.inactive",
}
STATUSES = ("sent", "delivered", "read", "failed")


@dataclass(frozen=True, slots=True)
class MessageFact:
    position: int
    received_at: datetime
    message_id: str
    conversation_id: str | None
    phone_number_id: str | None
    direction: str | None
    type: str | None
    origin: str | None
    template_name: str | None
    message_at: datetime | None
    status_times: tuple[tuple[str, datetime], ...]  # (status, when) pairs seen in this event
    error: tuple[int, str] | None  # (code, title) of a failure
    pricing_category: str | None


@dataclass(frozen=True, slots=True)
class ConversationFact:
    position: int
    received_at: datetime
    conversation_id: str
    phone_number_id: str | None
    status: str | None
    ended: bool  # the event itself says the conversation ended
    created_at: datetime | None
    updated_at: datetime | None
    last_active_at: datetime | None
    phone: str | None
    bsuid: str | None
    contact_name: str | None
    inactive: tuple[datetime, int] | None  # (notice time, minutes)


def unix_time(value) -> datetime | None:
    """Unix seconds (int or numeric string) as an aware UTC datetime."""
    try:
        seconds = int(value)
        return datetime.fromtimestamp(seconds, UTC) if 0 < seconds < 32503680000 else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def iso_time(value) -> datetime | None:
    """An ISO-8601 string as an aware datetime (naive means UTC)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def digits(phone) -> str | None:
    """A phone number normalised to its digits (`+1 555-123` -> `1555123`)."""
    if not isinstance(phone, str):
        return None
    only = "".join(ch for ch in phone if ch.isdigit())
    return only or None


def status_entries(statuses, message_id: str):
    """(status, time, error, pricing category) for each Meta status entry of this message."""
    if not isinstance(statuses, list):
        return
    for entry in statuses:
        if not isinstance(entry, dict):
            continue
        entry_id = entry.get("id")
        if entry_id is not None and entry_id != message_id:
            continue
        status, when = entry.get("status"), unix_time(entry.get("timestamp"))
        if status not in STATUSES or when is None:
            continue
        yield status, when, _error(entry), _category(entry)


def _error(entry: dict) -> tuple[int, str] | None:
    errors = entry.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        try:
            code = int(code)
        except (TypeError, ValueError):
            return None
        title = errors[0].get("title") or errors[0].get("message")
        return code, title if isinstance(title, str) else ""
    return None


def _category(entry: dict) -> str | None:
    pricing = entry.get("pricing")
    if isinstance(pricing, dict) and isinstance(pricing.get("category"), str):
        return pricing["category"]
    return None


def kapso_message_fact(row) -> MessageFact | None:
    """The message fact of a Kapso message event row, if it has a message id."""
    event_status = MESSAGE_EVENTS.get(row["event_name"])
    message_id = row["message_id"]
    if event_status is None or message_id is None:
        return None
    direction = row["direction"]
    if direction not in ("inbound", "outbound"):
        direction = "inbound" if event_status == "received" else "outbound"
    message_ts = unix_time(row["message_ts"])
    times: dict[str, datetime] = {}
    error = category = None
    for status, when, entry_error, entry_category in status_entries(row["statuses"], message_id):
        if status not in times or when < times[status]:
            times[status] = when
        error = entry_error if error is None else error
        category = entry_category if category is None else category
    # without a status history, the event's own status dates from message.timestamp (§9.2)
    if event_status in STATUSES and event_status not in times and message_ts is not None:
        times[event_status] = message_ts
    return MessageFact(
        position=row["position"], received_at=row["received_at"], message_id=message_id,
        conversation_id=row["conversation_id"], phone_number_id=row["phone_number_id"],
        direction=direction, type=row["message_type"], origin=row["origin"],
        template_name=row["template_name"],
        message_at=message_ts if event_status in ("received", "sent") else min(times.values(), default=None),
        status_times=tuple(sorted(times.items())), error=error, pricing_category=category,
    )


def kapso_conversation_fact(row) -> ConversationFact | None:
    """The conversation fact of any Kapso event that names a conversation."""
    name = row["event_name"]
    conversation_id = row["conversation_id"]
    if conversation_id is None or (name not in CONVERSATION_EVENTS and name not in MESSAGE_EVENTS):
        return None
    inactive = None
    if name == "whatsapp.conversation.inactive":
        inactive = _inactive_notice(row)
    status = row["conv_status"]
    return ConversationFact(
        position=row["position"], received_at=row["received_at"], conversation_id=conversation_id,
        phone_number_id=row["phone_number_id"],
        status=status if status in ("active", "ended") else None,
        ended=name == "whatsapp.conversation.ended",
        created_at=iso_time(row["conv_created_at"]), updated_at=iso_time(row["conv_updated_at"]),
        last_active_at=iso_time(row["conv_last_active_at"]), phone=digits(row["conv_phone"]),
        bsuid=row["conv_bsuid"] or None, contact_name=row["contact_name"] or None,
        inactive=inactive,
    )


def _inactive_notice(row) -> tuple[datetime, int] | None:
    try:
        minutes = int(row["inactivity_minutes"])
    except (TypeError, ValueError):
        minutes = None
    since = iso_time(row["inactive_since"])
    if since is not None and minutes is not None:
        from datetime import timedelta

        return since + timedelta(minutes=minutes), minutes
    updated = iso_time(row["conv_updated_at"]) or row["received_at"]
    return updated, minutes if minutes is not None else 0
