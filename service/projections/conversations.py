"""Conversations read model: live status and contact of each Kapso conversation.

Rules (protocol §16.19): the newest snapshot wins field by field, a missing optional block
never erases a stored value, `ended` is final (a new message after it belongs to a new
conversation id), inactivity is a notice and not a status, and message events for an unknown
conversation create it. Message counts come from the messages model (see runner).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from service.projections.facts import ConversationFact
from service.projections.merge import latest, pick

NAME = "conversations"


class Conversation(NamedTuple):
    id: str
    phone_number_id: str | None = None
    contact_phone: str | None = None
    contact_bsuid: str | None = None
    contact_name: str | None = None
    contact_name_at: datetime | None = None
    status: str = "active"
    created_at: datetime | None = None
    ended_at: datetime | None = None
    last_active_at: datetime | None = None
    snapshot_at: datetime | None = None
    inactive: tuple[datetime, int] | None = None
    updated_position: int = 0
    updated_at: datetime | None = None


_NEVER = datetime.min.replace(tzinfo=UTC)


def _newer_name(state: Conversation, fact: ConversationFact):
    """The contact name of the newest snapshot that carried one (ties: the larger name)."""
    if fact.contact_name is None:
        return state.contact_name, state.contact_name_at
    if state.contact_name is None:
        return fact.contact_name, fact.updated_at
    ours = (state.contact_name_at or _NEVER, state.contact_name)
    theirs = (fact.updated_at or _NEVER, fact.contact_name)
    if theirs > ours:
        return fact.contact_name, fact.updated_at
    return state.contact_name, state.contact_name_at


def apply(state: Conversation | None, fact: ConversationFact) -> Conversation:
    """Fold one fact into a conversation; duplicates and any order give the same result."""
    if state is None:
        state = Conversation(fact.conversation_id)
    ended = fact.ended or fact.status == "ended"
    ended_at = state.ended_at
    if ended:
        ended_at = pick(ended_at, fact.updated_at or fact.last_active_at or fact.received_at)
    name, name_at = _newer_name(state, fact)
    newer = fact.position > state.updated_position
    return Conversation(  # positional: several times cheaper than keywords, per event
        state.id,
        pick(state.phone_number_id, fact.phone_number_id),
        pick(state.contact_phone, fact.phone),
        pick(state.contact_bsuid, fact.bsuid),
        name,
        name_at,
        "ended" if ended or state.status == "ended" else "active",
        pick(state.created_at, fact.created_at),
        ended_at,
        latest(state.last_active_at, fact.last_active_at),
        latest(state.snapshot_at, fact.updated_at),
        latest(state.inactive, fact.inactive),
        latest(state.updated_position, fact.position),
        fact.received_at if newer else state.updated_at,
    )


def recount(before: dict[str, Conversation], changed: list[Conversation]) -> dict[str, None]:
    """New conversation rows, to be counted afresh (None): their messages may have been
    projected before the row existed. Existing rows keep counts the messages model moves."""
    return {s.id: None for s in changed if s.id not in before}


def from_row(row) -> Conversation:
    inactive = None
    if row["last_inactive_at"] is not None:
        inactive = (row["last_inactive_at"], row["inactivity_minutes"])
    return Conversation(
        id=row["id"],
        phone_number_id=row["phone_number_id"],
        contact_phone=row["contact_phone"],
        contact_bsuid=row["contact_bsuid"],
        contact_name=row["contact_name"],
        contact_name_at=row["contact_name_at"],
        status=row["status"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        last_active_at=row["last_active_at"],
        snapshot_at=row["snapshot_at"],
        inactive=inactive,
        updated_position=row["updated_position"],
        updated_at=row["updated_at"],
    )


def to_row(s: Conversation) -> dict:
    """The `conversations` table row of a state (for `upsert_conversations`)."""
    return {
        "id": s.id,
        "phone_number_id": s.phone_number_id,
        "contact_phone": s.contact_phone,
        "contact_bsuid": s.contact_bsuid,
        "contact_name": s.contact_name,
        "contact_name_at": s.contact_name_at,
        "status": s.status,
        "created_at": s.created_at,
        "ended_at": s.ended_at,
        "last_active_at": s.last_active_at,
        "snapshot_at": s.snapshot_at,
        "last_inactive_at": s.inactive[0] if s.inactive else None,
        "inactivity_minutes": s.inactive[1] if s.inactive else None,
        "updated_position": s.updated_position,
        "updated_at": s.updated_at,
    }
