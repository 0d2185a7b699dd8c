"""The query API over HTTP: parameters, pagination, auth, log replay, metrics, OpenAPI."""

import aiohttp
import pytest

from service.projections import runner
from tests import support


def conversation_event(i, status="active", phone="111"):
    return {
        "conversation": {
            "id": f"conv-{i:03d}",
            "status": status,
            "phone_number_id": phone,
            "updated_at": "2025-10-28T14:00:00Z",
        },
        "phone_number_id": phone,
    }


def sent(i, conv, seconds_to_deliver=2, phone="111"):
    base = 1761660000 + i * 60
    return [
        (
            {
                "message": {
                    "id": f"wamid.M{i}",
                    "timestamp": str(base),
                    "kapso": {
                        "direction": "outbound",
                        "statuses": [
                            {"id": f"wamid.M{i}", "status": "sent", "timestamp": str(base)}
                        ],
                    },
                },
                "conversation": {"id": conv},
                "phone_number_id": phone,
            },
            "whatsapp.message.sent",
        ),
        (
            {
                "message": {
                    "id": f"wamid.M{i}",
                    "timestamp": str(base + seconds_to_deliver),
                    "kapso": {
                        "direction": "outbound",
                        "statuses": [
                            {"id": f"wamid.M{i}", "status": "sent", "timestamp": str(base)},
                            {
                                "id": f"wamid.M{i}",
                                "status": "delivered",
                                "timestamp": str(base + seconds_to_deliver),
                            },
                        ],
                    },
                },
                "conversation": {"id": conv},
                "phone_number_id": phone,
            },
            "whatsapp.message.delivered",
        ),
    ]


async def test_conversation_pages_are_keyset_and_stable_under_inserts(sink):
    for i in range(7):
        await sink.send(
            conversation_event(i, "ended" if i % 2 else "active"),
            event="whatsapp.conversation.created",
        )
    await runner.catch_up(sink.pool)
    status, page1, _ = await sink.get("/v1/conversations?limit=3")
    assert status == 200 and len(page1["conversations"]) == 3 and page1["next_cursor"]
    for i in range(7, 9):  # inserts between pages
        await sink.send(conversation_event(i), event="whatsapp.conversation.created")
    await runner.catch_up(sink.pool)
    seen = [c["id"] for c in page1["conversations"]]
    cursor = page1["next_cursor"]
    while cursor:
        _, page, _ = await sink.get(f"/v1/conversations?limit=3&cursor={cursor}")
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
    assert seen == [f"conv-{i:03d}" for i in range(9)]
    _, ended, _ = await sink.get("/v1/conversations?status=ended&phone_number_id=111")
    assert [c["id"] for c in ended["conversations"]] == ["conv-001", "conv-003", "conv-005"]
    _, none, _ = await sink.get("/v1/conversations?updated_after=2999-01-01T00:00:00Z")
    assert none == {"conversations": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query, name",
    [
        ("/v1/conversations?limit=0", "limit"),
        ("/v1/conversations?limit=x", "limit"),
        ("/v1/conversations?status=open", "status"),
        ("/v1/conversations?cursor=%%%", "cursor"),
        ("/v1/conversations?updated_after=yesterday", "updated_after"),
        ("/v1/metrics/delivery?bucket=week", "bucket"),
        ("/v1/metrics/delivery?since=x", "since"),
        ("/v1/metrics/delivery?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ("/v1/events?after=-1", "after"),
        ("/v1/events?limit=5000", "limit"),
        ("/v1/conversations/x/messages?cursor=bm9wZQ", "cursor"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(sink, query, name):
    status, doc, _ = await sink.get(query)
    assert status == 400 and doc["error"] == "bad_parameter"
    assert doc["detail"].startswith(name + ":")


async def test_delivery_metrics(sink):
    for i, delay in enumerate([2, 4, 6, 8]):
        for body, event in sent(i, "conv-m", delay):
            await sink.send(body, event=event)
    for body, event in sent(9, "conv-m", 3, phone="222")[:1]:
        await sink.send(body, event=event)
    await runner.catch_up(sink.pool)
    status, doc, _ = await sink.get(
        "/v1/metrics/delivery?since=2025-10-28T00:00:00Z&until=2025-10-29T00:00:00Z&bucket=day"
    )
    assert status == 200 and doc["bucket"] == "day"
    by_phone = {b["phone_number_id"]: b for b in doc["buckets"]}
    assert by_phone["111"]["sent"] == 4 and by_phone["111"]["delivered"] == 4
    assert by_phone["111"]["sent_to_delivered_p50"] == pytest.approx(5.0)
    assert by_phone["111"]["sent_to_delivered_p90"] == pytest.approx(7.4)
    assert by_phone["222"]["sent"] == 1 and by_phone["222"]["delivered"] == 0
    assert by_phone["111"]["bucket_start"] == "2025-10-28T00:00:00Z"
    _, only, _ = await sink.get(
        "/v1/metrics/delivery?phone_number_id=222"
        "&since=2025-10-28T00:00:00Z&until=2025-10-29T00:00:00Z"
    )
    assert [b["phone_number_id"] for b in only["buckets"]] == ["222"]


async def test_delivery_latencies_carry_no_float_noise(sink):
    # percentile_cont over 1, 2 and 8 float seconds interpolates p90 to 6.800000000000001
    for i, delay in zip((20, 21, 22), (1, 2, 8), strict=True):
        for body, event in sent(i, "conv-r", delay, phone="333"):
            await sink.send(body, event=event)
    await runner.catch_up(sink.pool)
    _, doc, _ = await sink.get(
        "/v1/metrics/delivery?phone_number_id=333"
        "&since=2025-10-28T00:00:00Z&until=2025-10-29T00:00:00Z&bucket=day"
    )
    [bucket] = doc["buckets"]
    assert bucket["sent_to_delivered_p50"] == 2.0
    assert bucket["sent_to_delivered_p90"] == 6.8


async def test_event_replay_from_any_point(sink):
    for body, event in sent(1, "conv-e") + sent(2, "conv-f"):
        await sink.send(body, event=event)
    _, all_events, _ = await sink.get("/v1/events?limit=2")
    assert [e["message_id"] for e in all_events["events"]] == ["wamid.M1", "wamid.M1"]
    _, rest, _ = await sink.get(f"/v1/events?after={all_events['next_after']}")
    assert [e["message_id"] for e in rest["events"]] == ["wamid.M2", "wamid.M2"]
    assert rest["events"][0]["payload"]["message"]["id"] == "wamid.M2"
    assert len(rest["events"][0]["idem_hash"]) == 64
    _, by_conv, _ = await sink.get("/v1/events?conversation_id=conv-f")
    assert {e["conversation_id"] for e in by_conv["events"]} == {"conv-f"}
    _, by_name, _ = await sink.get(
        "/v1/events?event=whatsapp.message.delivered&message_id=wamid.M1"
    )
    assert [e["event_name"] for e in by_name["events"]] == ["whatsapp.message.delivered"]
    _, empty, _ = await sink.get("/v1/events?after=999999")
    assert empty == {"events": [], "next_after": 999999}


async def test_token_protects_v1_only(database, tmp_path):
    settings = support.make_settings(tmp_path, KAPSO_SINK_API_TOKEN="s3cret-token")
    sink = await support.start_sink(database, settings)
    try:
        assert (await sink.get("/v1/projections"))[0] == 401
        assert (await sink.get("/v1/projections", headers={"Authorization": "Bearer wrong"}))[
            0
        ] == 401
        status, doc, _ = await sink.get(
            "/v1/projections", headers={"Authorization": "Bearer s3cret-token"}
        )
        assert status == 200 and {p["name"] for p in doc["projections"]} == {
            "conversations",
            "messages",
        }
        assert (await sink.get("/healthz"))[0] == 200
    finally:
        await support.stop_sink(sink)


def test_non_loopback_host_needs_a_token(tmp_path):
    from service.settings import ConfigError, load

    with pytest.raises(ConfigError, match="KAPSO_SINK_API_TOKEN"):
        load(_env_file=None, KAPSO_SINK_HOST="0.0.0.0", KAPSO_SINK_DATA_DIR=str(tmp_path))
    assert (
        load(_env_file=None, KAPSO_SINK_HOST="0.0.0.0", KAPSO_SINK_API_TOKEN="t").host == "0.0.0.0"
    )


def test_bad_settings_name_the_variable():
    from service.settings import ConfigError, load

    with pytest.raises(ConfigError, match="KAPSO_SINK_PORT"):
        load(_env_file=None, KAPSO_SINK_PORT="eighty")
    with pytest.raises(ConfigError, match="KAPSO_SINK_COMMIT_TIMEOUT"):
        load(_env_file=None, KAPSO_SINK_COMMIT_TIMEOUT="30")
    with pytest.raises(ConfigError, match="KAPSO_SINK_PROJECTOR_INTERVAL"):
        load(_env_file=None, KAPSO_SINK_PROJECTOR_INTERVAL="-1")
    assert load(_env_file=None, KAPSO_SINK_PROJECTOR_INTERVAL="0.2").projector_interval == 0.2


async def test_every_response_carries_a_request_id(sink):
    """A client's X-Request-Id is echoed (and logged); without one each response gets its own."""
    given = {"X-Request-Id": "trace-42"}
    raw, headers = support.delivery({"message": {"id": "wamid.RID"}})
    status, _, answer = await sink.post(raw, {**headers, **given})
    assert (status, answer["X-Request-Id"]) == (200, "trace-42")
    ids = set()
    for n in range(3):
        _, _, answer = await sink.send({"message": {"id": f"wamid.RID{n}"}})
        ids.add(answer["X-Request-Id"])
    async with sink.http.get(sink.url + "/healthz") as resp:
        ids.add(resp.headers["X-Request-Id"])
    assert len(ids) == 4 and all(len(i) == 24 and int(i, 16) >= 0 for i in ids)


async def test_prometheus_metrics(sink):
    await sink.send({"message": {"id": "wamid.X"}}, event="whatsapp.message.received")
    await sink.send({"message": {"id": "wamid.X"}}, event="whatsapp.message.received")
    raw, headers = support.delivery({"a": 1})
    headers["X-Webhook-Signature"] = "0" * 64
    await sink.post(raw, headers)
    async with sink.http.get(sink.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'kapso_sink_events_stored_total{event="whatsapp.message.received"} 1.0' in text
    assert 'kapso_sink_events_duplicate_total{event="whatsapp.message.received"} 1.0' in text
    assert "kapso_sink_signature_failures_total 1.0" in text
    assert (
        'kapso_sink_request_seconds_count{method="POST",route="/webhooks/kapso",status="200"} 2.0'
        in text
    )
    assert 'kapso_sink_projection_lag_events{projection="messages"} 1.0' in text
    assert "kapso_sink_projection_lag_seconds" in text


async def test_metric_labels_do_not_grow_with_unusual_methods(sink):
    webdav = ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "SEARCH")
    for method in webdav:
        async with sink.http.request(method, sink.url + "/healthz") as resp:
            assert resp.status == 405
    async with sink.http.get(sink.url + "/metrics") as resp:
        text = await resp.text()
    assert not any(method in text for method in webdav)
    assert 'method="other",route="unmatched",status="405"} 5.0' in text


async def test_openapi_covers_every_route(sink):
    status, doc, _ = await sink.get("/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    served = {
        (r.method, r.resource.canonical)
        for r in sink.server.app.router.routes()
        if r.method != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served <= documented | {("GET", "/openapi.json")}
    refs = {s.rsplit("/", 1)[1] for s in _refs(doc["paths"])}
    assert refs <= set(doc["components"]["schemas"])


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


async def test_api_errors_are_json_even_for_odd_requests(sink):
    async with sink.http.request("DELETE", sink.url + "/v1/events") as resp:
        assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"
    async with aiohttp.ClientSession() as http:
        async with http.get(sink.url + "/v1/conversations?limit=%FF") as resp:
            assert resp.status == 400
