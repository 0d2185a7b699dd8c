"""Pre-signed, realistic Kapso v2 deliveries written as raw HTTP requests for wrk to replay.

Every body is distinct (own wamid / ids / timestamps) and carries its own signature and
idempotency key. Mix: ~50% message.received, ~35% message status, ~10% batches of 2-5
received messages, ~5% conversation events.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import uuid
from array import array
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

PATH = "/webhooks/kapso"
PHONE_NUMBER_ID = "123456789012345"
BASE_TS = 1730092800
THREAD_SPAN = 10_000_000  # seconds of fake time per stream: keeps timestamps unique across streams

_TEXTS = [
    "Hi, is my order shipped?",
    "hello",
    "I need to change my address",
    "Can I pay by card?",
    "Thanks!",
    "What time do you open tomorrow?",
    "My package arrived damaged, what can I do?",
    "ok",
    "Where is my refund? It's been a week.",
    "¿Tienen envío a Valparaíso?",
    "Obrigado pela ajuda 🙏",
    "Can you call me back later today?",
]
_REPLIES = [
    "Yes, it ships today.",
    "Sure, here is the link to update it.",
    "We open at 9:00.",
    "Your refund was issued on Monday.",
    "You're welcome!",
]
_NAMES = [
    "Ana Ruiz",
    "Bruno Costa",
    "Chen Wei",
    "Dana Levi",
    "Emeka Obi",
    "Fatima Khan",
    "Giulia Rossi",
    "Hiro Tanaka",
    "Inés Morales",
    "Jonas Berg",
]


class Stream:
    """Deterministic generator of (event name, body dict, batch size or None).

    Stream `index` owns its own wamids and time range, so bodies never repeat across streams;
    all streams share one pool of conversations.
    """

    def __init__(self, index: int, seed: int = 7, conversations: int = 2000):
        self.rng = random.Random(seed)
        self.convs = [self._conversation_ids(i) for i in range(conversations)]
        self.rng = random.Random(seed * 1000 + index)
        self.index = index
        self.n = 0

    def _conversation_ids(self, i: int) -> tuple[str, str, str]:
        conv_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        phone = f"+1555{2000000 + i:07d}"
        return conv_id, phone, self.rng.choice(_NAMES)

    def _wamid(self) -> str:
        self.n += 1
        return f"wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQ{self.index:02X}{self.n:010X}"

    def _iso(self, ts: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

    def _conversation(self, conv, ts: int, kapso: dict | None = None) -> dict:
        conv_id, phone, _ = conv
        doc = {
            "id": conv_id,
            "phone_number": phone,
            "status": "active",
            "last_active_at": self._iso(ts),
            "created_at": self._iso(ts - 2700),
            "updated_at": self._iso(ts),
            "metadata": {},
            "phone_number_id": PHONE_NUMBER_ID,
        }
        if kapso is not None:
            doc["kapso"] = kapso
        return doc

    def received(self, conv, ts: int, in_batch: bool = False) -> dict:
        wamid, text = self._wamid(), self.rng.choice(_TEXTS)
        kapso = {
            "direction": "inbound",
            "status": "received",
            "processing_status": "pending",
            "origin": "cloud_api",
            "has_media": False,
        }
        if in_batch:
            kapso.update(phone_number=conv[1], phone_number_id=PHONE_NUMBER_ID)
            conv_kapso = None
        else:
            kapso["content"] = text
            conv_kapso = {
                "contact_name": conv[2],
                "messages_count": self.rng.randint(1, 40),
                "last_message_id": wamid,
                "last_message_type": "text",
                "last_message_timestamp": self._iso(ts),
                "last_message_text": text,
                "last_inbound_at": self._iso(ts),
                "last_outbound_at": None,
            }
        return {
            "message": {
                "id": wamid,
                "timestamp": str(ts),
                "type": "text",
                "text": {"body": text},
                "kapso": kapso,
            },
            "conversation": self._conversation(conv, ts, conv_kapso),
            "is_new_conversation": self.rng.random() < 0.1,
            "phone_number_id": PHONE_NUMBER_ID,
        }

    def status(self, conv, ts: int, status: str) -> dict:
        wamid, text = self._wamid(), self.rng.choice(_REPLIES)
        recipient = conv[1].lstrip("+")
        steps = ["sent", "delivered", "read"][: ["sent", "delivered", "read"].index(status) + 1]
        statuses = [
            {
                "id": wamid,
                "status": s,
                "timestamp": str(ts - 30 * (len(steps) - 1 - i)),
                "recipient_id": recipient,
            }
            for i, s in enumerate(steps)
        ]
        statuses[0]["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
        return {
            "message": {
                "id": wamid,
                "timestamp": str(ts),
                "type": "text",
                "text": {"body": text},
                "kapso": {
                    "direction": "outbound",
                    "status": status,
                    "processing_status": "completed",
                    "origin": "cloud_api",
                    "has_media": False,
                    "statuses": statuses,
                },
            },
            "conversation": self._conversation(conv, ts),
            "is_new_conversation": False,
            "phone_number_id": PHONE_NUMBER_ID,
        }

    def next(self) -> tuple[str, dict, int | None]:
        rng, conv = self.rng, self.rng.choice(self.convs)
        ts = BASE_TS + self.index * THREAD_SPAN + self.n
        roll = rng.random()
        if roll < 0.50:
            return "whatsapp.message.received", self.received(conv, ts), None
        if roll < 0.85:
            status = rng.choice(("sent", "delivered", "read"))
            return f"whatsapp.message.{status}", self.status(conv, ts, status), None
        if roll < 0.95:
            size = rng.randint(2, 5)
            first = self.n + 1
            data = [self.received(conv, ts + i, in_batch=True) for i in range(size)]
            info = {
                "size": size,
                "window_ms": 5000,
                "first_sequence": first,
                "last_sequence": first + size - 1,
                "conversation_id": conv[0],
            }
            body = {
                "type": "whatsapp.message.received",
                "batch": True,
                "data": data,
                "batch_info": info,
            }
            return "whatsapp.message.received", body, size
        kind = rng.choice(("created", "ended", "inactive"))
        self.n += 1
        doc = {"conversation": self._conversation(conv, ts), "phone_number_id": PHONE_NUMBER_ID}
        if kind == "created":
            doc["conversation"]["created_at"] = self._iso(ts)
        elif kind == "ended":
            doc["conversation"]["status"] = "ended"
        else:
            doc["since_message"] = {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "whatsapp_message_id": self._wamid(),
                "direction": "inbound",
                "created_at": self._iso(ts - 3600),
            }
            doc["inactivity"] = {"minutes": 60}
        return f"whatsapp.conversation.{kind}", doc, None


def raw_request(secret: bytes, event: str, body: bytes, batch: int | None, key: str) -> bytes:
    """One complete HTTP/1.1 request as Kapso would send it."""
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Webhook-Event: {event}\r\nX-Webhook-Signature: {sig}\r\n"
        f"X-Idempotency-Key: {key}\r\nX-Webhook-Payload-Version: v2\r\n"
    )
    if batch is not None:
        head += f"X-Webhook-Batch: true\r\nX-Batch-Size: {batch}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def write_stream(path: Path, secret: bytes, count: int, index: int, seed: int = 7) -> array:
    """Write `count` requests to `path`; return the event count of each.

    One record per request: "<byte length> <event count>\\n" then the raw request bytes.
    """
    stream, rng = Stream(index, seed), random.Random(seed * 1000 + 500 + index)
    events = array("B")
    with open(path, "wb", buffering=1 << 20) as out:
        for _ in range(count):
            event, doc, batch = stream.next()
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            raw = raw_request(secret, event, orjson.dumps(doc), batch, key)
            n = batch or 1
            out.write(b"%d %d\n" % (len(raw), n))
            out.write(raw)
            events.append(n)
    return events


def write_streams(
    directory: Path, secret: bytes, count: int, streams: int, seed: int = 7
) -> list[array]:
    """One file per wrk thread (requests-<i>.bin), written in parallel processes; another
    seed gives other, equally distinct, deliveries."""
    with ProcessPoolExecutor(streams) as pool:
        jobs = [
            pool.submit(write_stream, directory / f"requests-{i}.bin", secret, count, i, seed)
            for i in range(streams)
        ]
        return [job.result() for job in jobs]
