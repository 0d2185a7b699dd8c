"""Messages read model: per-wamid receipts with per-status times, whatever the arrival order."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from service.projections.facts import MessageFact
from service.projections.merge import latest, pick

NAME = "messages"


class Message(NamedTuple):
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
    contact_id: str | None = None

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
        return first(fact)
    newer = fact.position > state.updated_position
    return Message(
        state.id,
        pick(state.conversation_id, fact.conversation_id),
        pick(state.phone_number_id, fact.phone_number_id),
        pick(state.direction, fact.direction),
        pick(state.type, fact.type),
        pick(state.origin, fact.origin),
        pick(state.template_name, fact.template_name),
        pick(state.message_at, fact.message_at),
        pick(state.sent_at, fact.sent_at),
        pick(state.delivered_at, fact.delivered_at),
        pick(state.read_at, fact.read_at),
        pick(state.failed_at, fact.failed_at),
        pick(state.error, fact.error),
        pick(state.pricing_category, fact.pricing_category),
        latest(state.updated_position, fact.position),
        fact.received_at if newer else state.updated_at,
        pick(state.contact_id, fact.contact_id),
    )


def first(fact: MessageFact) -> Message:
    """The state a message's first fact makes: `apply(Message(id), fact)`, without merging
    every field with an empty one (most facts of a rebuild start a message)."""
    return Message(
        fact.message_id,
        fact.conversation_id,
        fact.phone_number_id,
        fact.direction,
        fact.type,
        fact.origin,
        fact.template_name,
        fact.message_at,
        fact.sent_at,
        fact.delivered_at,
        fact.read_at,
        fact.failed_at,
        fact.error,
        fact.pricing_category,
        fact.position,
        fact.received_at,
        fact.contact_id,
    )


def recount(before: dict[str, Message], changed: list[Message]) -> dict[str, tuple[int, int]]:
    """How `changed` moves conversation counts: conversation id -> (inbound, outbound) delta.

    Only a new message or a changed conversation, direction or time lists a conversation
    (its last message may change too, so a zero delta is listed); receipts list none.
    """
    deltas: dict[str, tuple[int, int]] = {}
    for new in changed:
        old = before.get(new.id)
        if old is not None and (old.conversation_id, old.direction, old.message_at) == (
            new.conversation_id,
            new.direction,
            new.message_at,
        ):
            continue
        for state, sign in ((old, -1), (new, 1)):
            if state is None or not state.conversation_id:
                continue
            inbound, outbound = deltas.get(state.conversation_id, (0, 0))
            if state.direction == "inbound":
                inbound += sign
            elif state.direction == "outbound":
                outbound += sign
            deltas[state.conversation_id] = (inbound, outbound)
    return deltas


def from_row(row) -> Message:
    error = (row["error_code"], row["error_title"] or "") if row["error_code"] is not None else None
    return Message(
        row["id"],
        row["conversation_id"],
        row["phone_number_id"],
        row["direction"],
        row["type"],
        row["origin"],
        row["template_name"],
        row["message_at"],
        row["sent_at"],
        row["delivered_at"],
        row["read_at"],
        row["failed_at"],
        error,
        row["pricing_category"],
        row["updated_position"],
        row["updated_at"],
        row["contact_id"],
    )


# the `messages` table's columns, in the order of `to_record`
COLUMNS = (
    "id",
    "conversation_id",
    "phone_number_id",
    "direction",
    "type",
    "origin",
    "template_name",
    "message_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "status",
    "read_without_delivered",
    "error_code",
    "error_title",
    "pricing_category",
    "updated_position",
    "updated_at",
    "contact_id",
)


def to_record(s: Message) -> tuple:
    """The `messages` table row of a state, as values in COLUMNS order (for COPY)."""
    return (
        s.id,
        s.conversation_id,
        s.phone_number_id,
        s.direction,
        s.type,
        s.origin,
        s.template_name,
        s.message_at,
        s.sent_at,
        s.delivered_at,
        s.read_at,
        s.failed_at,
        s.status,
        s.read_without_delivered,
        s.error[0] if s.error else None,
        s.error[1] if s.error else None,
        s.pricing_category,
        s.updated_position,
        s.updated_at,
        s.contact_id,
    )


def to_row(s: Message) -> dict:
    """The `messages` table row of a state, by column name (for `upsert_messages`)."""
    return dict(zip(COLUMNS, to_record(s), strict=True))
