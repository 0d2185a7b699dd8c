import asyncio
import hashlib
import json

import orjson
import pytest

from service import db
from tests import support, vectors

RECEIVED = "whatsapp.message.received"


def message(i=0, conversation="c63ced48-1283-4d55-8c8d-930f525aa0e5"):
    return {
        "message": {
            "id": f"wamid.TEST{i:04d}",
            "timestamp": "1730092800",
            "type": "text",
            "text": {"body": f"hola {i} ¿qué tal? 👋"},
            "kapso": {"direction": "inbound", "status": "received"},
        },
        "conversation": {
            "id": conversation,
            "phone_number": "+15551234567",
            "status": "active",
            "phone_number_id": "123456789012345",
        },
        "is_new_conversation": False,
        "phone_number_id": "123456789012345",
    }


def batch(n):
    return {
        "type": RECEIVED,
        "batch": True,
        "data": [message(i) for i in range(n)],
        "batch_info": {
            "size": n,
            "window_ms": 5000,
            "first_sequence": 1,
            "last_sequence": n,
            "conversation_id": "c63ced48-1283-4d55-8c8d-930f525aa0e5",
        },
    }


async def test_protocol_vector_is_stored_byte_for_byte(sink):
    headers = {
        "X-Webhook-Event": RECEIVED,
        "X-Webhook-Signature": vectors.KAPSO_SIGNATURE,
        "X-Idempotency-Key": "3b1f2f5e-7a4c-4d2e-9b0a-8e6f1c2d4a55",
        "X-Webhook-Payload-Version": "v2",
        "Content-Type": "application/json",
    }
    status, doc, _ = await sink.post(vectors.KAPSO_BODY, headers)
    assert (status, doc) == (200, {"stored": 1, "duplicates": 0})
    [event] = await sink.events()
    assert event["event_name"] == RECEIVED
    assert event["payload"]["message"]["text"]["body"] == "Hola ¿qué tal? 👋"
    assert event["message_id"] == "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUY5"
    assert event["conversation_id"] == "c63ced48-1283-4d55-8c8d-930f525aa0e5"
    assert event["phone_number_id"] == "123456789012345"
    assert event["idempotency_key"] == "3b1f2f5e-7a4c-4d2e-9b0a-8e6f1c2d4a55"
    assert event["secret_id"] == hashlib.sha256(vectors.SECRET).hexdigest()[:8]
    raw = await sink.pool.fetchval(
        "SELECT body FROM deliveries WHERE body_sha256 = $1", event["body_sha256"]
    )
    assert raw == vectors.KAPSO_BODY


async def test_reserialised_signature_is_401_and_nothing_stored(sink):
    headers = {
        "X-Webhook-Event": RECEIVED,
        "X-Webhook-Signature": vectors.KAPSO_RESERIALISED_SIGNATURE,
    }
    status, doc, _ = await sink.post(vectors.KAPSO_BODY, headers)
    assert status == 401 and doc["error"] == "invalid_signature"
    assert await sink.events() == []
    assert await sink.pool.fetchval("SELECT count(*) FROM deliveries") == 0


@pytest.mark.parametrize("signature", [None, "", "abc", "g" * 64, "é" * 64, "0" * 64])
async def test_bad_signatures_are_401_with_a_reason(sink, signature):
    raw = support.dumps(message())
    headers = {"X-Webhook-Event": RECEIVED}
    if signature is not None:
        headers["X-Webhook-Signature"] = signature
    encoded = {k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}
    status, doc, _ = await sink.post(raw, encoded)
    assert status == 401
    assert doc["error"] == "invalid_signature" and doc["detail"]
    assert await sink.events() == []


async def test_rotation_accepts_both_secrets_and_records_which(sink):
    s1 = await sink.send(message(1), secret=support.SECRET)
    s2 = await sink.send(message(2), secret=support.OLD_SECRET)
    s3 = await sink.send(message(3), secret="some-other-secret")
    assert [s1[0], s2[0], s3[0]] == [200, 200, 401]
    ids = [e["secret_id"] for e in await sink.events()]
    assert ids == [
        hashlib.sha256(s.encode()).hexdigest()[:8] for s in (support.SECRET, support.OLD_SECRET)
    ]
    for event in await sink.events():
        assert support.SECRET not in json.dumps(dict(event), default=str)


async def test_retry_with_same_key_is_acknowledged_once(sink):
    raw, headers = support.delivery(message(), key="retry-key")
    first = await sink.post(raw, headers)
    second = await sink.post(raw, headers)
    assert first[1] == {"stored": 1, "duplicates": 0}
    assert (second[0], second[1]) == (200, {"stored": 0, "duplicates": 1})
    assert len(await sink.events()) == 1


async def test_replay_under_a_new_key_is_stored_once(sink):
    raw, headers = support.delivery(message(), key="first-key")
    await sink.post(raw, headers)
    headers["X-Idempotency-Key"] = "second-key"
    status, doc, _ = await sink.post(raw, headers)
    assert (status, doc) == (200, {"stored": 0, "duplicates": 1})
    assert [e["idempotency_key"] for e in await sink.events()] == ["first-key"]


async def test_batch_of_one(sink):
    status, doc, _ = await sink.send(batch(1), **{"X-Webhook-Batch": "true", "X-Batch-Size": "1"})
    assert (status, doc) == (200, {"stored": 1, "duplicates": 0})
    [event] = await sink.events()
    assert event["batch_index"] == 0 and event["batch_info"]["size"] == 1
    assert event["payload"] == message(0)


async def test_batch_of_100_then_its_retry(sink):
    raw, headers = support.delivery(
        batch(100), **{"X-Webhook-Batch": "true", "X-Batch-Size": "100"}
    )
    assert (await sink.post(raw, headers))[1] == {"stored": 100, "duplicates": 0}
    assert (await sink.post(raw, headers))[1] == {"stored": 0, "duplicates": 100}
    events = await sink.events()
    assert [e["batch_index"] for e in events] == list(range(100))
    assert [e["message_id"] for e in events] == [f"wamid.TEST{i:04d}" for i in range(100)]
    assert await sink.pool.fetchval("SELECT count(*) FROM deliveries") == 1


async def test_batch_item_resent_alone_is_a_new_delivery(sink):
    await sink.send(batch(2), **{"X-Webhook-Batch": "true"})
    status, doc, _ = await sink.send(message(1))
    assert doc == {"stored": 1, "duplicates": 0}
    assert len(await sink.events()) == 3


async def test_v1_body(sink):
    body = {
        "message": {
            "id": "wamid.v1",
            "message_type": "text",
            "content": "hi",
            "direction": "inbound",
        },
        "conversation": {"id": "conv-v1", "whatsapp_config_id": "cfg-1"},
        "whatsapp_config": {"id": "cfg-1", "phone_number_id": "555000"},
    }
    status, doc, _ = await sink.send(body, **{"X-Webhook-Payload-Version": "v1"})
    assert status == 200 and doc["stored"] == 1
    [event] = await sink.events()
    assert (event["payload_version"], event["phone_number_id"]) == ("v1", "555000")


@pytest.mark.parametrize(
    "event_name, body",
    [
        ("whatsapp.brand_new.thing", {"anything": {"at": "all"}}),
        ("workflow.execution.failed", {"event": "workflow.execution.failed", "project_id": "p"}),
        ("whatsapp.phone_number.created", {"phone_number_id": "1", "project": {"id": "p"}}),
        (None, {"event": "project.event", "name": "x.y"}),
    ],
)
async def test_unknown_and_project_events_are_stored_verbatim(sink, event_name, body):
    status, doc, _ = await sink.send(body, event=event_name)
    assert (status, doc) == (200, {"stored": 1, "duplicates": 0})
    [event] = await sink.events()
    assert event["payload"] == body
    assert event["event_name"] == (event_name or "project.event")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json at all",
        b"\xff\xfe\x00binary",
        b"",
        b'{"a":"\\u0000"}',
        b'{"a":"\\ud800"}',
        b"[1,2,3]",
    ],
)
async def test_verified_odd_bodies_are_stored_and_acknowledged(sink, raw):
    status, doc, _ = await sink.send(raw, **{"Content-Type": "text/plain"})
    assert (status, doc) == (200, {"stored": 1, "duplicates": 0})
    [event] = await sink.events()
    body = await sink.pool.fetchval("SELECT body FROM deliveries")
    assert body == raw
    if raw == b"[1,2,3]":
        assert event["payload"] == [1, 2, 3]
    else:
        assert event["payload"] is None and event["parse_error"]


async def test_body_over_the_limit_is_413(database, tmp_path):
    settings = support.make_settings(tmp_path, KAPSO_SINK_MAX_BODY_BYTES=4096)
    sink = await support.start_sink(database, settings)
    try:
        big = {"pad": "x" * 5000}
        status, doc, _ = await sink.send(big)
        assert status == 413 and doc["error"] == "body_too_large"
        assert await sink.events() == []
        assert (await sink.send({"pad": "x" * 100}))[0] == 200
    finally:
        await support.stop_sink(sink)


async def test_health_and_readiness(sink):
    assert (await sink.get("/healthz"))[:2] == (200, {"status": "ok"})
    status, doc, _ = await sink.get("/readyz")
    assert status == 200 and doc["checks"]["migrations"] == "ok"


async def test_readiness_holds_to_the_schema_the_running_code_expects(sink, tmp_path, monkeypatch):
    # migration files changing under a running process (a deploy in place, or a checkout
    # moving on) must not turn it unready: it still runs the code it started with
    for path in db.MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "9999_later.sql").write_text("SELECT 1;")
    monkeypatch.setattr(db, "MIGRATIONS_DIR", tmp_path)
    status, doc, _ = await sink.get("/readyz")
    assert status == 200 and doc["checks"]["migrations"] == "ok"


async def test_unknown_route_and_method_are_json(sink):
    status, doc, _ = await sink.get("/nope")
    assert status == 404 and doc["error"] == "not_found"
    status, doc, _ = await sink.get("/webhooks/kapso")
    assert status == 405 and doc["error"] == "method_not_allowed"


async def test_concurrent_requests_share_commits_and_all_land(sink):
    bodies = [support.delivery(message(i)) for i in range(200)]
    results = await asyncio.gather(*(sink.post(raw, h) for raw, h in bodies))
    assert all(r[:2] == (200, {"stored": 1, "duplicates": 0}) for r in results)
    events = await sink.events()
    assert len(events) == 200
    assert len({e["idem_hash"] for e in events}) == 200


async def test_response_comes_only_after_commit(sink):
    # a second connection sees the row as soon as the 200 is in hand
    status, _, _ = await sink.send(message(7))
    assert status == 200
    assert (
        await sink.pool.fetchval("SELECT count(*) FROM events WHERE message_id = 'wamid.TEST0007'")
        == 1
    )


async def test_payload_round_trips_as_json(sink):
    await sink.send(batch(2), **{"X-Webhook-Batch": "true"})
    rows = await sink.pool.fetch("SELECT payload::text AS p FROM events ORDER BY position")
    assert orjson.loads(rows[1]["p"]) == message(1)
