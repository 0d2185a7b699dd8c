"""Hostile input against /webhooks/*: never a 500, never a stored unverified byte.

Everything here runs against real parts: the `sink` fixture (the service in this process on a
real socket, against a fresh PostgreSQL database), raw asyncio streams for HTTP that no client
library would send, and PostgreSQL itself for every "stored or not" question. Nothing is mocked.

Two families of checks:

* Unsigned or badly signed requests (random bytes, non-UTF-8, huge or repeated headers, wrong
  content types, signatures of every wrong length, malformed HTTP) are answered 4xx (a JSON
  `{"error", "detail"}` body when the app answers; aiohttp's own plain-text 400 when the HTTP
  parser refuses the request first) and leave `events` and `deliveries` empty.
* Correctly signed hostile bodies (10k-deep nesting, NUL bytes, invalid UTF-8, 9 MiB bodies,
  1e999, duplicate keys, lone surrogates, huge arrays) are answered 200 and their exact bytes
  are retrievable from `deliveries.body`: a verified delivery is never refused for its shape.

Hypothesis and the session event loop: pytest-asyncio (1.x) runs an `async def` test decorated
with `@given` by running hypothesis' inner test on the session-scoped runner, so every example
is a coroutine on the same loop as the `sink` fixture. The function-scoped `sink` is shared by
all examples of one test (hence `HealthCheck.function_scoped_fixture` is suppressed): unsigned
examples must leave it empty, signed ones are checked by their own body hash. `database=None`
keeps hypothesis from writing an example database into the work tree.

The envelope parsers are also fuzzed directly (pure and fast): no exception escapes and every
result is storable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import json
import random
import re
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote_from_bytes, urlsplit

import asyncpg
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from service.log.records import clean_text
from service.settings import secret_id
from service.webhooks import envelope, kapso, meta, signature
from tests import support

APP_SECRET = "meta_app_secret_5up3r"
VERIFY_TOKEN = "verify-token-0042"
WEBHOOKS = ("/webhooks/kapso", "/webhooks/meta")
LIMIT = 10 * 1024 * 1024  # KAPSO_SINK_MAX_BODY_BYTES default
MIB = 1024 * 1024
KAPSO_SECRETS = (support.SECRET.encode(), support.OLD_SECRET.encode())
KNOWN_SECRET_IDS = {secret_id(s) for s in (*KAPSO_SECRETS, APP_SECRET.encode())}

# hypothesis examples share one sink; keep every property test to about a second
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def sink_settings(tmp_path):
    """Every sink here also accepts Meta's X-Hub-Signature-256 and answers the handshake."""
    return support.make_settings(
        tmp_path, META_APP_SECRET=APP_SECRET, META_VERIFY_TOKEN=VERIFY_TOKEN
    )


@pytest_asyncio.fixture(loop_scope="session")
async def hostile(sink):
    """The sink, checked after the test: no 5xx was ever answered (even to a client that had
    gone), every stored byte was verified, and a normal signed delivery still gets 200."""
    yield sink
    await assert_no_server_errors(sink)
    await assert_still_serving(sink)
    await assert_only_verified_bytes_stored(sink)


# --------------------------------------------------------------------------------------------
# raw HTTP over asyncio streams


@dataclass
class Reply:
    status: int | None  # None: the connection was closed without an answer
    headers: CIMultiDict
    body: bytes

    @property
    def from_app(self) -> bool:
        """Answered by the application (its middleware stamps every response)."""
        return "X-Request-Id" in self.headers

    def json(self):
        return orjson.loads(self.body)


def http_request(
    path: bytes | str = b"/webhooks/kapso",
    headers=(),
    body: bytes = b"",
    *,
    method: bytes | str = b"POST",
    content_length: bool = True,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """One HTTP/1.1 request as bytes, exactly as given (no validation of names or values)."""

    def b(value) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    lines = [b(method) + b" " + b(path) + b" " + version, b"Host: 127.0.0.1", b"Connection: close"]
    if content_length:
        lines.append(b"Content-Length: %d" % len(body))
    lines += [b(name) + b": " + b(value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_reply(raw: bytes) -> Reply:
    if not raw:
        return Reply(None, CIMultiDict(), b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, f"not an HTTP response: {raw[:200]!r}"
    headers = CIMultiDict()
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.add(name.decode("latin-1").strip(), value.decode("latin-1").strip())
    return Reply(int(match.group(1)), headers, body)


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    return bool(sep) and match is not None and len(body) >= int(match.group(1))


async def exchange(
    sink,
    data: bytes,
    *,
    half_close: bool = False,
    close_after: float | None = None,
    timeout: float = 15.0,
    silence_ok: bool = False,
) -> Reply:
    """Write `data` on a fresh connection and read until the server closes it.

    `close_after`: close our side after that many seconds without waiting for an answer (a
    client that goes away mid-request). `silence_ok`: a server still waiting for more bytes
    after `timeout` counts as "closed without an answer" rather than a failure.
    """
    url = urlsplit(sink.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    chunks: list[bytes] = []
    try:
        try:
            writer.write(data)
            await writer.drain()
            if half_close:
                writer.write_eof()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server answered early (e.g. 413) and closed; its answer may be buffered
        if close_after is not None:
            await asyncio.sleep(close_after)
            return Reply(None, CIMultiDict(), b"")
        try:
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
                    if _complete(b"".join(chunks)):
                        break  # the server may linger before closing (aiohttp waits up to 10 s
                        # for an unread request body to arrive); the answer is all we need
        except (ConnectionResetError, BrokenPipeError):
            pass
        except TimeoutError:
            if not silence_ok:
                raise AssertionError(f"no answer and no close within {timeout}s") from None
            return Reply(None, CIMultiDict(), b"")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return parse_reply(b"".join(chunks))


# --------------------------------------------------------------------------------------------
# what the database holds


async def counts(sink) -> tuple[int, int]:
    row = await sink.pool.fetchrow(
        "SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM deliveries) AS d"
    )
    return row["e"], row["d"]


async def assert_nothing_stored(sink, before: tuple[int, int] = (0, 0)) -> None:
    assert await counts(sink) == before, "an unverified request changed the event log"


async def assert_stored_verbatim(sink, raw: bytes, kinds=("kapso",)) -> None:
    """The exact bytes are in `deliveries.body`, and every kind has logged events for them."""
    sha = hashlib.sha256(raw).digest()
    body = await sink.pool.fetchval("SELECT body FROM deliveries WHERE body_sha256 = $1", sha)
    assert body is not None, "verified delivery not in deliveries"
    assert bytes(body) == raw, "stored body differs from the bytes received"
    for kind in kinds:
        n = await sink.pool.fetchval(
            "SELECT count(*) FROM events WHERE body_sha256 = $1 AND kind = $2", sha, kind
        )
        assert n >= 1, f"no {kind} event logged for a verified delivery"


def _signature_matches(value: str | None, body: bytes, secrets) -> bool:
    if not value:
        return False
    first = value.split(",")[0].strip()  # repeated headers are stored joined; the first verifies
    if first[:7].lower() == "sha256=":
        first = first[7:]
    return any(
        hmac.compare_digest(first.lower(), hmac.new(s, body, hashlib.sha256).hexdigest())
        for s in secrets
    )


async def assert_only_verified_bytes_stored(sink) -> None:
    """Every stored delivery is signed by a configured secret over exactly its stored bytes,
    and every logged event belongs to one and names a configured secret."""
    for row in await sink.pool.fetch("SELECT kind, headers, body FROM deliveries"):
        headers, body = row["headers"], bytes(row["body"])
        ok = _signature_matches(headers.get("x-webhook-signature"), body, KAPSO_SECRETS) or (
            row["kind"] == "meta"
            and _signature_matches(headers.get("x-hub-signature-256"), body, (APP_SECRET.encode(),))
        )
        assert ok, f"stored delivery not verifiable: headers={headers!r} body={body[:100]!r}"
    orphans = await sink.pool.fetchval(
        "SELECT count(*) FROM events e WHERE NOT EXISTS "
        "(SELECT 1 FROM deliveries d WHERE d.body_sha256 = e.body_sha256)"
    )
    assert orphans == 0, "events without their raw delivery"
    ids = {r["secret_id"] for r in await sink.pool.fetch("SELECT DISTINCT secret_id FROM events")}
    assert ids <= KNOWN_SECRET_IDS


_SERVER_ERROR = re.compile(
    r'^kapso_sink_request_seconds_count\{[^}]*status="(5\d\d)"[^}]*\} (\S+)$', re.M
)


async def assert_no_server_errors(sink) -> None:
    """No request was ever answered 5xx, including ones whose client had already gone."""
    async with sink.http.get(sink.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    errors = [m.group(0) for m in _SERVER_ERROR.finditer(text) if float(m.group(2)) > 0]
    assert not errors, f"server errors recorded: {errors}"


async def assert_still_serving(sink) -> None:
    raw, headers = support.delivery({"message": {"id": f"wamid.{uuid.uuid4().hex}"}})
    status, doc, _ = await sink.post(raw, headers)
    assert (status, doc) == (200, {"stored": 1, "duplicates": 0})
    await assert_stored_verbatim(sink, raw)


def assert_json_error(reply: Reply, status: int | set[int], code: str | None = None) -> None:
    statuses = {status} if isinstance(status, int) else status
    assert reply.status in statuses, (reply.status, reply.body[:300])
    assert reply.from_app
    assert reply.headers.get("Content-Type", "").startswith("application/json")
    doc = reply.json()
    assert set(doc) == {"error", "detail"} and all(isinstance(v, str) for v in doc.values())
    assert b"Traceback" not in reply.body
    if code is not None:
        assert doc["error"] == code


def assert_refused(reply: Reply) -> None:
    """A 4xx from the app (JSON) or from aiohttp's HTTP parser (plain text), or a close."""
    if reply.status is None:
        return
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    assert b"Traceback" not in reply.body
    if reply.from_app:
        assert_json_error(reply, reply.status)


def signed(body: bytes, *, path: str = "/webhooks/kapso", extra=()) -> bytes:
    return http_request(
        path,
        [("Content-Type", "application/json"), ("X-Webhook-Signature", support.sign(body)), *extra],
        body,
    )


# --------------------------------------------------------------------------------------------
# strategies

_HEX = "0123456789abcdef"
_ODD_CHARS = [
    "\x00",
    "\ud800",
    "\udc00",
    "\udfff",
    "\ufeff",
    "\u2028",
    "\uffff",
    "\U0010ffff",
    "\x7f",
    '"',
    "\\",
    "\u0085",
]
TEXT = st.text(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from(_ODD_CHARS)), max_size=24
)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "batch",
            "data",
            "batch_info",
            "type",
            "event",
            "message",
            "conversation",
            "id",
            "kapso",
            "phone_number_id",
            "whatsapp_config",
            "whatsapp_conversation_id",
            "conversation_id",
            "entry",
            "changes",
            "field",
            "value",
            "messages",
            "statuses",
            "errors",
            "metadata",
            "contacts",
            "status",
            "direction",
            "timestamp",
        ]
    ),
    TEXT,
)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), TEXT)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=24,
)
KAPSO_DOCS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {
            "batch": st.sampled_from([True, False, "true", 1]),
            "data": st.lists(JSON_VALUES, max_size=5),
        },
        optional={"batch_info": JSON_VALUES, "type": JSON_VALUES},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "message": st.fixed_dictionaries(
                {}, optional={"id": JSON_VALUES, "kapso": JSON_VALUES, "type": JSON_VALUES}
            ),
            "conversation": st.fixed_dictionaries(
                {},
                optional={"id": JSON_VALUES, "phone_number_id": JSON_VALUES, "status": JSON_VALUES},
            ),
            "phone_number_id": JSON_VALUES,
            "whatsapp_config": JSON_VALUES,
            "type": JSON_VALUES,
            "event": JSON_VALUES,
        },
    ),
)
_META_VALUE = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(
            st.one_of(JSON_VALUES, st.fixed_dictionaries({"id": JSON_VALUES})), max_size=3
        ),
        "statuses": st.lists(
            st.one_of(
                JSON_VALUES, st.fixed_dictionaries({"id": JSON_VALUES, "status": JSON_VALUES})
            ),
            max_size=3,
        ),
        "errors": JSON_VALUES,
        "metadata": JSON_VALUES,
        "contacts": JSON_VALUES,
    },
)
_META_CHANGE = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "field": st.one_of(st.just("messages"), JSON_VALUES),
            "value": st.one_of(_META_VALUE, JSON_VALUES),
        },
    ),
)
META_DOCS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {
            "entry": st.lists(
                st.one_of(
                    JSON_VALUES,
                    st.fixed_dictionaries(
                        {},
                        optional={"id": JSON_VALUES, "changes": st.lists(_META_CHANGE, max_size=3)},
                    ),
                ),
                max_size=3,
            )
        }
    ),
)


def encode_json(doc, ascii_only: bool) -> bytes:
    """JSON text as bytes; with ascii_only=False, lone surrogates become invalid UTF-8 bytes."""
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw, docs=KAPSO_DOCS, max_size: int = 2048) -> bytes:
    """Raw bytes, JSON (ASCII-escaped or not), or JSON with random bytes spliced in."""
    kind = draw(st.sampled_from(["bytes", "json", "json", "spliced", "fixed"]))
    if kind == "bytes":
        return draw(st.binary(max_size=max_size))
    if kind == "fixed":
        return draw(st.sampled_from(SMALL_HOSTILE_BODIES))
    text = encode_json(draw(docs), draw(st.booleans()))
    if kind == "spliced" and text:
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 4))
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at + cut :]
    return text


SMALL_HOSTILE_BODIES = [
    b"",
    b" ",
    b"\x00",
    b"\xff\xfe\xfd",
    b"null",
    b"[]",
    b"{}",
    b'"\\ud800"',
    b"1e999",
    b'{"a":NaN}',
    b"\xef\xbb\xbf{}",
    b'{"a":1,"a":2}',
    b'{"batch":true,"data":[]}',
    b'{"batch":true,"data":["\\u0000"]}',
    b"[" * 100,
    b"<html>",
]

# header names an attacker controls; framing headers are exercised at the socket level instead
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "X-Webhook-Signature",
            "X-Webhook-Event",
            "X-Idempotency-Key",
            "X-Webhook-Payload-Version",
            "X-Webhook-Batch",
            "X-Request-Id",
            "Content-Type",
            "X-Hub-Signature-256",
            "User-Agent",
            "x-webhook-event",
        ]
    ),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=30).map(
        lambda s: "X-" + s
    ),
)


def _value_bytes() -> st.SearchStrategy[bytes]:
    """Header values as bytes: UTF-8 text (non-ASCII too), latin-1 / non-UTF-8 high bytes,
    long runs, and now and then a control character the HTTP parser must refuse."""
    text = st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=64
    ).map(lambda s: s.encode("utf-8"))
    high = st.binary(max_size=64).map(lambda b: bytes(0x80 | x for x in b))
    long = st.tuples(
        st.sampled_from([b"a", b"\xff", "é".encode(), b"0"]), st.sampled_from([1000, 4096, 8000])
    ).map(lambda t: t[0] * (t[1] // len(t[0])))
    # CR and LF are left out: they would re-frame the request, not be a value
    ctl = st.binary(min_size=1, max_size=8).map(
        lambda b: b"x" + bytes(1 if x % 0x20 in (10, 13) else x % 0x20 for x in b)
    )
    return st.one_of(text, text, high, long, ctl).map(lambda v: v.strip(b" \t\r\n"))


HEADER_VALUES = _value_bytes()


def has_ctl(value: bytes | str) -> bool:
    if isinstance(value, str):
        value = value.encode()
    return any((x < 0x20 and x != 0x09) or x == 0x7F for x in value)


# headers aiohttp's parser refuses to see twice (its own 400 "Duplicate ... header found")
SINGLETON_HEADERS = {
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "etag",
    "host",
    "max-forwards",
    "server",
    "transfer-encoding",
    "user-agent",
}


def refused_by_http_parser(headers) -> bool:
    names = [n.lower() for n, _ in headers]
    return any(has_ctl(v) for _, v in headers) or any(names.count(n) > 1 for n in SINGLETON_HEADERS)


@st.composite
def bad_signatures(draw, body: bytes) -> list[tuple[str, bytes]]:
    """Signature headers that must not verify `body`: every wrong length, wrong secrets, the
    right digest truncated, extended, re-prefixed or with look-alike characters."""
    good = support.sign(body)
    prefix = draw(st.sampled_from(["", "sha256=", "SHA256=", "sha1=", "sha256:", "sha256=sha256="]))
    kind = draw(
        st.sampled_from(
            [
                "absent",
                "blank",
                "length",
                "random64",
                "truncated",
                "extended",
                "wrong-secret",
                "other-body",
                "lookalike",
                "inner-space",
                "text",
                "app-secret-in-kapso-header",
                "kapso-secret-in-hub-header",
            ]
        )
    )
    if kind == "absent":
        return []
    if kind == "blank":
        return [("X-Webhook-Signature", draw(st.sampled_from([b"", b" ", b"\t", b"sha256="])))]
    if kind == "length":
        n = draw(st.integers(0, 200).filter(lambda n: n != 64))
        value = prefix + draw(st.text(_HEX + _HEX.upper(), min_size=n, max_size=n))
    elif kind == "random64":
        value = prefix + draw(st.text(_HEX, min_size=64, max_size=64).filter(lambda s: s != good))
    elif kind == "truncated":
        value = prefix + good[: draw(st.integers(0, 63))]
    elif kind == "extended":
        value = prefix + good + draw(st.text(_HEX, min_size=1, max_size=64))
    elif kind == "wrong-secret":
        value = prefix + support.sign(
            body, draw(st.sampled_from(["wrong", "", support.SECRET + " "]))
        )
    elif kind == "other-body":
        value = prefix + support.sign(body + draw(st.binary(min_size=1, max_size=3)))
    elif kind == "lookalike":
        i = draw(st.integers(0, 63))
        fake = draw(st.sampled_from(["０", "٣", "а", "ｆ", "𝟎", "\u0660", "e\u0301"]))
        value = prefix + good[:i] + fake + good[i + 1 :]
    elif kind == "inner-space":
        i = draw(st.integers(1, 63))
        value = prefix + good[:i] + draw(st.sampled_from([" ", "\t", ",", "-"])) + good[i:]
    elif kind == "text":
        value = draw(st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=100))
    elif kind == "app-secret-in-kapso-header":
        value = prefix + support.sign(body, APP_SECRET)
    else:
        return [("X-Hub-Signature-256", ("sha256=" + good).encode())]
    return [("X-Webhook-Signature", value.strip().encode("utf-8"))]


# --------------------------------------------------------------------------------------------
# unsigned and badly signed: 401, nothing stored


@PROPERTY
@given(data=st.data())
async def test_badly_signed_random_bodies_are_refused_and_not_stored(hostile, data):
    path = data.draw(st.sampled_from(WEBHOOKS), label="path")
    body = data.draw(bodies(KAPSO_DOCS if path.endswith("kapso") else META_DOCS), label="body")
    sig = data.draw(bad_signatures(body), label="signature headers")
    ctype = data.draw(st.sampled_from(["application/json", "text/plain", "", "\xff/\xfe"]))
    reply = await exchange(
        hostile, http_request(path, [("Content-Type", ctype.encode("latin-1")), *sig], body)
    )
    assert_json_error(reply, 401, "invalid_signature")
    await assert_nothing_stored(hostile)


async def test_every_wrong_length_and_near_miss_signature_is_refused(hostile):
    body = support.dumps({"message": {"id": "wamid.len"}, "conversation": {"id": "c-1"}})
    good = support.sign(body)
    candidates = []
    lengths = []
    for n in range(0, 160):
        wrong = (good * 3)[:n]
        if n != 64:
            lengths.append(wrong)
            candidates += ["sha256=" + wrong, wrong.upper()]
    near = [
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # one nibble off
        good[1:] + good[0],  # rotated
        "sha256=" + good + "00",
        good + " " + good,
        good + "," + good,
        "sha512=" + good,
        "sha256 =" + good,
        "=" + good,
        good.replace("a", "а"),
        good.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
        support.sign(body, ""),
        support.sign(body[:-1]),
        support.sign(body + b"\n"),
    ]
    for path, header, values in (
        ("/webhooks/kapso", "X-Webhook-Signature", lengths + candidates + near),
        ("/webhooks/meta", "X-Webhook-Signature", lengths + near),
        ("/webhooks/meta", "X-Hub-Signature-256", ["sha256=" + v for v in lengths] + near),
    ):
        for value in values:
            reply = await exchange(hostile, http_request(path, [(header, value.encode())], body))
            assert_json_error(reply, 401, "invalid_signature")
    await assert_nothing_stored(hostile)
    # the control: the same body with the right signature is accepted (and rotation works)
    for secret in (support.SECRET, support.OLD_SECRET):
        reply = await exchange(
            hostile,
            http_request(
                "/webhooks/kapso", [("X-Webhook-Signature", support.sign(body, secret))], body
            ),
        )
        assert reply.status == 200
    await assert_stored_verbatim(hostile, body)


@PROPERTY
@given(data=st.data())
async def test_hostile_headers_never_500_and_store_only_verified_deliveries(hostile, data):
    """Random header names and values (non-ASCII, non-UTF-8, up to 8000 bytes, repeated up to
    100 times), on signed and unsigned requests."""
    path = data.draw(st.sampled_from(WEBHOOKS), label="path")
    body = data.draw(bodies(max_size=512), label="body")
    is_signed = data.draw(st.booleans(), label="signed")
    pairs = data.draw(
        st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=12), label="headers"
    )
    repeat = data.draw(st.integers(1, 8), label="repeat")
    headers = [(n, v) for n, v in pairs for _ in range(repeat)][:100]
    if is_signed:  # the first X-Webhook-Signature is the one verified
        headers.insert(0, ("X-Webhook-Signature", support.sign(body).encode()))
    elif data.draw(st.booleans(), label="valid signature after a bad one"):
        headers += [("X-Webhook-Signature", b"0" * 64), ("X-Webhook-Signature", support.sign(body))]
    before = await counts(hostile)
    reply = await exchange(hostile, http_request(path, headers, body))
    if refused_by_http_parser(headers):  # aiohttp's own 400, before the app
        assert reply.status == 400 and not reply.from_app, (reply.status, reply.body[:200])
        await assert_nothing_stored(hostile, before)
    elif is_signed:
        assert reply.status == 200, (reply.status, reply.body[:300])
        doc = reply.json()
        assert doc["stored"] + doc["duplicates"] >= 1
        # Meta events are keyed by content, so an equal earlier item may own them
        await assert_stored_verbatim(hostile, body, kinds=("kapso",) if "kapso" in path else ())
        event_names = await hostile.pool.fetch(
            "SELECT event_name, idempotency_key FROM events WHERE body_sha256 = $1",
            hashlib.sha256(body).digest(),
        )
        assert all(r["event_name"] for r in event_names)
    else:
        assert_json_error(reply, 401, "invalid_signature")
        await assert_nothing_stored(hostile, before)


CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/octet-stream",
    "",
    "garbage",
    "application/json; charset=latin-1",
    "application/json; charset=bogus",
    "text/html; charset=utf-16",
    "*/*",
    "application/json, text/plain",
]
CONTENT_TYPE_BODIES = [
    b'{"message":{"id":"wamid.ct"}}',
    b"a=1&b=%FF&c",
    b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--xyz--\r\n\xff\xfe{\x00',
]


async def test_wrong_content_types_change_nothing(hostile):
    """The content type is never a reason to refuse a verified delivery or accept another."""
    raw_types = [ct.encode() for ct in CONTENT_TYPES] + ["ünïcødé/typé".encode(), b"\xff\xfe"]
    n = 0
    for path in WEBHOOKS:
        for ctype in raw_types:
            for body in CONTENT_TYPE_BODIES:
                before = await counts(hostile)
                reply = await exchange(hostile, http_request(path, [("Content-Type", ctype)], body))
                assert_json_error(reply, 401, "invalid_signature")
                await assert_nothing_stored(hostile, before)
                unique = body + b" " * n  # a new body each time: a new delivery each time
                n += 1
                reply = await exchange(
                    hostile,
                    http_request(
                        path,
                        [("Content-Type", ctype), ("X-Webhook-Signature", support.sign(unique))],
                        unique,
                    ),
                )
                assert reply.status == 200, (path, ctype, body, reply.status, reply.body)
                await assert_stored_verbatim(hostile, unique, kinds=(path.rsplit("/", 1)[1],))
    no_type = b'{"no":"content-type"}'
    reply = await exchange(
        hostile,
        http_request("/webhooks/kapso", [("X-Webhook-Signature", support.sign(no_type))], no_type),
    )
    assert reply.status == 200
    await assert_stored_verbatim(hostile, no_type)


# --------------------------------------------------------------------------------------------
# correctly signed hostile bodies: 200, stored byte for byte


def _nested(depth: int, open_: bytes, close: bytes, inner: bytes = b"") -> bytes:
    return open_ * depth + inner + close * depth


def _meta_wrap(value: bytes) -> bytes:
    return (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"x",'
        b'"value":' + value + b"}]}]}"
    )


def _batch(items: list[bytes], extra: bytes = b"") -> bytes:
    return b'{"batch":true' + extra + b',"data":[' + b",".join(items) + b"]}"


SIGNED_HOSTILE_BODIES = [
    pytest.param(_nested(10_000, b"[", b"]"), id="deep-array-10k"),
    pytest.param(_nested(10_000, b'{"a":', b"}", b"1"), id="deep-object-10k"),
    pytest.param(_meta_wrap(_nested(1000, b"[", b"]")), id="meta-value-nested-1000"),
    pytest.param(_nested(1000, b"[", b"]"), id="deep-array-1000"),
    pytest.param(_nested(600, b'{"message":', b"}", b"{}"), id="deep-object-600"),
    pytest.param(_batch([_nested(1000, b"[", b"]"), b"1"]), id="batch-item-nested-1000"),
    pytest.param(b"\x00" * 4096, id="nul-bytes"),
    pytest.param(
        b'{"message":{"id":"wamid.\\u0000"},"type":"a\\u0000b","\\u0000":1}', id="nul-escapes"
    ),
    pytest.param(b'{"a":"\x00"}', id="raw-nul-in-string"),
    pytest.param(_batch([b'"\\u0000"', b'{"\\u0000":0}', b"1"]), id="batch-nul-items"),
    pytest.param(b'{"a":"\xc3\x28\xff\xfe","message":{"id":"\xff"}}', id="invalid-utf8"),
    pytest.param(b'{"a":"\xc0\xaf\xe0\x80\xaf"}', id="overlong-utf8"),
    pytest.param(b'{"a":"\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param(
        b'{"\\ud800":"\\udc00","message":{"id":"\\ud800"},"conversation":{"id":'
        b'"\\udfff"},"type":"\\ud800","phone_number_id":"\\udbff"}',
        id="lone-surrogates",
    ),
    pytest.param(
        _batch([b'"\\ud800"', b'{"message":{"id":"\\udc00"}}'], b',"batch_info":"\\ud800"'),
        id="batch-lone-surrogates",
    ),
    pytest.param(b"\xef\xbb\xbf{}", id="utf8-bom"),
    pytest.param(b'{"n":1e999,"m":-1e999,"t":1e-999,"z":-0.0}', id="number-1e999"),
    pytest.param(b"1e999", id="bare-1e999"),
    pytest.param(
        _batch([b"1e999", b"-1e999", b"123456789012345678901234567890"]), id="batch-huge-numbers"
    ),
    pytest.param(
        b'{"n":123456789012345678901234567890123456789012345678901234567890}', id="big-int"
    ),
    pytest.param(b'{"a":NaN,"b":Infinity,"c":-Infinity}', id="nan-infinity"),
    pytest.param(
        b'{"type":"a","type":"b","message":{"id":"x"},"message":{"id":"y"}}', id="duplicate-keys"
    ),
    pytest.param(b"[" + b",".join([b"0"] * 1_000_000) + b"]", id="huge-array-1M"),
    pytest.param(
        _batch([b'{"message":{"id":"wamid.%d"}}' % i for i in range(10_000)]), id="batch-10k-items"
    ),
    pytest.param(
        b'{"entry":[{"changes":[{"field":"messages","value":{"statuses":['
        + b",".join(b'{"id":"w%d","status":"sent"}' % i for i in range(10_000))
        + b"]}}]}]}",
        id="meta-10k-statuses",
    ),
    pytest.param(b'{"a":"' + b"x" * (9 * MIB) + b'"}', id="9MiB-string"),
    pytest.param(random.Random(9).randbytes(9 * MIB), id="9MiB-random-bytes"),
    pytest.param(random.Random(10).randbytes(LIMIT), id="10MiB-at-limit"),
    pytest.param((b'"' + b"\\u00e9" * 300_000 + b'"'), id="escapes-1.8MB"),
    pytest.param(b'{"batch":true,"data":{"a":1}}', id="batch-data-not-list"),
    pytest.param(b'{"batch":true,"data":[]}', id="batch-empty"),
    pytest.param(
        b'{"entry":[1,"x",null,{"changes":[2,{"field":null},{"field":"messages","value":'
        b'{"messages":[5,null,{"id":"\\u0000"}],"statuses":[{"id":"w","status":"\\ud800"}],'
        b'"errors":[1e999]}}]}]}',
        id="meta-shaped-hostile",
    ),
    pytest.param(b"", id="empty"),
    pytest.param(b" \r\n\t ", id="whitespace"),
    pytest.param(b'"just a string"', id="bare-string"),
    pytest.param(b"<html><body>hi</body></html>", id="html"),
]


async def store_signed(sink, body: bytes, paths=WEBHOOKS) -> None:
    """The endpoints answer 200 for the signed body and keep it byte for byte."""
    assert len(body) <= LIMIT
    for path in paths:
        reply = await exchange(sink, signed(body, path=path), timeout=60)
        assert reply.status == 200, (path, reply.status, reply.body[:300])
        doc = reply.json()
        assert doc["stored"] + doc["duplicates"] >= 1
    await assert_stored_verbatim(sink, body, kinds=[p.rsplit("/", 1)[1] for p in paths])
    # every event reads back, and a dropped payload always says why
    rows = await sink.pool.fetch(
        "SELECT payload IS NULL AS no_payload, parse_error FROM events WHERE body_sha256 = $1",
        hashlib.sha256(body).digest(),
    )
    assert all(r["parse_error"] for r in rows if r["no_payload"])


async def test_signed_hostile_bodies_are_stored_verbatim(hostile):
    """All bodies against one sink (a fresh database each would cost more than the requests);
    every failure is reported, each named by its body."""
    failures = []
    big = 0
    for case in SIGNED_HOSTILE_BODIES:
        body = case.values[0]
        paths = WEBHOOKS
        if len(body) > MIB:  # the big ones to one endpoint each, in turn, to bound the run
            paths, big = (WEBHOOKS[big % 2],), big + 1
        try:
            await store_signed(hostile, body, paths)
        except AssertionError as exc:
            failures.append(f"{case.id}: {exc}")
    assert not failures, "\n".join(failures)


async def test_over_the_limit_is_413_and_not_stored(hostile):
    body = b'{"a":"' + b"x" * (LIMIT - 7) + b'"}'
    assert len(body) == LIMIT + 1
    for path in WEBHOOKS:
        for sig in ([], [("X-Webhook-Signature", support.sign(body))]):
            reply = await exchange(hostile, http_request(path, sig, body))
            assert_json_error(reply, 413, "body_too_large")
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            reply = await exchange(
                hostile,
                http_request(
                    path, [*sig, ("Transfer-Encoding", "chunked")], chunked, content_length=False
                ),
            )
            assert_json_error(reply, 413, "body_too_large")
            # a Content-Length over the limit is refused before any body arrives
            lying = http_request(path, sig, b"{}", content_length=False).replace(
                b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1), 1
            )
            reply = await exchange(hostile, lying)
            assert_json_error(reply, 413, "body_too_large")
    await assert_nothing_stored(hostile)


# --------------------------------------------------------------------------------------------
# malformed HTTP at the socket level: 4xx or close, never 500, and the server keeps serving


async def test_oversized_and_repeated_headers(hostile):
    body = b'{"message":{"id":"wamid.hdr"}}'
    good = support.sign(body)
    # one header over aiohttp's 8190-byte field limit: its own 400
    reply = await exchange(hostile, signed(body, extra=[("X-Big", "a" * 9000)]))
    assert reply.status == 400 and not reply.from_app
    reply = await exchange(hostile, signed(body, extra=[("X-Webhook-Event", "é" * 5000)]))
    assert reply.status == 400 and not reply.from_app
    # 200 repeated signature headers: over aiohttp's 128-header limit, its own 400
    many = [("X-Webhook-Signature", good)] + [
        ("X-Webhook-Signature", f"{i:064x}") for i in range(199)
    ]
    reply = await exchange(hostile, http_request("/webhooks/kapso", many, body))
    assert reply.status == 400 and not reply.from_app
    many_bad_first = many[1:] + many[:1]
    reply = await exchange(hostile, http_request("/webhooks/meta", many_bad_first, body))
    assert reply.status == 400 and not reply.from_app
    await assert_nothing_stored(hostile)
    # 100 repeats are within limits: only the first signature counts
    reply = await exchange(hostile, http_request("/webhooks/kapso", many_bad_first[-100:], body))
    assert_json_error(reply, 401, "invalid_signature")
    await assert_nothing_stored(hostile)
    reply = await exchange(hostile, http_request("/webhooks/kapso", many[:100], body))
    assert reply.status == 200
    await assert_stored_verbatim(hostile, body)
    # a megabyte of headers (120 x 8000 bytes) on a signed request: accepted, headers bounded
    body2 = b'{"message":{"id":"wamid.hdr2"}}'
    big = [(f"X-Filler-{i}", ("é" if i % 2 else "z") * 4000) for i in range(120)]
    reply = await exchange(hostile, signed(body2, extra=big))
    assert reply.status == 200, reply.body[:300]
    await assert_stored_verbatim(hostile, body2)
    stored = await hostile.pool.fetchval(
        "SELECT length(headers::text) FROM deliveries WHERE body_sha256 = $1",
        hashlib.sha256(body2).digest(),
    )
    assert stored < 200_000


BAD_REQUEST_LINES = [
    b"\x00\xff garbage \r\n\r\n",
    b"POST\r\n\r\n",
    b"POST /webhooks/kapso HTTP/9.9\r\nContent-Length: 0\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1 extra\r\n\r\n",
    b"POST  /webhooks/kapso  HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"POST /webhooks/kapso?" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
    b"POST /webhooks/\xff\xfe HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1\r\n: empty-name\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1\r\nX-Webhook-Event: a\r\n folded\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1\r\nX-Webhook-Signature: a\x00b\r\n\r\n",
    b"POST /webhooks/kapso HTTP/1.1\nContent-Length: 0\n\n",
    b"POST /webhooks/kapso HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
    b"\r\n\r\n\r\n\r\n",
]


async def test_malformed_requests_are_4xx_or_closed(hostile):
    for data in BAD_REQUEST_LINES:
        reply = await exchange(
            hostile, data, half_close=data.endswith(b"\r\n\r\n\r\n"), timeout=2, silence_ok=True
        )
        try:
            assert_refused(reply)
        except AssertionError as exc:
            raise AssertionError(f"request {data[:80]!r}: {exc}") from None
    await assert_nothing_stored(hostile)


async def test_content_length_mismatch(hostile):
    body = b'{"message":{"id":"wamid.cl"}}'
    sig = ("X-Webhook-Signature", support.sign(body))
    head = http_request("/webhooks/kapso", [sig], b"", content_length=False)[:-2]  # no blank line
    # shorter than declared, then the client goes away (or half-closes)
    for length in (len(body) + 1, len(body) * 10, LIMIT):
        data = head + b"Content-Length: %d\r\n\r\n" % length + body
        assert_refused(await exchange(hostile, data, close_after=0.2))
        assert_refused(await exchange(hostile, data, half_close=True, timeout=5, silence_ok=True))
    # longer than declared: the rest is refused as a pipelined request, or the whole exchange is
    data = head + b"Content-Length: %d\r\n\r\n" % (len(body) - 1) + body + b"GARBAGE\r\n\r\n"
    reply = await exchange(hostile, data, timeout=5, silence_ok=True)
    assert reply.status in (None, 400, 401)
    # values that are not a length
    for value in (b"abc", b"-1", b"1.5", b"0x10", b"99999999999999999999999999", b"1, 2", b""):
        data = head + b"Content-Length: " + value + b"\r\n\r\n" + body
        assert_refused(await exchange(hostile, data, timeout=5, silence_ok=True))
    data = head + b"Content-Length: %d\r\nContent-Length: 1\r\n\r\n" % len(body) + body
    assert_refused(await exchange(hostile, data, timeout=5, silence_ok=True))
    await assert_nothing_stored(hostile)


async def test_chunked_bodies(hostile):
    body = b'{"message":{"id":"wamid.chunked"}}'
    sig = [("X-Webhook-Signature", support.sign(body))]
    valid = (
        b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:5], body[5:20], body[20:]))
        + b"0\r\n\r\n"
    )

    def chunked(payload: bytes, headers=sig, te: bytes = b"chunked") -> bytes:
        return http_request(
            "/webhooks/kapso", [*headers, ("Transfer-Encoding", te)], payload, content_length=False
        )

    # malformed chunking: 4xx or close, nothing stored
    for payload in (
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"-1\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"3\nabc\n0\n\n",
        b"3 ; x\r\nabc\r\n0\r\n\r\n",
    ):
        assert_refused(await exchange(hostile, chunked(payload), timeout=5, silence_ok=True))
    # truncated, then the client goes away or half-closes
    assert_refused(await exchange(hostile, chunked(valid[:-7]), close_after=0.2))
    assert_refused(
        await exchange(hostile, chunked(b"100\r\nabc"), half_close=True, timeout=5, silence_ok=True)
    )
    # framing conflicts and transfer codings the server does not speak
    both = chunked(valid).replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\n", 1)
    assert_refused(await exchange(hostile, both, timeout=5, silence_ok=True))
    for te in (b"gzip", b"chunked, gzip", b"identity", b"xchunked", b"chunked\x0b"):
        assert_refused(await exchange(hostile, chunked(valid, te=te), timeout=5, silence_ok=True))
    await assert_nothing_stored(hostile)
    # unsigned but well chunked: 401
    assert_json_error(await exchange(hostile, chunked(valid, headers=[])), 401, "invalid_signature")
    await assert_nothing_stored(hostile)
    # signed and well chunked (with an extension and a trailer): stored, de-chunked, verbatim
    with_ext = valid.replace(b"\r\n", b";name=value\r\n", 1)[:-2] + b"X-Trailer: 1\r\n\r\n"
    for payload in (valid, with_ext):
        reply = await exchange(hostile, chunked(payload))
        assert reply.status == 200, reply.body[:300]
    await assert_stored_verbatim(hostile, body)


async def test_content_encoding_never_stores_unverified_bytes(hostile):
    body = b'{"message":{"id":"wamid.gz"}}'
    packed = gzip.compress(body)
    # aiohttp decodes the body before the app sees it; whichever bytes were verified are the
    # bytes stored (the hostile fixture re-checks every stored body against its signature)
    for coding, sent, sig_over in (
        ("gzip", packed, packed),
        ("gzip", packed, body),
        ("gzip, br", body, body),
        ("x-unknown", body, body),
        ("identity", body, body),
    ):
        reply = await exchange(
            hostile,
            http_request(
                "/webhooks/kapso",
                [("Content-Encoding", coding), ("X-Webhook-Signature", support.sign(sig_over))],
                sent,
            ),
        )
        assert reply.status in (200, 401), reply.body[:300]
        if reply.status == 401:
            assert_json_error(reply, 401, "invalid_signature")
    # a bomb: 50 KB that inflates to 50 MiB is over the limit, signed or not
    bomb = gzip.compress(b"0" * (50 * MIB), compresslevel=9)
    for sig in (
        [],
        [("X-Webhook-Signature", support.sign(bomb))],
        [("X-Webhook-Signature", support.sign(b"0" * (50 * MIB)))],
    ):
        before = await counts(hostile)
        reply = await exchange(
            hostile, http_request("/webhooks/kapso", [("Content-Encoding", "gzip"), *sig], bomb)
        )
        assert_json_error(reply, 413, "body_too_large")
        await assert_nothing_stored(hostile, before)
    # codings the server cannot decode: refused before the body is read
    for coding, data in ((b"br", body), (b"zstd", body)):
        before = await counts(hostile)
        reply = await exchange(
            hostile,
            http_request(
                "/webhooks/kapso",
                [("Content-Encoding", coding), ("X-Webhook-Signature", support.sign(data))],
                data,
            ),
        )
        assert_refused(reply)
        await assert_nothing_stored(hostile, before)


@pytest.mark.parametrize(
    ("coding", "data"),
    [
        pytest.param("gzip", b"not gzip at all", id="gzip-garbage"),
        pytest.param("gzip", b"\x1f\x8b\x08\x00" + b"\xff" * 40, id="gzip-corrupt-stream"),
        pytest.param(
            "deflate", zlib.compress(b'{"a":1}')[:2] + b"\xff" * 20, id="deflate-corrupt-stream"
        ),
    ],
)
async def test_undecodable_body_is_400_not_500(sink, coding, data):
    reply = await exchange(
        sink,
        http_request(
            "/webhooks/kapso",
            [("Content-Encoding", coding), ("X-Webhook-Signature", support.sign(data))],
            data,
        ),
    )
    await assert_nothing_stored(sink)
    assert_refused(reply)
    await assert_no_server_errors(sink)


@PROPERTY
@given(garbage=st.binary(min_size=1, max_size=600), framing=st.sampled_from([b"", b"\r\n\r\n"]))
async def test_random_bytes_as_a_whole_request(hostile, garbage, framing):
    reply = await exchange(hostile, garbage + framing, half_close=True, timeout=5, silence_ok=True)
    if reply.status is not None:
        assert reply.status < 500, reply.body[:300]
        assert b"Traceback" not in reply.body
    await assert_nothing_stored(hostile)


@PROPERTY
@given(
    method=st.one_of(
        st.sampled_from(
            [
                "GET",
                "PUT",
                "DELETE",
                "PATCH",
                "HEAD",
                "OPTIONS",
                "TRACE",
                "CONNECT",
                "post",
                "POSTX",
            ]
        ),
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-!#$%&'*+.^_`|~", min_size=1, max_size=12),
    ),
    suffix=st.sampled_from(
        [
            "",
            "/",
            "//",
            "/../kapso",
            "%2f",
            "?x=%ff",
            "?\u00e9",
            "/x",
            ";a=b",
            "#frag",
            "%00",
            "?hub.mode=subscribe",
        ]
    ),
    path=st.sampled_from(
        [
            "/webhooks/kapso",
            "/webhooks/meta",
            "/webhooks/KAPSO",
            "/webhooks/%6bapso",
            "//webhooks/kapso",
            "/webhooks",
        ]
    ),
)
async def test_other_methods_and_paths_never_store(hostile, method, suffix, path):
    body = b'{"message":{"id":"wamid.m"}}'
    target = quote_from_bytes((path + suffix).encode(), safe="/%?=;#&.")
    reply = await exchange(
        hostile,
        http_request(target, [("X-Webhook-Signature", "0" * 64)], body, method=method),
        timeout=5,
        silence_ok=True,
    )
    if reply.status is not None:
        assert reply.status < 500, (method, target, reply.status, reply.body[:200])
        if reply.from_app and reply.status >= 400 and method != "HEAD":
            assert_json_error(reply, reply.status)
    await assert_nothing_stored(hostile)


@PROPERTY
@given(
    params=st.dictionaries(
        st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "hub.other", "x"]),
        st.one_of(st.binary(max_size=40), st.sampled_from([b"subscribe", VERIFY_TOKEN.encode()])),
        max_size=4,
    )
)
async def test_meta_handshake_only_echoes_for_the_right_token(hostile, params):
    query = "&".join(f"{k}={quote_from_bytes(v, safe='')}" for k, v in params.items())
    reply = await exchange(
        hostile,
        http_request("/webhooks/meta?" + query, [], b"", method="GET", content_length=False),
    )
    ok = (
        params.get("hub.mode") == b"subscribe"
        and params.get("hub.verify_token") == VERIFY_TOKEN.encode()
    )
    if ok:
        assert reply.status == 200, reply.body[:200]
        assert reply.headers["Content-Type"].startswith("text/plain")
        challenge = params.get("hub.challenge", b"")
        with contextlib.suppress(UnicodeDecodeError):  # undecodable: the echo is still text
            assert reply.body == challenge.decode("utf-8").encode()
        reply.body.decode("utf-8")
    else:
        assert_json_error(reply, 403, "forbidden")
    await assert_nothing_stored(hostile)


# --------------------------------------------------------------------------------------------
# a database outage: verified hostile deliveries are spooled, then drained


async def test_outage_spools_hostile_headers_and_keeps_serving(database, databases, tmp_path):
    settings = support.make_settings(tmp_path, KAPSO_SINK_COMMIT_TIMEOUT=2)
    running = await support.start_sink(database, settings)
    name = urlsplit(database).path.lstrip("/")
    admin = await asyncpg.connect(databases.admin_dsn)
    failed = True
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        hostile_body = b'{"message":{"id":"wamid.outage1"}}'
        reply = await exchange(
            running,
            signed(
                hostile_body,
                extra=[("X-Webhook-Event", b"\xff\xfe"), ("X-Idempotency-Key", b"\xed\xa0\x80")],
            ),
        )
        assert reply.status == 200 and reply.json().get("spooled") is True, reply.body[:300]
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        after = b'{"message":{"id":"wamid.outage2"}}'
        reply = await exchange(running, signed(after))
        assert reply.status == 200, reply.body[:300]

        async def drained():
            conn = await asyncpg.connect(database)
            try:
                return await conn.fetchval("SELECT count(*) FROM deliveries") == 2
            finally:
                await conn.close()

        await support.wait_until(drained, limit=15)
        conn = await asyncpg.connect(database)
        try:
            stored = {bytes(r["body"]) for r in await conn.fetch("SELECT body FROM deliveries")}
        finally:
            await conn.close()
        assert stored == {hostile_body, after}
        failed = False
    finally:
        with contextlib.suppress(Exception):
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
        try:
            await support.stop_sink(running)
        except Exception:
            if not failed:
                raise


# --------------------------------------------------------------------------------------------
# fuzzing the pure parts: signature header, envelope parsers, header capture

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def assert_clean(value, limit: int | None = None) -> None:
    """Text PostgreSQL can store: str, no NUL, valid UTF-8, bounded."""
    if value is None:
        return
    assert isinstance(value, str)
    assert "\x00" not in value
    value.encode("utf-8")  # raises on lone surrogates
    if limit is not None:
        assert len(value) <= limit


def assert_storable(body: bytes, headers, delivery, events, kind: str) -> None:
    assert delivery.body == body
    assert delivery.body_sha256 == hashlib.sha256(body).digest()
    assert delivery.kind == kind
    kept = json.loads(delivery.headers)
    assert isinstance(kept, dict)
    for k, v in kept.items():
        assert_clean(k)
        assert_clean(v, 2000)
    assert events, "a verified delivery must yield at least one event"
    for event in events:
        assert isinstance(event.idem_hash, bytes) and len(event.idem_hash) == 32
        assert event.kind == kind and event.body_sha256 == delivery.body_sha256
        assert event.event_name
        assert_clean(event.event_name, 600)
        for text in (
            event.idempotency_key,
            event.payload_version,
            event.phone_number_id,
            event.conversation_id,
            event.message_id,
            event.parse_error,
        ):
            assert_clean(text)
        for doc in (event.payload, event.batch_info):
            if doc is not None:
                assert_clean(doc)
                assert "\\u0000" not in doc
                try:
                    orjson.loads(doc)
                except orjson.JSONDecodeError:  # NaN, 1e999, lone surrogate escapes
                    json.loads(doc)
        if event.payload is None:
            assert event.parse_error, "a dropped payload must say why"
    if kind == "kapso":
        assert len({e.idem_hash for e in events}) == len(events)


def _headers(pairs) -> CIMultiDict:
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: model that
    return CIMultiDict((k, v.decode("utf-8", "surrogateescape")) for k, v in pairs)


FUZZ_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "X-Webhook-Event",
                "X-Idempotency-Key",
                "X-Webhook-Payload-Version",
                "X-Webhook-Batch",
                "Content-Type",
                "X-Other",
                "User-Agent",
            ]
        ),
        st.one_of(st.binary(max_size=40), st.sampled_from([b"true", b"TRUE", b"v1", b"v2"])),
    ),
    max_size=6,
)


@FUZZ
@given(
    header=st.one_of(
        st.none(),
        st.text(max_size=140),
        st.text(_HEX + _HEX.upper() + " =sha256SHA", max_size=80),
        st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape")),
    )
)
def test_fuzz_signature_header(header):
    try:
        digest = signature.parse_header(header)
    except signature.SignatureError as exc:
        assert_clean(exc.reason)
        return
    assert isinstance(digest, bytes) and len(digest) == 32
    sig = header.strip()
    sig = sig[7:] if sig[:7].lower() == "sha256=" else sig
    assert sig.isascii() and bytes.fromhex(sig) == digest


@FUZZ
@given(body=bodies(KAPSO_DOCS), pairs=FUZZ_HEADERS)
def test_fuzz_kapso_envelope(body, pairs):
    headers = _headers(pairs)
    delivery, events = kapso.parse_delivery(body, headers, "abcd1234", NOW)
    assert_storable(body, headers, delivery, events, "kapso")


@FUZZ
@given(body=bodies(META_DOCS), pairs=FUZZ_HEADERS)
def test_fuzz_meta_envelope(body, pairs):
    headers = _headers(pairs)
    delivery, events = meta.parse_delivery(body, headers, "abcd1234", NOW)
    assert_storable(body, headers, delivery, events, "meta")
    assert meta.key_matches_body(headers, body) in (True, False, None)


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=3000)), max_size=80
    ),
    value=st.one_of(TEXT, st.integers(), st.floats(), st.none(), st.booleans(), JSON_VALUES),
    limit=st.integers(1, 600),
)
def test_fuzz_header_capture_and_clean_text(pairs, value, limit):
    kept = json.loads(envelope.headers_json(_headers(pairs)))
    assert len(kept) <= 64
    for k, v in kept.items():
        assert_clean(k)
        assert_clean(v, 2000)
    assert_clean(clean_text(value, limit), limit)


DEEP_BODIES = [
    pytest.param("kapso", _nested(10_000, b"[", b"]"), id="kapso-array-10k"),
    pytest.param("meta", _nested(10_000, b'{"a":', b"}", b"1"), id="meta-object-10k"),
    pytest.param("meta", _meta_wrap(_nested(1000, b"[", b"]")), id="meta-value-1000"),
    pytest.param("kapso", _nested(1000, b"[", b"]"), id="kapso-array-1000"),
    pytest.param("meta", _nested(1000, b"[", b"]"), id="meta-array-1000"),
    pytest.param("kapso", _batch([_nested(1020, b'{"a":', b"}", b"1")]), id="kapso-batch-1020"),
    pytest.param("meta", _meta_wrap(_nested(200, b"[", b"]")), id="meta-value-200"),
]


@pytest.mark.parametrize(("kind", "body"), DEEP_BODIES)
def test_deep_nesting_parses_without_escaping_exceptions(kind, body):
    parser = kapso if kind == "kapso" else meta
    delivery, events = parser.parse_delivery(body, CIMultiDict(), "abcd1234", NOW)
    assert_storable(body, CIMultiDict(), delivery, events, kind)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        pytest.param("kapso", _batch([b"1e999", b"-1e999", b"NaN"]), id="kapso-batch-items"),
        pytest.param(
            "kapso", _batch([b'{"message":{"id":"w1","timestamp":1e999}}']), id="kapso-batch-field"
        ),
        pytest.param(
            "meta",
            b'{"entry":[{"changes":[{"field":"messages","value":{"statuses":'
            b'[{"id":"w1","status":"sent","timestamp":1e999}]}}]}]}',
            id="meta-status",
        ),
    ],
)
def test_non_finite_numbers_are_never_silently_nulled(kind, body):
    parser = kapso if kind == "kapso" else meta
    _, events = parser.parse_delivery(body, CIMultiDict(), "abcd1234", NOW)
    for event in events:
        if event.payload is None:
            assert event.parse_error  # dropped, and says why: fine
            continue
        assert "null" not in event.payload, (event.payload, event.parse_error)
