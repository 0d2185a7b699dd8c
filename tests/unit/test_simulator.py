"""Unit tests for analytics.simulator: pure, no network and no database."""

import argparse
import hashlib
import hmac
import json
import re
import statistics
from collections import defaultdict

import aiohttp
import pytest

from analytics import simulator as sim
from tests import vectors

SECRET = "wh_sec_test_simulator"
SEED = 11
CONVERSATIONS = 60
HEX64 = re.compile(r"^[0-9a-f]{64}$")
STATUS_EVENTS = (sim.SENT, sim.DELIVERED, sim.READ, sim.FAILED)


@pytest.fixture(scope="module")
def stream() -> list[sim.Delivery]:
    return sim.generate(CONVERSATIONS, SEED, SECRET)


@pytest.fixture(scope="module")
def parsed(stream) -> list[tuple[sim.Delivery, dict]]:
    return [(d, json.loads(d.body)) for d in stream]


def _event(d: sim.Delivery) -> str:
    return d.headers["X-Webhook-Event"]


def _message_payloads(parsed):
    """Every message-event payload, batch items included."""
    for d, body in parsed:
        for item in body["data"] if body.get("batch") else [body]:
            if "message" in item:
                yield _event(d), item


def _iso(ts: str) -> str:
    return sim._iso(int(ts))


# --------------------------------------------------------------------------
# Determinism and signing
# --------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(stream):
    again = sim.generate(CONVERSATIONS, SEED, SECRET)
    assert [(d.headers, d.body, d.at) for d in again] == [(d.headers, d.body, d.at) for d in stream]


def test_different_seed_gives_different_stream(stream):
    other = sim.generate(CONVERSATIONS, SEED + 1, SECRET)
    assert {d.body for d in other}.isdisjoint({d.body for d in stream})


def test_default_start_is_fixed_epoch():
    a = sim.generate(3, 5, SECRET)
    b = sim.generate(3, 5, SECRET, start=sim.DEFAULT_START)
    assert [d.body for d in a] == [d.body for d in b]
    later = sim.generate(3, 5, SECRET, start=sim.DEFAULT_START + 3600)
    assert [round(d.at - 3600, 3) for d in later] == [d.at for d in a]


def test_smaller_run_is_prefix_of_larger_run():
    small = {
        json.loads(d.body).get("conversation", {}).get("id") for d in sim.generate(5, 3, SECRET)
    }
    large = {
        json.loads(d.body).get("conversation", {}).get("id") for d in sim.generate(9, 3, SECRET)
    }
    assert small - {None} <= large


def test_sign_matches_protocol_test_vector():
    assert sim.sign(vectors.SECRET.decode(), vectors.KAPSO_BODY) == vectors.KAPSO_SIGNATURE


def test_every_signature_verifies_over_raw_body(stream):
    for d in stream:
        sig = d.headers["X-Webhook-Signature"]
        assert HEX64.match(sig)
        want = hmac.new(SECRET.encode(), d.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(sig, want)


def test_headers_and_compact_utf8_bodies(stream):
    for d in stream:
        h = d.headers
        assert h["Content-Type"] == "application/json"
        assert h["X-Webhook-Payload-Version"] == "v2"
        assert h["X-Webhook-Event"] in sim.EVENT_NAMES
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            h["X-Idempotency-Key"],
        )
        obj = json.loads(d.body)
        assert json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() == d.body
    assert any(not d.body.isascii() for d in stream)  # raw UTF-8, not \u escapes


def test_stream_is_sorted_by_time(stream):
    assert [d.at for d in stream] == sorted(d.at for d in stream)
    assert stream[0].at >= sim.DEFAULT_START


# --------------------------------------------------------------------------
# Payload shapes
# --------------------------------------------------------------------------


def test_batches_are_well_formed(parsed):
    sizes = []
    for d, body in parsed:
        is_batch = bool(body.get("batch"))
        assert ("X-Webhook-Batch" in d.headers) == is_batch
        if not is_batch:
            continue
        info, data = body["batch_info"], body["data"]
        assert body["type"] == sim.RECEIVED == _event(d)
        assert d.headers["X-Webhook-Batch"] == "true"
        assert d.headers["X-Batch-Size"] == str(len(data)) == str(info["size"])
        assert info["window_ms"] == 5000
        assert info["last_sequence"] - info["first_sequence"] >= len(data) - 1
        for item in data:
            assert item["conversation"]["id"] == info["conversation_id"]
            assert item["message"]["kapso"]["phone_number_id"] == item["phone_number_id"]
            assert item["message"]["kapso"]["status"] == "received"
        sizes.append(len(data))
    assert 1 in sizes and max(sizes) > 1


def test_stream_has_every_event_kind(stream):
    assert {_event(d) for d in stream} == set(sim.EVENT_NAMES)


def test_message_variety(parsed):
    types, templates, categories, codes = set(), set(), set(), set()
    for _, item in _message_payloads(parsed):
        msg = item["message"]
        types.add((msg["kapso"]["direction"], msg["type"]))
        if msg["type"] == "image":
            assert msg["kapso"]["has_media"] is True
        if msg["type"] == "template":
            templates.add(msg["template"]["name"])
        for entry in msg["kapso"].get("statuses", []):
            if "pricing" in entry:
                categories.add(entry["pricing"]["category"])
            for err in entry.get("errors", []):
                assert {"code", "title", "message", "error_data"} <= set(err)
                assert err["error_data"]["details"]
                codes.add(err["code"])
    assert {("inbound", "text"), ("inbound", "image"), ("inbound", "reaction")} <= types
    assert {("outbound", "text"), ("outbound", "template")} <= types
    assert {"order_update", "welcome", "promo_nov"} & templates
    assert categories == {"marketing", "utility", "service"}
    assert codes and codes <= {131049, 131047, 131026, 130472, 131000}


def test_ids_look_real(parsed):
    uuid_re = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    numbers = set()
    for _, item in _message_payloads(parsed):
        assert item["message"]["id"].startswith("wamid.")
        assert uuid_re.fullmatch(item["conversation"]["id"])
        numbers.add(item["phone_number_id"])
    assert 2 <= len(numbers) <= 3
    assert all(n.isdigit() and len(n) == 15 for n in numbers)


def test_phone_number_ids_can_be_given():
    ids = ["111111111111111", "222222222222222"]
    parsed = [(d, json.loads(d.body)) for d in sim.generate(8, 2, SECRET, phone_number_ids=ids)]
    seen = {body["phone_number_id"] for d, body in parsed if not body.get("batch")}
    seen |= {item["phone_number_id"] for _, item in _message_payloads(parsed)}
    assert seen <= set(ids)


def test_contacts_with_and_without_phone(parsed):
    styles = set()
    for _, body in parsed:
        conv = body.get("conversation")
        if not conv:
            continue
        if "phone_number" not in conv:
            styles.add("missing")
            assert conv["business_scoped_user_id"].startswith("US.")
        elif conv["phone_number"] is None:
            styles.add("null")
            assert conv["business_scoped_user_id"].startswith("US.")
        else:
            assert re.fullmatch(r"\+1555\d{7}", conv["phone_number"])
            styles.add("bsuid" if "business_scoped_user_id" in conv else "phone")
    assert styles == {"missing", "null", "bsuid", "phone"}


def test_status_events_carry_cumulative_history(parsed):
    for event, item in _message_payloads(parsed):
        if event not in STATUS_EVENTS:
            continue
        msg = item["message"]
        history = msg["kapso"]["statuses"]
        assert msg["kapso"]["direction"] == "outbound"
        assert history[-1]["status"] == msg["kapso"]["status"] == event.rsplit(".", 1)[1]
        assert msg["timestamp"] == history[-1]["timestamp"]  # the triggering status time
        assert [int(e["timestamp"]) for e in history] == sorted(
            int(e["timestamp"]) for e in history
        )
        assert all(e["id"] == msg["id"] and isinstance(e["timestamp"], str) for e in history)


def test_read_without_delivered_exists(parsed):
    found = [
        item
        for event, item in _message_payloads(parsed)
        if event == sim.READ
        and "delivered" not in {e["status"] for e in item["message"]["kapso"]["statuses"]}
    ]
    assert found


def test_conversation_snapshots(parsed):
    kapso_present = kapso_absent = 0
    for _, item in _message_payloads(parsed):
        conv = item["conversation"]
        assert conv["updated_at"] == _iso(item["message"]["timestamp"])
        assert conv["created_at"] <= conv["updated_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", conv["updated_at"])
        if "kapso" in conv:
            kapso_present += 1
        else:
            kapso_absent += 1
    assert kapso_present and kapso_absent


def test_updated_at_increases_within_conversation(parsed):
    by_conv = defaultdict(list)
    for _, item in _message_payloads(parsed):
        by_conv[item["conversation"]["id"]].append(
            (int(item["message"]["timestamp"]), item["conversation"]["updated_at"])
        )
    for rows in by_conv.values():
        rows.sort()
        stamps = [u for _, u in rows]
        assert stamps == sorted(stamps)


def test_lifecycle_events(parsed):
    created, ended, inactive = {}, {}, []
    for d, body in parsed:
        event = _event(d)
        if event == sim.CREATED:
            created[body["conversation"]["id"]] = body
            assert body["conversation"]["kapso"]["messages_count"] == 0
        elif event == sim.ENDED:
            assert body["conversation"]["status"] == "ended"
            ended[body["conversation"]["id"]] = body
        elif event == sim.INACTIVE:
            assert body["since_message"]["whatsapp_message_id"].startswith("wamid.")
            assert body["inactivity"]["minutes"] > 0
            assert body["conversation"]["status"] == "active"
            inactive.append(body)
    assert len(created) == CONVERSATIONS
    assert 0.4 <= len(ended) / len(created) <= 0.8
    assert inactive


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


def test_statuses_arrive_out_of_order(parsed):
    first_seen: dict[tuple[str, str], int] = {}
    for pos, (event, item) in enumerate(_message_payloads(parsed)):
        if event in STATUS_EVENTS:
            first_seen.setdefault((item["message"]["id"], event), pos)
    early = [
        wamid
        for (wamid, event), pos in first_seen.items()
        if event != sim.SENT
        and (wamid, sim.SENT) in first_seen
        and pos < first_seen[(wamid, sim.SENT)]
    ]
    assert early


def test_exact_retries_and_new_key_duplicates(stream):
    by_key = defaultdict(list)
    by_body = defaultdict(set)
    for d in stream:
        by_key[d.headers["X-Idempotency-Key"]].append(d)
        by_body[d.body].add(d.headers["X-Idempotency-Key"])
    retried = [ds for ds in by_key.values() if len(ds) > 1]
    assert retried
    for ds in retried:  # a retry is the same request again, later
        assert all(x.headers == ds[0].headers and x.body == ds[0].body for x in ds)
        assert ds[0].at < ds[1].at
    assert any(len(keys) > 1 for keys in by_body.values())


def test_batch_fallback_resends_items_alone(stream):
    batch_items = {}
    for d in stream:
        body = json.loads(d.body)
        if body.get("batch"):
            for item in body["data"]:
                batch_items[sim._encode(item)] = d
    fallbacks = [d for d in stream if "X-Webhook-Batch" not in d.headers and d.body in batch_items]
    assert fallbacks
    for d in fallbacks:
        batch = batch_items[d.body]
        assert d.headers["X-Idempotency-Key"] != batch.headers["X-Idempotency-Key"]
        assert d.headers["X-Webhook-Event"] == sim.RECEIVED
        assert d.at > batch.at


def test_small_run_still_has_every_fault():
    summary = sim.summarize(sim.generate(3, 4, SECRET))
    kinds = summary["kinds"]
    assert kinds["retry"] and kinds["new_key_duplicate"]
    if summary["batches"]:
        assert kinds["batch_fallback"]


def test_rates_are_realistic():
    stream = sim.generate(300, 21, SECRET)
    summary = sim.summarize(stream)
    first = summary["kinds"]["first"]
    assert 0.3 <= summary["batch_items"] / summary["inbound_messages"] <= 0.5
    assert 0.02 <= summary["failed_messages"] / summary["outbound_messages"] <= 0.09
    assert 0.015 <= summary["kinds"]["retry"] / first <= 0.05
    assert summary["kinds"]["new_key_duplicate"] / first <= 0.025
    delivered, read = [], []
    for d in stream:
        if _event(d) not in (sim.DELIVERED, sim.READ):
            continue
        ts = {
            e["status"]: int(e["timestamp"])
            for e in json.loads(d.body)["message"]["kapso"]["statuses"]
        }
        if _event(d) == sim.DELIVERED and "sent" in ts:
            delivered.append(ts["delivered"] - ts["sent"])
        if _event(d) == sim.READ and "delivered" in ts:
            read.append(ts["read"] - ts["delivered"])
    assert 1 <= statistics.median(delivered) <= 4
    assert 30 <= statistics.median(read) <= 120
    assert 0.6 <= summary["events"][sim.READ] / summary["outbound_messages"] <= 0.85


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------


def test_summary_counts_add_up(stream, parsed):
    summary = sim.summarize(stream)
    assert summary["deliveries"] == len(stream)
    assert sum(summary["events"].values()) == len(stream)
    assert sum(summary["kinds"].values()) == len(stream)
    assert summary["kinds"]["key_reused"] == 0
    assert summary["kinds"]["first"] == len({d.headers["X-Idempotency-Key"] for d in stream}) - (
        summary["kinds"]["new_key_duplicate"] + summary["kinds"]["batch_fallback"]
    )
    assert summary["conversations"] == CONVERSATIONS
    assert summary["batch_items"] <= summary["inbound_messages"]
    assert summary["single_item_batches"] <= summary["batches"]
    assert summary["statuses_before_sent"] > 0
    assert summary["read_without_delivered"] > 0
    unique_batches = {d.body: body for d, body in parsed if body.get("batch")}  # distinct bodies
    assert summary["batches"] == len(unique_batches)
    assert summary["batch_items"] == sum(len(b["data"]) for b in unique_batches.values())


def test_summary_of_nothing():
    summary = sim.summarize([])
    assert summary["deliveries"] == 0 and sum(summary["kinds"].values()) == 0


# --------------------------------------------------------------------------
# Sending (with a fake session: no sockets)
# --------------------------------------------------------------------------


class _FakeResponse:
    def __init__(self, status: int):
        self.status = status

    async def read(self) -> bytes:
        return b"OK"


class _FakePost:
    def __init__(self, outcome):
        self.outcome = outcome

    async def __aenter__(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return _FakeResponse(self.outcome)

    async def __aexit__(self, *exc):
        return False


class _FakeSession:
    """Answers each delivery from a script keyed by idempotency key; default 200."""

    def __init__(self, script: dict[str, list]):
        self.script = script
        self.calls: list[tuple[str, bytes, dict]] = []

    def post(self, url, *, data, headers):
        self.calls.append((url, data, dict(headers)))
        outcomes = self.script.get(headers["X-Idempotency-Key"], [])
        return _FakePost(outcomes.pop(0) if outcomes else 200)


async def test_send_retries_transient_failures_with_same_headers():
    deliveries = sim.generate(2, 9, SECRET)[:5]
    keys = [d.headers["X-Idempotency-Key"] for d in deliveries]
    session = _FakeSession(
        {
            keys[0]: [503, 200],
            keys[1]: [aiohttp.ClientConnectionError("boom"), TimeoutError(), 200],
            keys[2]: [401],
            keys[3]: [500, 500, 500, 500, 500],
        }
    )
    counts = await sim.send(
        "http://sink/webhooks/kapso",
        deliveries,
        session=session,
        progress=False,
        backoff=0,
        concurrency=3,
    )
    assert counts == {200: 3, 401: 1, 500: 1}
    attempts = defaultdict(list)
    for url, data, headers in session.calls:
        assert url == "http://sink/webhooks/kapso"
        attempts[headers["X-Idempotency-Key"]].append((data, headers))
    assert [len(attempts[k]) for k in keys] == [2, 3, 1, 4, 1]
    for d in deliveries:
        assert all(
            data == d.body and h == d.headers
            for data, h in attempts[d.headers["X-Idempotency-Key"]]
        )


async def test_send_counts_unreachable_as_error():
    deliveries = sim.generate(1, 9, SECRET)[:2]
    key = deliveries[0].headers["X-Idempotency-Key"]
    session = _FakeSession({key: [OSError("refused")] * 3})
    counts = await sim.send(
        "http://sink/", deliveries, session=session, progress=False, backoff=0, retries=2
    )
    assert counts == {"error": 1, 200: 1}


# --------------------------------------------------------------------------
# Command line (file output only)
# --------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sim.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments_defaults():
    args = _args("--secret", "s")
    assert (args.conversations, args.seed, args.concurrency) == (50, 1, 16)
    assert args.url is None and args.out is None and args.no_progress is False


async def test_run_writes_jsonl_without_sending(tmp_path, capsys):
    out = tmp_path / "deliveries.jsonl"
    rc = await sim.run(
        _args("--secret", SECRET, "--conversations", "4", "--seed", "3", "--out", str(out))
    )
    assert rc == 0
    expected = sim.generate(4, 3, SECRET)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected)
    for line, d in zip(lines, expected, strict=True):
        row = json.loads(line)
        assert set(row) == {"headers", "body"}
        assert row["headers"] == d.headers
        assert row["body"].encode("utf-8") == d.body  # round-trips to the signed bytes
    assert "deliveries:" in capsys.readouterr().out


async def test_run_needs_url_or_out(capsys):
    rc = await sim.run(_args("--secret", SECRET, "--conversations", "1"))
    assert rc == 2
    assert "--url" in capsys.readouterr().err
