from datetime import UTC, datetime

import orjson
from multidict import CIMultiDict

from service.webhooks import kapso
from tests import vectors

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def parse(body, **headers):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return kapso.parse_delivery(raw, CIMultiDict(headers), "abcd1234", NOW)


def test_single_v2_event_keeps_raw_text_and_ids():
    delivery, [event] = parse(
        vectors.KAPSO_BODY,
        **{"X-Webhook-Event": "whatsapp.message.received", "X-Idempotency-Key": "k1"},
    )
    assert delivery.body == vectors.KAPSO_BODY
    assert event.payload == vectors.KAPSO_BODY.decode()
    assert event.event_name == "whatsapp.message.received"
    assert event.batch_index is None and event.parse_error is None
    assert event.payload_version == "v2"
    assert (event.phone_number_id, event.conversation_id, event.message_id) == (
        "123456789012345",
        "c63ced48-1283-4d55-8c8d-930f525aa0e5",
        "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUY5",
    )
    assert event.idempotency_key == "k1" and event.secret_id == "abcd1234"


def test_event_name_falls_back_to_type_then_event():
    assert parse({"type": "a.b", "event": "c.d"})[1][0].event_name == "a.b"
    assert (
        parse({"event": "workflow.execution.failed"})[1][0].event_name
        == "workflow.execution.failed"
    )
    assert parse({"x": 1})[1][0].event_name == kapso.UNKNOWN_EVENT
    named = parse({"type": "a.b"}, **{"X-Webhook-Event": "from.header"})[1][0]
    assert named.event_name == "from.header"


def _batch(n, with_type=True):
    body = {
        "batch": True,
        "data": [
            {"message": {"id": f"wamid.{i}"}, "conversation": {"id": "conv-1"}} for i in range(n)
        ],
        "batch_info": {"size": n, "conversation_id": "conv-1", "first_sequence": 1},
    }
    if with_type:
        body["type"] = "whatsapp.message.received"
    return body


def test_batch_splits_into_indexed_items_with_batch_info():
    _, events = parse(_batch(3))
    assert [e.batch_index for e in events] == [0, 1, 2]
    assert [e.message_id for e in events] == ["wamid.0", "wamid.1", "wamid.2"]
    assert all(e.event_name == "whatsapp.message.received" for e in events)
    assert orjson.loads(events[0].batch_info)["first_sequence"] == 1
    assert len({e.idem_hash for e in events}) == 3


def test_batch_of_one_and_header_only_batch():
    _, [event] = parse(_batch(1))
    assert event.batch_index == 0
    body = _batch(2, with_type=False)
    del body["batch"]
    _, events = parse(
        body, **{"X-Webhook-Batch": "true", "X-Webhook-Event": "whatsapp.message.received"}
    )
    assert [e.batch_index for e in events] == [0, 1]


def test_data_list_without_batch_flag_is_one_event():
    body = _batch(2)
    del body["batch"]
    _, events = parse(body)
    assert len(events) == 1 and events[0].batch_index is None


def test_empty_batch_is_stored_whole():
    _, events = parse({"type": "whatsapp.message.received", "batch": True, "data": []})
    assert len(events) == 1 and events[0].payload is not None


def test_v1_body_is_sniffed_and_ids_found():
    body = {
        "message": {"id": "wamid.v1", "message_type": "text"},
        "conversation": {"id": "conv-v1", "whatsapp_config_id": "cfg"},
        "whatsapp_config": {"id": "cfg", "phone_number_id": "555"},
    }
    _, [event] = parse(body)
    assert event.payload_version == "v1"
    assert (event.phone_number_id, event.conversation_id, event.message_id) == (
        "555",
        "conv-v1",
        "wamid.v1",
    )


def test_non_json_body_is_kept_with_reason():
    delivery, [event] = parse(b"\xff\xfenot json", **{"X-Webhook-Event": "whatsapp.message.sent"})
    assert event.payload is None and "not JSON" in event.parse_error
    assert delivery.body == b"\xff\xfenot json"
    assert event.event_name == "whatsapp.message.sent"


def test_nul_escape_is_not_sent_to_jsonb():
    _, [event] = parse(b'{"message":{"id":"wamid.\\u0000x"}}')
    assert event.payload is None and "u0000" in event.parse_error
    assert event.message_id == "wamid.x"


def test_same_body_same_hash_whatever_the_key():
    a = parse(vectors.KAPSO_BODY, **{"X-Idempotency-Key": "one"})[1][0]
    b = parse(vectors.KAPSO_BODY, **{"X-Idempotency-Key": "two"})[1][0]
    assert a.idem_hash == b.idem_hash
    assert a.idem_hash != parse(vectors.KAPSO_BODY + b" ")[1][0].idem_hash


def test_odd_values_never_break_parsing():
    for body in [
        [],
        "str",
        1,
        None,
        {"conversation": "x"},
        {"message": {"id": {"a": 1}}},
        {"phone_number_id": 12345},
        {"type": 7, "batch": True, "data": [1, None, "x"]},
    ]:
        _, events = parse(body)
        assert events


def test_headers_are_kept_but_bounded():
    headers = CIMultiDict(
        {"X-Webhook-Source": "kapso", "Authorization": "Bearer nope", "X-Idempotency-Key": "k"}
    )
    delivery, _ = kapso.parse_delivery(b"{}", headers, "id", NOW)
    kept = orjson.loads(delivery.headers)
    assert kept["x-webhook-source"] == "kapso" and "authorization" not in kept
