from datetime import UTC, datetime

import orjson
from multidict import CIMultiDict

from service.webhooks import meta
from tests import vectors

NOW = datetime(2026, 1, 1, tzinfo=UTC)
META = "106540352242922"


def status(wamid, state, ts="1750030200", **extra):
    return {"id": wamid, "status": state, "timestamp": ts, "recipient_id": "16505551234", **extra}


def body(*changes, entries=1):
    return orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": f"waba{e}", "changes": list(changes)} for e in range(entries)],
        }
    )


def messages_change(**value):
    return {
        "field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": META}, **value},
    }


def parse(raw, **headers):
    return meta.parse_delivery(raw, CIMultiDict(headers), "sid", NOW)


def test_protocol_vector_is_one_status_event():
    _, [event] = parse(vectors.META_BODY)
    assert event.event_name == meta.STATUS and event.message_id.startswith("wamid.HBgLMTY1")
    assert event.phone_number_id == META
    assert orjson.loads(event.payload)["status"]["status"] == "read"


def test_multi_entry_body_explodes_into_items():
    raw = body(
        messages_change(
            messages=[{"id": "wamid.in1", "from": "1650", "timestamp": "1", "type": "text"}],
            statuses=[status("wamid.a", "sent"), status("wamid.a", "delivered")],
            errors=[{"code": 130429, "title": "Rate limit hit"}],
        ),
        {"field": "account_update", "value": {"event": "DISABLED_UPDATE"}},
        entries=2,
    )
    _, events = parse(raw)
    names = [e.event_name for e in events]
    assert names.count(meta.MESSAGE) == 2 and names.count(meta.STATUS) == 4
    assert names.count(meta.ERRORS) == 2 and names.count("meta.account_update") == 2
    # the same item in two entries is the same fact: same key
    assert len({e.idem_hash for e in events}) == 5


def test_resent_notification_has_the_same_keys():
    one = parse(body(messages_change(statuses=[status("wamid.a", "read")])))[1]
    two = parse(body(messages_change(statuses=[status("wamid.a", "read", ts="1750030201")])))[1]
    assert one[0].idem_hash == two[0].idem_hash


def test_odd_bodies_are_one_unknown_event():
    for raw in [b"nope", b"[]", b'{"object":"x"}', b'{"entry":[{"changes":[1]}]}']:
        _, [event] = parse(raw)
        assert event.event_name == meta.UNKNOWN and event.parse_error


def test_key_matching_the_body_hash_is_recorded():
    assert (
        meta.key_matches_body(
            CIMultiDict({"X-Idempotency-Key": vectors.META_SHA256}), vectors.META_BODY
        )
        is True
    )
    assert (
        meta.key_matches_body(CIMultiDict({"X-Idempotency-Key": "x"}), vectors.META_BODY) is False
    )
    assert meta.key_matches_body(CIMultiDict(), vectors.META_BODY) is None


def test_lists_of_the_wrong_type_are_tolerated():
    for raw in [
        b'{"entry":5}',
        b'{"entry":[{"changes":7}]}',
        b'{"entry":[{"changes":[{"field":"messages","value":{"messages":3,"statuses":"x"}}]}]}',
    ]:
        _, [event] = parse(raw)
        assert event.event_name == meta.UNKNOWN
