"""Meta-kind webhooks end to end: signatures, handshake, log, and the same read models."""

import base64
import hashlib
import hmac
import itertools

import orjson
import pytest

from service.projections import runner
from tests import support, vectors

APP_SECRET = "meta-app-secret"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="


@pytest.fixture
def sink_settings(tmp_path):
    return support.make_settings(
        tmp_path, META_APP_SECRET=APP_SECRET, META_VERIFY_TOKEN="verify-me"
    )


def meta_body(*statuses, messages=(), contacts=None):
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
    }
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["messages"] = list(messages)
    if contacts:
        value["contacts"] = contacts
    return orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}
            ],
        }
    )


def st(state, ts, wamid=WAMID, **extra):
    return {
        "id": wamid,
        "status": state,
        "timestamp": str(ts),
        "recipient_id": "16505551234",
        **extra,
    }


async def post_meta(sink, raw, how="kapso", key=None):
    headers = {"Content-Type": "application/json"}
    if how == "kapso":
        headers["X-Webhook-Signature"] = support.sign(raw)
    elif how == "meta":
        headers["X-Hub-Signature-256"] = (
            "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        )
    headers["X-Idempotency-Key"] = key or hashlib.sha256(raw).hexdigest()
    return await sink.post(raw, headers, path="/webhooks/meta")


async def test_protocol_vector_with_kapso_signature(sink):
    headers = {
        "X-Webhook-Signature": vectors.META_SIGNATURE,
        "X-Idempotency-Key": vectors.META_SHA256,
    }
    status, doc, _ = await sink.post(vectors.META_BODY, headers, path="/webhooks/meta")
    assert (status, doc) == (200, {"stored": 1, "duplicates": 0})
    flag = await sink.pool.fetchval("SELECT key_is_body_sha256 FROM deliveries")
    assert flag is True
    assert (await sink.post(vectors.META_BODY, headers, path="/webhooks/meta"))[1] == {
        "stored": 0,
        "duplicates": 1,
    }


async def test_both_signature_paths_and_refusals(sink):
    raw = meta_body(st("sent", 1750030073))
    assert (await post_meta(sink, raw, "meta", key="not-the-hash"))[0] == 200
    assert await sink.pool.fetchval("SELECT key_is_body_sha256 FROM deliveries") is False
    other = meta_body(st("delivered", 1750030090))
    assert (await post_meta(sink, other, "kapso"))[0] == 200
    for how in ("none",):
        status, doc, _ = await post_meta(sink, meta_body(st("read", 1750030200)), how)
        assert status == 401 and "X-Webhook-Signature" in doc["detail"]
    forged = {"X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert (await sink.post(meta_body(st("read", 1)), forged, path="/webhooks/meta"))[0] == 401
    assert len(await sink.events()) == 2


async def test_meta_signature_refused_without_app_secret(database, tmp_path):
    sink = await support.start_sink(database, support.make_settings(tmp_path))
    try:
        raw = meta_body(st("sent", 1))
        assert (await post_meta(sink, raw, "meta"))[0] == 401
        assert await sink.events() == []
    finally:
        await support.stop_sink(sink)


async def test_handshake(sink):
    ok = "/webhooks/meta?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"
    async with sink.http.get(sink.url + ok) as resp:
        assert resp.status == 200 and await resp.text() == "1158201444"
    for bad in (
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1",
        "",
    ):
        async with sink.http.get(sink.url + "/webhooks/meta?" + bad) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "forbidden"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_statuses_in_every_order_give_one_message_row(sink, order):
    statuses = [
        st("sent", 1750030073, pricing={"category": "marketing"}),
        st("delivered", 1750030090),
        st("read", 1750030200),
    ]
    for i in order:
        assert (await post_meta(sink, meta_body(statuses[i])))[0] == 200
    await post_meta(sink, meta_body(statuses[order[0]]), key="resent")  # Meta re-sends one
    await runner.catch_up(sink.pool)
    _, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert doc["status"] == "read" and doc["read_without_delivered"] is False
    assert (doc["sent_at"], doc["delivered_at"], doc["read_at"]) == (
        "2025-06-15T23:27:53Z",
        "2025-06-15T23:28:10Z",
        "2025-06-15T23:30:00Z",
    )
    assert doc["direction"] == "outbound" and doc["pricing_category"] == "marketing"
    assert doc["contact_id"] == "16505551234" and doc["phone_number_id"] == "106540352242922"
    assert len(await sink.events()) == 3


async def test_failed_and_bsuid_only_recipient(sink):
    failed = st("failed", 1751142888, errors=[{"code": 131049, "title": "healthy ecosystem"}])
    bsuid = st(
        "read",
        1750030300,
        wamid="wamid.BSUID",
        recipient_id="",
        recipient_user_id="US.13491208655302741918",
    )
    await post_meta(
        sink,
        meta_body(failed, bsuid, contacts=[{"wa_id": "", "user_id": "US.13491208655302741918"}]),
    )
    await runner.catch_up(sink.pool)
    _, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert doc["status"] == "failed" and doc["error_code"] == 131049
    _, doc, _ = await sink.get("/v1/messages/wamid.BSUID")
    assert doc["contact_id"] == "US.13491208655302741918" and doc["read_without_delivered"] is True


async def test_inbound_meta_message_creates_an_inbound_row(sink):
    message = {
        "from": "16505551234",
        "from_user_id": "US.1349",
        "id": "wamid.MIN1",
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": "color?"},
    }
    await post_meta(sink, meta_body(messages=[message]))
    await runner.catch_up(sink.pool)
    _, doc, _ = await sink.get("/v1/messages/wamid.MIN1")
    assert (doc["direction"], doc["status"], doc["type"]) == ("inbound", "received", "text")
    assert doc["message_at"] == "2025-06-08T20:59:43Z" and doc["contact_id"] == "US.1349"


async def test_kapso_and_meta_delivery_of_the_same_status_is_one_row(sink):
    await post_meta(sink, meta_body(st("delivered", 1750030090)))
    kapso = {
        "message": {
            "id": WAMID,
            "timestamp": "1750030073",
            "type": "text",
            "kapso": {
                "direction": "outbound",
                "status": "sent",
                "statuses": [st("sent", 1750030073)],
            },
        },
        "conversation": {"id": "conv-both", "phone_number": "+16505551234"},
        "phone_number_id": "106540352242922",
    }
    await sink.send(kapso, event="whatsapp.message.sent")
    await runner.catch_up(sink.pool)
    rows = await sink.pool.fetch("SELECT * FROM messages")
    assert len(rows) == 1
    _, doc, _ = await sink.get(f"/v1/messages/{WAMID}")
    assert doc["status"] == "delivered" and doc["conversation_id"] == "conv-both"
    assert doc["sent_at"] == "2025-06-15T23:27:53Z"


async def test_other_fields_are_stored_verbatim_and_raw_kept(sink):
    raw = orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "message_template_status_update",
                            "value": {"event": "APPROVED", "message_template_id": 7},
                        },
                        {
                            "field": "user_preferences",
                            "value": {
                                "user_preferences": [
                                    {"category": "marketing_messages", "value": "stop"}
                                ]
                            },
                        },
                    ],
                }
            ],
        }
    )
    status, doc, _ = await post_meta(sink, raw)
    assert doc == {"stored": 2, "duplicates": 0}
    events = await sink.events()
    assert [e["event_name"] for e in events] == [
        "meta.message_template_status_update",
        "meta.user_preferences",
    ]
    assert events[0]["payload"]["value"]["event"] == "APPROVED" and events[0]["kind"] == "meta"
    assert await sink.pool.fetchval("SELECT body FROM deliveries") == raw
    status, delivery, _ = await sink.get(f"/v1/deliveries/{events[0]['body_sha256'].hex()}")
    assert status == 200 and base64.b64decode(delivery["body_base64"]) == raw
    assert delivery["kind"] == "meta" and delivery["key_is_body_sha256"] is True
    assert delivery["headers"]["x-idempotency-key"] == hashlib.sha256(raw).hexdigest()
    assert (await sink.get("/v1/deliveries/" + "0" * 64))[0] == 404
    assert (await sink.get("/v1/deliveries/xyz"))[0] == 400
    await runner.catch_up(sink.pool)
    _, proj, _ = await sink.get("/v1/projections")
    assert all(p["skipped"] == 2 for p in proj["projections"])
