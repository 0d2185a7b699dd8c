"""Seeded simulator of signed Kapso v2 webhook traffic, plus an HTTP sender.

`generate()` plays out a day of WhatsApp conversations and turns them into the
deliveries Kapso would POST to a phone-number webhook (payload shapes follow
the team's Kapso protocol notes, sections 2-10).  It also injects the faults a receiver
must survive: batched inbound messages, status events out of order, exact
retries, the same body under a new idempotency key, and batch fallback.

Everything is driven by `random.Random` instances derived from the seed, so the
same arguments always give byte-identical deliveries.  Conversation *i* has its
own generator, so a larger run contains the conversations of a smaller one.

    python -m analytics.simulator --secret S --conversations 20 --out deliveries.jsonl
    python -m analytics.simulator --secret S --url http://127.0.0.1:8080/webhooks/kapso
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

try:  # optional progress bar
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - tqdm is a project dependency
    _tqdm = None

DEFAULT_START = 1767225600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0

RECEIVED = "whatsapp.message.received"
SENT = "whatsapp.message.sent"
DELIVERED = "whatsapp.message.delivered"
READ = "whatsapp.message.read"
FAILED = "whatsapp.message.failed"
CREATED = "whatsapp.conversation.created"
INACTIVE = "whatsapp.conversation.inactive"
ENDED = "whatsapp.conversation.ended"
EVENT_NAMES = (CREATED, RECEIVED, SENT, DELIVERED, READ, FAILED, INACTIVE, ENDED)

# Buffering (protocol section 7): debounce window and size cap per batch.
BUFFER_WINDOW_MS = 5000
MAX_BUFFER_SIZE = 20

# Behaviour knobs; rates are per burst, message, conversation or delivery.
BUFFERED_BURST_RATE = 0.40  # inbound bursts that go through the buffer
BUSINESS_OPENER_RATE = 0.30  # conversations opened by a template
FAIL_RATE = 0.05  # outbound messages ending in `failed`
FAIL_WITHOUT_SENT_RATE = 0.25  # of those, rejected before any `sent`
READ_WITHOUT_DELIVERED_RATE = 0.03  # Meta skips `delivered` when read at once
READ_RATE = 0.72  # delivered messages that get read (~70% overall)
CHAT_OPEN_RATE = 0.15  # of those, read within seconds (chat already open)
ENDED_RATE = 0.60  # conversations that end within the run
RETRY_RATE = 0.025  # deliveries Kapso retries (same key and body), ~3% copies
NEW_KEY_DUPLICATE_RATE = 0.01  # same body re-sent under a fresh key
BATCH_FALLBACK_RATE = 0.02  # batches whose items are re-sent one by one
RETRY_STEPS = (10.0, 40.0, 90.0)  # Kapso's documented retry gaps, seconds

ERRORS = {
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "Meta limited marketing messages to this user to keep engagement healthy.",
    ),
    131047: (
        "Re-engagement message",
        "More than 24 hours passed since the customer last wrote, so only a template can be sent.",
    ),
    131026: (
        "Message undeliverable",
        "The recipient could not be reached; the number may not use WhatsApp or the app is outdated.",
    ),
    130472: (
        "User's number is part of an experiment",
        "Meta is running an experiment that includes this user's number.",
    ),
    131000: ("Something went wrong", "The message failed for an unknown reason."),
}
# Which errors can hit which kind of message (by pricing category).
ERRORS_BY_CATEGORY = {
    "service": (131047, 131026, 131000),  # free-form text
    "marketing": (131049, 130472, 131026, 131000),
    "utility": (131026, 131000),
}
ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# (template name, pricing category, language)
TEMPLATES = (
    ("order_update", "utility", "en_US"),
    ("welcome", "marketing", "es_MX"),
    ("promo_nov", "marketing", "en_US"),
    ("appointment_reminder", "utility", "pt_BR"),
)

NAMES = (
    "Ana Ruiz",
    "Bruno Costa",
    "Chloé Martin",
    "Deepa Iyer",
    "Eli Cohen",
    "Fatima Zahra",
    "Grace Okafor",
    "Hiro Tanaka",
    "Iván Peña",
    "Jonas Berg",
    "Kemal Aydın",
    "Lucía Gómez",
    "Maya Patel",
    "Noah Smith",
    "Olga Ivanova",
    "Pedro Alves",
)
CUSTOMER_TEXTS = (
    "Hi! Did my package leave the warehouse yet?",
    "Can I change the delivery address?",
    "Hola ¿qué tal? 👋",
    "¿Tienen envío a Monterrey?",
    "Thanks, that helps 🙏",
    "ok",
    "What time do you open on Saturday?",
    "Obrigado! Chegou tudo certo.",
    "I think I was charged twice",
    "Necesito la factura, por favor",
    "Is the blue one still in stock?",
)
AGENT_TEXTS = (
    "Thanks for writing in! Let me look that up.",
    "Your order leaves today and should arrive in 2–3 days.",
    "Claro, ya lo reviso 😊",
    "Could you share the order number?",
    "Done, the address is updated.",
    "On Saturdays we are open 9:00–14:00.",
)
CAPTIONS = ("Broken box", "This one", "receipt 📄", "")
TRANSCRIPTS = ("Hi, I need help with my order", "Can you call me back later?")
PLACES = (
    ("Main St store", "12 Main St, Springfield", 39.7817, -89.6501),
    ("Casa", "Av. Reforma 222, CDMX", 19.4270, -99.1677),
)
EMOJIS = ("👍", "❤️", "😂", "🙏")


@dataclass(frozen=True)
class Delivery:
    """One HTTP POST as Kapso would send it."""

    headers: dict[str, str]
    body: bytes  # exactly the signed bytes
    at: float  # simulated unix time of sending


def sign(secret: str, body: bytes) -> str:
    """Kapso's X-Webhook-Signature: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the way Kapso serialises bodies."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------
# Small random helpers
# --------------------------------------------------------------------------


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * rng.lognormvariate(0.0, sigma)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def _wamid(rng: random.Random, digits: str, outbound: bool) -> str:
    """A wamid built like Meta's: base64 of a small record holding the number and an id."""
    hex_id = f"{rng.getrandbits(80):020X}".encode()
    raw = (
        b"\x1c\x18"
        + bytes([len(digits)])
        + digits.encode()
        + b"\x15\x02\x00"
        + (b"\x11" if outbound else b"\x12")
        + b"\x18\x14"
        + hex_id
        + b"\x00"
    )
    return "wamid." + base64.b64encode(raw).decode()


def _net(rng: random.Random) -> float:
    """Kapso processing plus network latency for one delivery."""
    return rng.uniform(0.05, 0.6)


# --------------------------------------------------------------------------
# The simulated world
# --------------------------------------------------------------------------


@dataclass
class _Contact:
    name: str
    phone: str | None  # E.164, "+1555..."
    bsuid: str | None  # business-scoped user id, "US.1349..."
    phone_style: str  # how a missing phone shows up: "present", "null" or "missing"
    username: str | None
    wamid_digits: str  # number baked into this contact's wamids


@dataclass
class _Message:
    t: float  # received from / handed to WhatsApp
    direction: str
    wamid: str
    kapso_id: str  # Kapso's own message id (appears in since_message)
    type: str
    content: dict  # the type-specific object, e.g. {"body": "hi"}
    kapso_extra: dict  # has_media, content, media_* ...
    preview: str | None  # conversation.kapso.last_message_text
    origin: str = "cloud_api"
    seq: int = 0  # Kapso's per-conversation delivery sequence
    statuses: list[tuple[float, dict]] = field(default_factory=list)  # outbound only


@dataclass
class _Burst:
    buffered: bool
    messages: list[_Message] = field(default_factory=list)


@dataclass
class _Conversation:
    id: str
    phone_number_id: str
    contact: _Contact
    created_at: float
    inactivity_minutes: int
    messages: list[_Message] = field(default_factory=list)
    bursts: list[_Burst] = field(default_factory=list)
    ended_at: float | None = None
    inactive: list[tuple[float, _Message]] = field(default_factory=list)


@dataclass
class _Event:
    at: float
    name: str
    body: dict
    items: list[dict] | None = None  # batch items, for batched deliveries


def _phone_number_ids(rng: random.Random) -> list[str]:
    return [_digits(rng, 15) for _ in range(rng.randint(2, 3))]


def _make_contact(rng: random.Random) -> _Contact:
    name = rng.choice(NAMES)
    phone = "+1555" + "".join(str(rng.randint(0, 9)) for _ in range(7))
    bsuid = "US." + _digits(rng, 20)
    roll = rng.random()
    if roll < 0.55:  # classic phone-only contact
        return _Contact(name, phone, None, "present", None, phone[1:])
    if roll < 0.85:  # phone plus BSUID
        return _Contact(name, phone, bsuid, "present", None, phone[1:])
    # BSUID-only user (username adopter): no phone at all
    username = "@" + name.split()[0].lower() + str(rng.randint(10, 99))
    style = rng.choice(("null", "missing"))
    return _Contact(name, None, bsuid, style, username, _digits(rng, 11))


def _put_phone(target: dict, key: str, contact: _Contact, *, plus: bool = True) -> None:
    """Set a phone field, honouring the contact's way of lacking one."""
    if contact.phone_style == "missing":
        return
    if contact.phone is None:
        target[key] = None
    else:
        target[key] = contact.phone if plus else contact.phone[1:]


# --------------------------------------------------------------------------
# Message content
# --------------------------------------------------------------------------


def _media(rng: random.Random, filename: str, content_type: str, size: int) -> dict:
    url = f"https://api.kapso.ai/media/{_uuid(rng)}/{filename}"
    return {
        "content": f"Attached ({filename}) [Size: {size // 1024} KB | Type: {content_type}] URL: {url}",
        "media_url": url,
        "media_data": {
            "url": url,
            "filename": filename,
            "content_type": content_type,
            "byte_size": size,
        },
    }


def _text_in(rng, conv, targets):
    body = rng.choice(CUSTOMER_TEXTS)
    return {"body": body}, {"has_media": False, "content": body}, body


def _image_in(rng, conv, targets):
    caption = rng.choice(CAPTIONS)
    content = {"id": _digits(rng, 16)}
    extra = {
        "has_media": True,
        **_media(rng, "photo.jpg", "image/jpeg", rng.randint(40, 900) * 1024),
    }
    if caption:
        content["caption"] = caption
        extra["content"] = f"{caption} {extra['content']}"
        extra["message_type_data"] = {"caption": caption}
    return content, extra, caption or "[image]"


def _audio_in(rng, conv, targets):
    text = rng.choice(TRANSCRIPTS)
    extra = {"has_media": True, **_media(rng, "voice.ogg", "audio/ogg", rng.randint(8, 200) * 1024)}
    extra["content"] += f" Transcript: {text}"
    extra["transcript"] = {"text": text}
    return {"id": _digits(rng, 16)}, extra, text


def _location_in(rng, conv, targets):
    name, address, lat, lon = rng.choice(PLACES)
    content = {"latitude": lat, "longitude": lon, "name": name, "address": address}
    return content, {"has_media": False, "content": f"Location: {name}, {address}"}, name


def _reaction_in(rng, conv, targets):
    emoji = rng.choice(EMOJIS)
    content = {"message_id": rng.choice(targets).wamid, "emoji": emoji}
    return content, {"has_media": False}, emoji


INBOUND_KINDS = {  # type -> (builder, weight)
    "text": (_text_in, 64),
    "image": (_image_in, 14),
    "reaction": (_reaction_in, 10),
    "audio": (_audio_in, 6),
    "location": (_location_in, 6),
}


def _inbound_message(rng: random.Random, conv: _Conversation, t: float) -> _Message:
    kinds = list(INBOUND_KINDS)
    kind = rng.choices(kinds, weights=[INBOUND_KINDS[k][1] for k in kinds])[0]
    targets = [m for m in conv.messages if m.direction == "outbound"]
    if kind == "reaction" and not targets:
        kind = "text"
    content, extra, preview = INBOUND_KINDS[kind][0](rng, conv, targets)
    wamid = _wamid(rng, conv.contact.wamid_digits, outbound=False)
    return _Message(t, "inbound", wamid, _uuid(rng), kind, content, extra, preview)


def _pricing(category: str) -> dict:
    service = category == "service"
    return {
        "billable": not service,
        "pricing_model": "PMP",
        "type": "free_customer_service" if service else "regular",
        "category": category,
    }


def _outbound_message(rng: random.Random, conv: _Conversation, t: float, template: bool):
    """Return (message, pricing) for an agent text or a template."""
    wamid = _wamid(rng, conv.contact.wamid_digits, outbound=True)
    origin = "business_app" if rng.random() < 0.05 else "cloud_api"
    if not template:
        body = rng.choice(AGENT_TEXTS)
        m = _Message(
            t,
            "outbound",
            wamid,
            _uuid(rng),
            "text",
            {"body": body},
            {"has_media": False},
            body,
            origin,
        )
        return m, _pricing("service")
    name, category, lang = rng.choice(TEMPLATES)
    first_name = conv.contact.name.split()[0]
    content = {
        "name": name,
        "language": {"code": lang},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": first_name}]}],
    }
    m = _Message(
        t,
        "outbound",
        wamid,
        _uuid(rng),
        "template",
        content,
        {"has_media": False},
        f"[template] {name}",
        origin,
    )
    return m, _pricing(category)


# --------------------------------------------------------------------------
# Outbound status history (Meta's sent / delivered / read / failed)
# --------------------------------------------------------------------------


def _status_entry(
    m: _Message, contact: _Contact, status: str, t: float, **extra
) -> tuple[float, dict]:
    entry = {
        "id": m.wamid,
        "status": status,
        "timestamp": str(int(t)),
        "recipient_id": contact.phone[1:] if contact.phone else "",
    }
    if contact.bsuid:
        entry["recipient_user_id"] = contact.bsuid
    entry.update(extra)
    return t, entry


def _failure(rng: random.Random, category: str) -> dict:
    code = rng.choice(ERRORS_BY_CATEGORY[category])
    title, details = ERRORS[code]
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": ERROR_HREF,
    }


def _status_history(rng: random.Random, m: _Message, contact: _Contact, pricing: dict):
    """Chronological Meta statuses for one outbound message."""
    sent_t = m.t + rng.uniform(0.2, 1.5)
    if rng.random() < FAIL_RATE:
        history = []
        fail_t = sent_t
        if rng.random() >= FAIL_WITHOUT_SENT_RATE:
            history.append(_status_entry(m, contact, "sent", sent_t, pricing=dict(pricing)))
            fail_t = sent_t + _lognormal(rng, 3.0, 1.0)
        history.append(
            _status_entry(m, contact, "failed", fail_t, errors=[_failure(rng, pricing["category"])])
        )
        return history
    history = [_status_entry(m, contact, "sent", sent_t, pricing=dict(pricing))]
    delivered_t = sent_t + _lognormal(rng, 2.0, 0.9)
    skip_delivered = rng.random() < READ_WITHOUT_DELIVERED_RATE
    if not skip_delivered:
        history.append(_status_entry(m, contact, "delivered", delivered_t, pricing=dict(pricing)))
    if skip_delivered or rng.random() < READ_RATE:
        chat_open = rng.random() < CHAT_OPEN_RATE  # read almost at once
        read_t = delivered_t + (rng.uniform(0.2, 3.0) if chat_open else _lognormal(rng, 80.0, 1.3))
        extra = {"pricing": dict(pricing)} if skip_delivered else {}
        history.append(_status_entry(m, contact, "read", read_t, **extra))
    return history


# --------------------------------------------------------------------------
# Planning one conversation
# --------------------------------------------------------------------------


def _turn_gap(rng: random.Random) -> float:
    if rng.random() < 0.06:  # the customer wanders off for a while
        return rng.uniform(61, 240) * 60
    return 8.0 + _lognormal(rng, 30.0, 1.0)


def _add_inbound_burst(rng: random.Random, conv: _Conversation, t: float) -> float:
    burst = _Burst(buffered=rng.random() < BUFFERED_BURST_RATE)
    size = rng.choices((1, 2, 3, 4), weights=(50, 30, 13, 7))[0]
    for i in range(size):
        if i:
            t += _lognormal(rng, 2.5, 0.8)
        m = _inbound_message(rng, conv, t)
        conv.messages.append(m)
        burst.messages.append(m)
    conv.bursts.append(burst)
    return t


def _add_outbound_turn(rng: random.Random, conv: _Conversation, t: float, opener: bool) -> float:
    for i in range(rng.choice((1, 1, 1, 2))):
        if i:
            t += rng.uniform(2, 20)
        template = (opener and i == 0) or rng.random() < 0.12
        m, pricing = _outbound_message(rng, conv, t, template)
        m.statuses = _status_history(rng, m, conv.contact, pricing)
        conv.messages.append(m)
    return t


def _plan_inactivity(conv: _Conversation) -> None:
    """Queue an inactivity notice wherever no message came for the threshold."""
    limit = conv.inactivity_minutes * 60
    for prev, nxt in itertools.pairwise([*conv.messages, None]):
        fire = prev.t + limit
        if nxt is not None and nxt.t <= fire:
            continue
        if conv.ended_at is not None and conv.ended_at <= fire:
            continue
        conv.inactive.append((fire, prev))


def _plan_conversation(rng, start, numbers, thresholds) -> _Conversation:
    pnid = rng.choice(numbers)
    created = start + rng.uniform(0, DAY - 4 * 3600)
    conv = _Conversation(_uuid(rng), pnid, _make_contact(rng), created, thresholds[pnid])
    t = created + rng.uniform(0.2, 1.0)
    inbound = rng.random() >= BUSINESS_OPENER_RATE
    for turn in range(rng.randint(2, 10)):
        if inbound:
            last = _add_inbound_burst(rng, conv, t)
        else:
            last = _add_outbound_turn(rng, conv, t, opener=turn == 0)
        if rng.random() < 0.8:  # usually the other side answers
            inbound = not inbound
        t = last + _turn_gap(rng)
    for seq, m in enumerate(conv.messages, start=1):
        m.seq = seq
    if rng.random() < ENDED_RATE:
        closed_by_agent = rng.random() < 0.7
        idle = rng.uniform(60, 45 * 60) if closed_by_agent else DAY
        conv.ended_at = conv.messages[-1].t + idle
    _plan_inactivity(conv)
    return conv


# --------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------


def _kapso_summary(conv: _Conversation, past: list[_Message]) -> dict:
    last = past[-1] if past else None
    inbound = [m.t for m in past if m.direction == "inbound"]
    outbound = [m.t for m in past if m.direction == "outbound"]
    return {
        "contact_name": conv.contact.name,
        "messages_count": len(past),
        "last_message_id": last.wamid if last else None,
        "last_message_type": last.type if last else None,
        "last_message_timestamp": _iso(last.t) if last else None,
        "last_message_text": last.preview if last else None,
        "last_inbound_at": _iso(inbound[-1]) if inbound else None,
        "last_outbound_at": _iso(outbound[-1]) if outbound else None,
    }


def _snapshot(conv: _Conversation, t: float, with_kapso: bool, updated: float | None = None):
    """The conversation object as Kapso would render it at time t (last change at `updated`)."""
    past = [m for m in conv.messages if m.t <= t]
    ended = conv.ended_at is not None and t >= conv.ended_at
    snap: dict[str, Any] = {"id": conv.id}
    _put_phone(snap, "phone_number", conv.contact)
    snap.update(
        status="ended" if ended else "active",
        last_active_at=_iso(past[-1].t if past else conv.created_at),
        created_at=_iso(conv.created_at),
        updated_at=_iso(t if updated is None else updated),
        metadata={},
        phone_number_id=conv.phone_number_id,
    )
    if conv.contact.bsuid:
        snap["business_scoped_user_id"] = conv.contact.bsuid
    if conv.contact.username:
        snap["username"] = conv.contact.username
    if with_kapso:
        snap["kapso"] = _kapso_summary(conv, past)
    return snap


def _message_object(conv, m: _Message, t: float, status: str, history, in_batch) -> dict:
    msg: dict[str, Any] = {
        "id": m.wamid,
        "timestamp": str(int(t)),
        "type": m.type,
        m.type: m.content,
    }
    side = "from" if m.direction == "inbound" else "to"
    _put_phone(msg, side, conv.contact, plus=False)
    if conv.contact.bsuid:
        msg[f"{side}_user_id"] = conv.contact.bsuid
    kapso = {
        "direction": m.direction,
        "status": status,
        "processing_status": "pending" if m.direction == "inbound" else "completed",
        "origin": m.origin,
        **m.kapso_extra,
    }
    if history:
        kapso["statuses"] = history
    if in_batch:
        _put_phone(kapso, "phone_number", conv.contact)
        kapso["phone_number_id"] = conv.phone_number_id
    msg["kapso"] = kapso
    return msg


def _message_payload(conv, m, t, *, status, with_kapso, history=None, in_batch=False) -> dict:
    first = m is conv.messages[0] and status in ("received", "sent")
    return {
        "message": _message_object(conv, m, t, status, history, in_batch),
        "conversation": _snapshot(conv, t, with_kapso),
        "is_new_conversation": first,
        "phone_number_id": conv.phone_number_id,
    }


# --------------------------------------------------------------------------
# Events (payload + simulated send time) for one conversation
# --------------------------------------------------------------------------


def _debounce(messages: list[_Message]) -> list[list[_Message]]:
    """Split a buffered burst into batches: a gap >= window or a full buffer starts a new one."""
    groups: list[list[_Message]] = []
    for m in messages:
        fits = groups and m.t - groups[-1][-1].t < BUFFER_WINDOW_MS / 1000
        if fits and len(groups[-1]) < MAX_BUFFER_SIZE:
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _batch_event(rng: random.Random, conv: _Conversation, group: list[_Message]) -> _Event:
    items = [
        _message_payload(
            conv, m, m.t, status="received", with_kapso=rng.random() < 0.85, in_batch=True
        )
        for m in group
    ]
    body = {
        "type": RECEIVED,
        "batch": True,
        "data": items,
        "batch_info": {
            "size": len(items),
            "window_ms": BUFFER_WINDOW_MS,
            "first_sequence": group[0].seq,
            "last_sequence": group[-1].seq,
            "conversation_id": conv.id,
        },
    }
    at = group[-1].t + BUFFER_WINDOW_MS / 1000 + _net(rng)
    return _Event(at, RECEIVED, body, items)


def _inbound_events(rng: random.Random, conv: _Conversation) -> list[_Event]:
    events = []
    for burst in conv.bursts:
        if burst.buffered:
            events += [_batch_event(rng, conv, g) for g in _debounce(burst.messages)]
            continue
        for m in burst.messages:
            body = _message_payload(conv, m, m.t, status="received", with_kapso=rng.random() < 0.85)
            events.append(_Event(m.t + _net(rng), RECEIVED, body))
    return events


def _status_delay(rng: random.Random, status: str) -> float:
    """Statuses are not ordered by Kapso; `sent` may be held back behind earlier deliveries."""
    if status == "sent":
        held = rng.random() < 0.08
        return _net(rng) + (rng.uniform(3, 30) if held else 0.0)
    return _net(rng) + _lognormal(rng, 0.4, 1.5)


def _outbound_events(rng: random.Random, conv: _Conversation, m: _Message) -> list[_Event]:
    events = []
    for i, (t, entry) in enumerate(m.statuses):
        status = entry["status"]
        history = [e for _, e in m.statuses[: i + 1]]
        with_kapso = rng.random() < (0.85 if status == "sent" else 0.3)
        body = _message_payload(conv, m, t, status=status, with_kapso=with_kapso, history=history)
        events.append(_Event(t + _status_delay(rng, status), f"whatsapp.message.{status}", body))
    return events


def _lifecycle_events(rng: random.Random, conv: _Conversation) -> list[_Event]:
    pnid = conv.phone_number_id
    created = {"conversation": _snapshot(conv, conv.created_at, True), "phone_number_id": pnid}
    events = [_Event(conv.created_at + _net(rng), CREATED, created)]
    for fire, since in conv.inactive:
        body = {
            # a notice, not a change: updated_at stays at the last activity
            "conversation": _snapshot(conv, fire, rng.random() < 0.3, updated=since.t),
            "since_message": {
                "id": since.kapso_id,
                "whatsapp_message_id": since.wamid,
                "direction": since.direction,
                "created_at": _iso(since.t),
            },
            "inactivity": {"minutes": conv.inactivity_minutes},
            "phone_number_id": pnid,
        }
        events.append(_Event(fire + _net(rng), INACTIVE, body))
    if conv.ended_at is not None:
        body = {"conversation": _snapshot(conv, conv.ended_at, True), "phone_number_id": pnid}
        events.append(_Event(conv.ended_at + _net(rng), ENDED, body))
    return events


def _conversation_events(rng: random.Random, conv: _Conversation) -> list[_Event]:
    events = _lifecycle_events(rng, conv) + _inbound_events(rng, conv)
    for m in conv.messages:
        if m.direction == "outbound":
            events += _outbound_events(rng, conv, m)
    return events


# --------------------------------------------------------------------------
# Deliveries and faults
# --------------------------------------------------------------------------


def _headers(event: str, body: bytes, secret: str, key: str, batch_size: int | None = None):
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Event": event,
        "X-Webhook-Signature": sign(secret, body),
        "X-Idempotency-Key": key,
        "X-Webhook-Payload-Version": "v2",
    }
    if batch_size is not None:
        headers["X-Webhook-Batch"] = "true"
        headers["X-Batch-Size"] = str(batch_size)
    return headers


def _to_delivery(rng: random.Random, secret: str, ev: _Event) -> Delivery:
    body = _encode(ev.body)
    size = len(ev.items) if ev.items is not None else None
    return Delivery(_headers(ev.name, body, secret, _uuid(rng), size), body, round(ev.at, 3))


def _pick(rng: random.Random, items: list, rate: float) -> list:
    """Sample items at `rate`, but always at least one when there is any."""
    chosen = [x for x in items if rng.random() < rate]
    if not chosen and items:
        chosen = [rng.choice(items)]
    return chosen


def _retries(rng: random.Random, d: Delivery) -> list[Delivery]:
    """Kapso retrying a delivery it thinks failed: same key, same bytes."""
    copies, delay = [], 0.0
    for step in RETRY_STEPS:
        delay += step
        at = round(d.at + delay + rng.uniform(0, 1), 3)
        copies.append(replace(d, headers=dict(d.headers), at=at))
        if rng.random() >= 0.2:  # most retries succeed at once
            break
    return copies


def _fallback(rng: random.Random, secret: str, d: Delivery, items: list[dict]) -> list[Delivery]:
    """A batch that ran out of retries: each item comes again alone, under a new key."""
    after = d.at + sum(RETRY_STEPS)
    out = []
    for j, item in enumerate(items):
        body = _encode(item)
        at = round(after + j * 0.3 + rng.uniform(0, 2), 3)
        out.append(Delivery(_headers(RECEIVED, body, secret, _uuid(rng)), body, at))
    return out


def _fault_copies(rng: random.Random, secret: str, originals: list[tuple[Delivery, _Event]]):
    copies: list[Delivery] = []
    for d, _ in _pick(rng, originals, RETRY_RATE):
        copies += _retries(rng, d)
    for d, _ in _pick(rng, originals, NEW_KEY_DUPLICATE_RATE):
        headers = {**d.headers, "X-Idempotency-Key": _uuid(rng)}
        copies.append(Delivery(headers, d.body, round(d.at + rng.uniform(1, 90), 3)))
    batches = [(d, ev) for d, ev in originals if ev.items is not None]
    for d, ev in _pick(rng, batches, BATCH_FALLBACK_RATE):
        copies += _fallback(rng, secret, d, ev.items)
    return copies


def generate(
    conversations: int,
    seed: int,
    secret: str,
    *,
    start: float | None = None,
    phone_number_ids: list[str] | None = None,
) -> list[Delivery]:
    """Simulate `conversations` conversations; return their deliveries sorted by `at`."""
    if conversations < 0:
        raise ValueError("conversations must be >= 0")
    start = DEFAULT_START if start is None else float(start)
    rng = random.Random(f"kapso-sim:{seed}")
    numbers = list(phone_number_ids) if phone_number_ids else _phone_number_ids(rng)
    thresholds = {n: rng.choice((30, 60, 120)) for n in numbers}  # one webhook per number

    originals: list[tuple[Delivery, _Event]] = []
    for i in range(conversations):
        crng = random.Random(f"kapso-sim:{seed}:conversation:{i}")
        conv = _plan_conversation(crng, start, numbers, thresholds)
        originals += [
            (_to_delivery(crng, secret, ev), ev) for ev in _conversation_events(crng, conv)
        ]

    faults = _fault_copies(random.Random(f"kapso-sim:{seed}:faults"), secret, originals)
    stream = [d for d, _ in originals] + faults
    stream.sort(key=lambda d: d.at)  # stable, so ties keep a fixed order
    return stream


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

KINDS = ("first", "retry", "new_key_duplicate", "batch_fallback", "key_reused")


@dataclass
class _Tally:
    keys: dict[str, bytes] = field(default_factory=dict)  # idempotency key -> body digest
    bodies: set[bytes] = field(default_factory=set)
    batched_ids: set[str] = field(default_factory=set)
    first_pos: dict[tuple[str, str], int] = field(default_factory=dict)  # (wamid, status) -> pos
    conversations: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)


def _classify(d: Delivery, payload: dict | None, tally: _Tally) -> str:
    key = d.headers.get("X-Idempotency-Key", "")
    digest = hashlib.sha256(d.body).digest()
    if key in tally.keys:
        return "retry" if tally.keys[key] == digest else "key_reused"
    tally.keys[key] = digest
    if digest in tally.bodies:
        return "new_key_duplicate"
    tally.bodies.add(digest)
    msg_id = ((payload or {}).get("message") or {}).get("id")
    if not (payload or {}).get("batch") and msg_id in tally.batched_ids:
        return "batch_fallback"
    return "first"


def _count_first(pos: int, event: str, payload: dict, tally: _Tally) -> None:
    """Statistics over deliveries seen for the first time."""
    c = tally.counts
    items = payload.get("data", []) if payload.get("batch") else [payload]
    if payload.get("batch"):
        c["batches"] += 1
        c["batch_items"] += len(items)
        c["single_item_batches"] += len(items) == 1
    for item in items:
        conv = item.get("conversation") or {}
        tally.conversations.add(conv.get("id"))
        tally.numbers.add(item.get("phone_number_id"))
        msg = item.get("message")
        if not msg:
            continue
        if payload.get("batch"):
            tally.batched_ids.add(msg.get("id"))
        status = (msg.get("kapso") or {}).get("status")
        tally.first_pos.setdefault((msg.get("id"), status), pos)
        if event == RECEIVED:
            c["inbound_messages"] += 1
        history = [s.get("status") for s in (msg.get("kapso") or {}).get("statuses", [])]
        if event == READ and "delivered" not in history:
            c["read_without_delivered"] += 1


def _arrived_before(tally: _Tally, earlier: tuple[str, ...], later: str) -> int:
    """How many statuses in `earlier` arrived before the `later` status of the same wamid."""
    pos = tally.first_pos
    return sum(
        1
        for (wamid, status), p in pos.items()
        if status in earlier and (wamid, later) in pos and p < pos[(wamid, later)]
    )


def summarize(deliveries: Iterable[Delivery]) -> dict:
    """Counts describing a delivery stream (works on any list of Delivery)."""
    stream = sorted(deliveries, key=lambda d: d.at)
    tally = _Tally()
    events: Counter = Counter()
    kinds: Counter = Counter({k: 0 for k in KINDS})
    for pos, d in enumerate(stream):
        event = d.headers.get("X-Webhook-Event", "?")
        events[event] += 1
        try:
            payload = json.loads(d.body)
        except ValueError:
            payload = None
        kind = _classify(d, payload, tally)
        kinds[kind] += 1
        if kind == "first" and isinstance(payload, dict):
            _count_first(pos, event, payload, tally)

    c = tally.counts
    outbound = {w for (w, s) in tally.first_pos if s in ("sent", "delivered", "read", "failed")}
    return {
        "deliveries": len(stream),
        "events": dict(sorted(events.items())),
        "kinds": dict(kinds),
        "conversations": len(tally.conversations - {None}),
        "phone_number_ids": len(tally.numbers - {None}),
        "inbound_messages": c["inbound_messages"],
        "batches": c["batches"],
        "batch_items": c["batch_items"],
        "single_item_batches": c["single_item_batches"],
        "outbound_messages": len(outbound),
        "failed_messages": sum(1 for (_, s) in tally.first_pos if s == "failed"),
        "read_without_delivered": c["read_without_delivered"],
        "statuses_before_sent": _arrived_before(tally, ("delivered", "read", "failed"), "sent"),
        "read_before_delivered": _arrived_before(tally, ("read",), "delivered"),
        "first_at": stream[0].at if stream else None,
        "last_at": stream[-1].at if stream else None,
    }


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


async def _post_once(session, url: str, d: Delivery) -> int | str:
    try:
        async with session.post(url, data=d.body, headers=d.headers) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return "error"


async def _post(session, url: str, d: Delivery, retries: int, backoff: float) -> int | str:
    """POST one delivery; retry connection errors and 5xx with the same headers."""
    for attempt in range(retries):
        status = await _post_once(session, url, d)
        transient = status == "error" or (isinstance(status, int) and status >= 500)
        if not transient:
            return status
        await asyncio.sleep(backoff * 2**attempt)
    return await _post_once(session, url, d)  # last attempt, whatever it gives


async def send(
    url: str,
    deliveries: Iterable[Delivery],
    *,
    concurrency: int = 16,
    progress: bool = True,
    retries: int = 3,
    backoff: float = 0.5,
    request_timeout: float = 10.0,
    session: Any = None,
) -> dict:
    """POST deliveries in order with bounded concurrency.

    Returns {final HTTP status: count}; deliveries that never got a response
    are counted under "error".  A passed-in `session` is used and left open.
    """
    items = list(deliveries)
    pending = iter(items)
    counts: Counter = Counter()
    bar = _tqdm(total=len(items), unit="req", desc="simulate") if progress and _tqdm else None

    async def worker(sess) -> None:
        for d in pending:  # a shared iterator: each delivery goes to one worker
            counts[await _post(sess, url, d, retries, backoff)] += 1
            if bar is not None:
                bar.update(1)

    own = session is None
    if own:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_timeout))
    try:
        await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    finally:
        if own:
            await session.close()
        if bar is not None:
            bar.close()
    return dict(counts)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="webhook URL to POST to (ignored with --out)")
    parser.add_argument("--secret", required=True, help="webhook secret_key used to sign bodies")
    parser.add_argument("--conversations", type=int, default=50, help="conversations to simulate")
    parser.add_argument("--seed", type=int, default=1, help="random seed (same seed, same bytes)")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write JSON lines {headers, body} instead of sending ('-' = stdout)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="parallel requests")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _write_jsonl(path: str, deliveries: list[Delivery]) -> None:
    lines = (
        json.dumps({"headers": d.headers, "body": d.body.decode("utf-8")}, ensure_ascii=False)
        for d in deliveries
    )
    if path == "-":
        sys.stdout.writelines(line + "\n" for line in lines)
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in lines)


def _print_summary(summary: dict, file) -> None:
    for key, value in summary.items():
        if isinstance(value, dict):
            print(f"{key}:", file=file)
            for sub, n in value.items():
                print(f"  {sub}: {n}", file=file)
        else:
            print(f"{key}: {value}", file=file)


async def run(args: argparse.Namespace) -> int:
    """Generate, then write to --out or send to --url. 0 = all 200, 1 = some non-200."""
    deliveries = generate(args.conversations, args.seed, args.secret)
    if args.out:
        _write_jsonl(args.out, deliveries)
        _print_summary(summarize(deliveries), sys.stderr if args.out == "-" else sys.stdout)
        return 0
    if not args.url:
        print("simulate: give --url to send or --out to write a file", file=sys.stderr)
        return 2
    counts = await send(
        args.url, deliveries, concurrency=args.concurrency, progress=not args.no_progress
    )
    _print_summary(summarize(deliveries), sys.stdout)
    _print_summary(
        {"responses": {str(k): v for k, v in sorted(counts.items(), key=str)}}, sys.stdout
    )
    return 0 if set(counts) <= {200} else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics.simulator",
        description="Generate signed Kapso v2 webhook deliveries and send or save them.",
    )
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
