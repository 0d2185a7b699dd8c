"""Messages read model: per-wamid receipts with per-status times, whatever the arrival order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.projections.facts import MessageFact
from service.projections.merge import latest, pick

NAME = "messages"
_RANK = ("sent", "delivered", "read")


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str | None = None
    phone_number_id: str | None = None
    direction: str | None = None
    type: str | None = None
    origin: str | None = None
    template_name: str | None = None
    message_at: datetime | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None
    failed_at: datetime | None = None
    error: tuple[int, str] | None = None
    pricing_category: str | None = None
    updated_position: int = 0
    updated_at: datetime | None = None

    @property
    def status(self) -> str:
        """`failed` if it failed, else the highest of sent < delivered < read; inbound: received."""
        if self.failed_at is not None:
            return "failed"
        if self.read_at is not None:
            return "read"
        if self.delivered_at is not None:
            return "delivered"
        if self.sent_at is not None:
            return "sent"
        return "received" if self.direction == "inbound" else "pending"

    @property
    def read_without_delivered(self) -> bool:
        return self.read_at is not None and self.delivered_at is None


def apply(state: Message | None, fact: MessageFact) -> Message:
    """Fold one fact into a message; duplicates and any order give the same result."""
    if state is None:
        state = Message(id=fact.message_id)
    times = {"sent": state.sent_at, "delivered": state.delivered_at,
             "read": state.read_at, "failed": state.failed_at}
    for status, when in fact.status_times:
        times[status] = pick(times[status], when)
    newer = fact.position > state.updated_position
    return Message(
        id=state.id,
        conversation_id=pick(state.conversation_id, fact.conversation_id),
        phone_number_id=pick(state.phone_number_id, fact.phone_number_id),
        direction=pick(state.direction, fact.direction),
        type=pick(state.type, fact.type),
        origin=pick(state.origin, fact.origin),
        template_name=pick(state.template_name, fact.template_name),
        message_at=pick(pick(state.message_at, fact.message_at), min(
            (t for t in times.values() if t is not None), default=None)),
        sent_at=times["sent"], delivered_at=times["delivered"], read_at=times["read"],
        failed_at=times["failed"],
        error=pick(state.error, fact.error),
        pricing_category=pick(state.pricing_category, fact.pricing_category),
        updated_position=latest(state.updated_position, fact.position),
        updated_at=fact.received_at if newer else state.updated_at,
    )


def from_row(row) -> Message:
    error = (row["error_code"], row["error_title"] or "") if row["error_code"] is not None else None
    return Message(
        id=row["id"], conversation_id=row["conversation_id"], phone_number_id=row["phone_number_id"],
        direction=row["direction"], type=row["type"], origin=row["origin"],
        template_name=row["template_name"], message_at=row["message_at"], sent_at=row["sent_at"],
        delivered_at=row["delivered_at"], read_at=row["read_at"], failed_at=row["failed_at"],
        error=error, pricing_category=row["pricing_category"],
        updated_position=row["updated_position"], updated_at=row["updated_at"],
    )


def columns(states: list[Message]) -> list[list]:
    """Column arrays for the `upsert_messages` query."""
    return [
        [s.id for s in states], [s.conversation_id for s in states],
        [s.phone_number_id for s in states], [s.direction for s in states],
        [s.type for s in states], [s.origin for s in states], [s.template_name for s in states],
        [s.message_at for s in states], [s.sent_at for s in states],
        [s.delivered_at for s in states], [s.read_at for s in states],
        [s.failed_at for s in states], [s.status for s in states],
        [s.read_without_delivered for s in states],
        [s.error[0] if s.error else None for s in states],
        [s.error[1] if s.error else None for s in states],
        [s.pricing_category for s in states], [s.updated_position for s in states],
        [s.updated_at for s in states],
    ]
