"""Pure folds: no database. Any order and any duplication give the same final state."""

import gc
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.projections import conversations, facts, messages, runner

T0 = datetime(2025, 10, 28, 14, 0, tzinfo=UTC)
WAMID = "wamid.OUT1"
CONV = "c63ced48-1283-4d55-8c8d-930f525aa0e5"


def ts(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def pg_text(when: datetime | None) -> str | None:
    """A time as fetch_projection_input hands it over: timestamptz text in DateStyle ISO."""
    return None if when is None else when.isoformat(sep=" ").replace("+00:00", "+00")


def row(*args, **kwargs) -> tuple:
    """An input row as the driver hands it to the folds: values in INPUT_COLUMNS order."""
    return as_input(fields(*args, **kwargs))


def as_input(values: dict) -> tuple:
    return tuple(values[column] for column in facts.INPUT_COLUMNS)


def fields(
    position,
    event_name,
    *,
    message_id=WAMID,
    statuses=None,
    message_ts=None,
    direction="outbound",
    conversation=None,
    contact_name=None,
    inactive=None,
):
    conv = conversation or {}
    return {
        "position": position,
        "received_at": pg_text(T0 + timedelta(hours=position)),
        "event_name": event_name,
        "phone_number_id": "123",
        "conversation_id": CONV,
        "message_id": message_id,
        "unparseable": False,
        "message_ts": pg_text(message_ts),
        "message_type": "text",
        "direction": direction,
        "origin": "cloud_api",
        "template_name": None,
        "contact_bsuid": None,
        "contact_phone": conv.get("phone_number"),
        **extracted(statuses),
        "conv_status": conv.get("status"),
        "conv_created_at": conv.get("created_at"),
        "conv_updated_at": conv.get("updated_at"),
        "conv_last_active_at": conv.get("last_active_at"),
        "conv_phone": conv.get("phone_number"),
        "conv_bsuid": conv.get("bsuid"),
        "contact_name": contact_name,
        "inactive_since": inactive and inactive[0],
        "inactivity_minutes": inactive and inactive[1],
    }


def extracted(statuses):
    """What fetch_projection_input's SQL pulls out of a status history (earliest per status)."""
    out = {f"{s}_at": None for s in ("sent", "delivered", "read", "failed")}
    out.update(error_code=None, error_title=None, pricing_category=None)
    for entry in statuses or []:
        key = entry["status"] + "_at"
        when = ts(entry["seconds"])
        out[key] = when if out[key] is None else min(out[key], when)
        if entry.get("errors"):
            out["error_code"] = entry["errors"][0]["code"]
            out["error_title"] = entry["errors"][0]["title"]
        if entry.get("pricing"):
            out["pricing_category"] = entry["pricing"]["category"]
    return {k: pg_text(v) if k.endswith("_at") else v for k, v in out.items()}


def status(name, seconds, **extra):
    return {"status": name, "seconds": seconds, **extra}


FAIL = status("failed", 300, errors=[{"code": 131049, "title": "ecosystem engagement"}])
SENT = status("sent", 0, pricing={"category": "marketing"})
DELIVERED = status("delivered", 2)
READ = status("read", 60)

MESSAGE_ROWS = [
    row(1, "whatsapp.message.sent", statuses=[SENT], message_ts=ts(0)),
    row(2, "whatsapp.message.delivered", statuses=[SENT, DELIVERED], message_ts=ts(2)),
    row(3, "whatsapp.message.read", statuses=[SENT, DELIVERED, READ], message_ts=ts(60)),
    row(4, "whatsapp.message.read", statuses=[READ], message_ts=ts(60)),  # a bare read
    row(5, "whatsapp.message.failed", statuses=[SENT, FAIL], message_ts=ts(300)),
]


def fold(model, rows, make):
    state = None
    for r in rows:
        fact = make(r)
        if fact is not None:
            state = model.apply(state, fact)
    return state


def fold_messages(rows):
    return fold(messages, rows, facts.message_fact)


def test_times_come_from_the_status_history_not_arrival():
    state = fold_messages(MESSAGE_ROWS[:3])
    assert state.sent_at == T0
    assert state.delivered_at == T0 + timedelta(seconds=2)
    assert state.read_at == T0 + timedelta(seconds=60)
    assert state.status == "read" and not state.read_without_delivered
    assert state.pricing_category == "marketing"
    assert state.message_at == T0


def test_read_without_delivered_is_flagged_and_cleared_by_a_delivered():
    only_read = fold_messages([row(9, "whatsapp.message.read", statuses=[SENT, READ])])
    assert only_read.status == "read" and only_read.read_without_delivered
    assert fold_messages([MESSAGE_ROWS[3], MESSAGE_ROWS[1]]).read_without_delivered is False


def test_failed_is_terminal_and_keeps_the_error():
    state = fold_messages([MESSAGE_ROWS[4], MESSAGE_ROWS[1]])
    assert state.status == "failed"
    assert state.error == (131049, "ecosystem engagement")
    assert state.delivered_at is not None  # the later fact is kept, the status stays failed


def test_status_without_history_uses_message_timestamp():
    state = fold_messages([row(1, "whatsapp.message.delivered", statuses=None, message_ts=ts(5))])
    assert state.delivered_at == T0 + timedelta(seconds=5) and state.status == "delivered"


def test_a_first_fact_makes_the_state_apply_would_make_from_an_empty_message():
    rows = [*MESSAGE_ROWS, row(6, "whatsapp.message.received", direction="inbound")]
    for r in rows:
        fact = facts.message_fact(r)
        assert messages.apply(None, fact) == messages.apply(messages.Message(fact.message_id), fact)


def test_times_are_read_from_the_text_postgresql_writes():
    fact = facts.message_fact(
        as_input(
            {
                **fields(1, "whatsapp.message.sent", statuses=[SENT]),
                "received_at": "2025-10-28 14:00:00.250001+00",
                "sent_at": "2025-10-28 13:59:58+00",
                "message_ts": "2025-10-28 16:59:57+03",  # a server in another TimeZone
            }
        )
    )
    assert fact.received_at == datetime(2025, 10, 28, 14, 0, 0, 250001, tzinfo=UTC)
    assert fact.sent_at == datetime(2025, 10, 28, 13, 59, 58, tzinfo=UTC)
    assert fact.message_at == datetime(2025, 10, 28, 13, 59, 57, tzinfo=UTC)
    assert fact.delivered_at is None and fact.read_at is None


def test_inbound_message_is_received():
    state = fold_messages(
        [row(1, "whatsapp.message.received", message_ts=ts(0), direction="inbound")]
    )
    assert state.status == "received" and state.message_at == T0


def test_unknown_events_make_no_fact():
    assert facts.message_fact(row(1, "whatsapp.brand.new")) is None
    assert facts.conversation_fact(row(1, "project.event")) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(MESSAGE_ROWS), min_size=len(MESSAGE_ROWS), max_size=3 * len(MESSAGE_ROWS)
    ).filter(lambda rs: len({r[facts.POSITION] for r in rs}) == 5),
    st.randoms(),
)
def test_any_order_and_duplication_of_message_events_gives_one_state(rows, rnd):
    reference = fold_messages(MESSAGE_ROWS)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert fold_messages(shuffled) == reference


def snapshot(seconds, status="active", **extra):
    return {
        "status": status,
        "created_at": iso(0),
        "updated_at": iso(seconds),
        "last_active_at": iso(seconds),
        "phone_number": "+1 (555) 123-4567",
        **extra,
    }


CONVERSATION_ROWS = [
    row(
        10,
        "whatsapp.conversation.created",
        message_id=None,
        conversation=snapshot(0),
        contact_name="Ana",
    ),
    row(11, "whatsapp.message.received", direction="inbound", conversation=snapshot(10)),
    row(12, "whatsapp.message.sent", conversation=snapshot(20), contact_name="Ana Ruiz"),
    row(
        13,
        "whatsapp.conversation.inactive",
        message_id=None,
        conversation=snapshot(20),
        inactive=(iso(20), "60"),
    ),
    row(
        14,
        "whatsapp.conversation.ended",
        message_id=None,
        conversation=snapshot(4000, status="ended"),
    ),
    row(15, "whatsapp.message.delivered", conversation=snapshot(30)),  # late, older snapshot
]


def fold_conversations(rows):
    return fold(conversations, rows, facts.conversation_fact)


def test_conversation_lifecycle():
    state = fold_conversations(CONVERSATION_ROWS)
    assert state.status == "ended"
    assert state.ended_at == T0 + timedelta(seconds=4000)
    assert state.created_at == T0
    assert state.last_active_at == T0 + timedelta(seconds=4000)
    assert state.contact_phone == "15551234567"
    assert state.contact_name == "Ana Ruiz"  # from the newest snapshot that had a name
    assert state.inactive == (T0 + timedelta(seconds=20 + 3600), 60)
    assert state.updated_position == 15


def test_late_active_snapshot_does_not_undo_ended():
    state = fold_conversations([CONVERSATION_ROWS[4], CONVERSATION_ROWS[5]])
    assert state.status == "ended"


def test_message_event_creates_an_unknown_conversation():
    state = fold_conversations([CONVERSATION_ROWS[1]])
    assert state.id == CONV and state.status == "active"


def test_missing_optional_block_never_erases():
    state = fold_conversations([CONVERSATION_ROWS[2], CONVERSATION_ROWS[5]])
    assert state.contact_name == "Ana Ruiz"


@settings(max_examples=200, deadline=None)
@given(st.permutations(CONVERSATION_ROWS), st.lists(st.sampled_from(CONVERSATION_ROWS), max_size=6))
def test_any_order_and_duplication_of_conversation_events_gives_one_state(rows, extra):
    reference = fold_conversations(CONVERSATION_ROWS)
    assert fold_conversations(list(rows) + extra) == reference
    assert fold_conversations(extra + list(rows)) == reference


def test_helpers_are_defensive():
    assert facts.iso_time("2025-10-28T14:25:01Z") == datetime(2025, 10, 28, 14, 25, 1, tzinfo=UTC)
    assert facts.iso_time("2025-02-30T00:00:00Z") is None
    assert facts.iso_time(5) is None and facts.digits(None) is None
    assert facts.digits("+1 (555) 123-4567") == "15551234567"


def test_only_new_or_moved_messages_move_conversation_counts():
    sent = fold_messages(MESSAGE_ROWS[:1])
    read = fold_messages(MESSAGE_ROWS[:3])
    assert sent.direction == "outbound"
    assert messages.recount({}, [sent]) == {CONV: (0, 1)}  # a new message
    assert messages.recount({WAMID: sent}, [read]) == {}  # receipts change no count
    moved = read._replace(conversation_id="conv-2")
    assert messages.recount({WAMID: read}, [moved]) == {CONV: (0, -1), "conv-2": (0, 1)}
    flipped = read._replace(direction="inbound")
    assert messages.recount({WAMID: read}, [flipped]) == {CONV: (1, -1)}
    earlier = read._replace(message_at=ts(-5))
    assert messages.recount({WAMID: read}, [earlier]) == {CONV: (0, 0)}  # last may change
    other = read._replace(id="wamid.other", direction="inbound")
    assert messages.recount({}, [sent, other]) == {CONV: (1, 1)}  # deltas add up


def test_merging_count_changes_of_a_batch():
    touched = {}
    runner.merge_touched(touched, {CONV: None, "conv-2": None})
    runner.merge_touched(touched, {CONV: (1, 0), "conv-3": (0, 1)})
    runner.merge_touched(touched, {"conv-3": (2, -1)})
    assert touched == {CONV: None, "conv-2": None, "conv-3": (2, 0)}  # afresh wins


def test_only_new_conversation_rows_need_a_recount():
    state = fold_conversations(CONVERSATION_ROWS[:2])
    assert conversations.recount({}, [state]) == {CONV: None}  # counted afresh
    assert conversations.recount({CONV: state}, [state._replace(status="ended")]) == {}


def test_rebuilds_collect_young_objects_less_often_and_restore_the_collector():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), runner._young_collections_rarer(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
        raise RuntimeError("a failed rebuild")
    assert gc.get_threshold() == before
