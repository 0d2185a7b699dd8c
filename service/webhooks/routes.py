"""POST /webhooks/kapso: verify, parse, append, and answer only after commit."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from service import keys
from service.errors import json_error
from service.log.spool import RawDelivery
from service.log.writer import StoreUnavailable
from service.webhooks import kapso, meta, parse, signature

RETRY_AFTER_SECONDS = "5"


async def read_body(request: web.Request) -> bytes:
    """The raw body, or a 413 when it is over the configured limit."""
    limit = request.app[keys.settings].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise json_error(413, "body_too_large", f"body exceeds {limit} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise json_error(413, "body_too_large", f"body exceeds {limit} bytes") from None
    except (RequestPayloadError, aiohttp.ClientPayloadError, ValueError) as exc:
        raise json_error(
            400, "unreadable_body", f"the body could not be read or decoded: {type(exc).__name__}"
        ) from None


def verify(request: web.Request, body: bytes, header: str = "X-Webhook-Signature") -> str:
    """The id of the secret that signed `body`, or a 401."""
    try:
        return signature.verify(body, request.headers.get(header), request.app[keys.keyring])
    except signature.SignatureError as exc:
        request[keys.signature_failure] = True
        raise json_error(401, "invalid_signature", exc.reason) from None


def _text(value: str) -> str:
    # aiohttp maps undecodable header bytes to surrogates; keep them visible but valid UTF-8
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def raw_delivery(request: web.Request, kind: str, body: bytes, secret_id: str) -> RawDelivery:
    headers = []
    for name, value in request.headers.items():
        lower = name.lower()
        if lower.startswith("x-") or lower == "content-type":
            headers.append((_text(name), _text(value)))
    return RawDelivery(kind, datetime.now(UTC), secret_id, tuple(headers), body)


async def append(request: web.Request, raw: RawDelivery) -> web.Response:
    """Commit the delivery's events and answer 200 with counts (spooled when the database is
    unreachable), or 503 when neither is possible."""
    delivery, events = parse.parse_raw(raw)
    try:
        result = await request.app[keys.writer].append(delivery, events, raw)
    except StoreUnavailable as exc:
        raise json_error(
            503,
            "store_unavailable",
            f"{exc}; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from None
    request[keys.stored], request[keys.duplicates] = result.stored, result.duplicates
    answer = {"stored": result.stored, "duplicates": result.duplicates}
    if result.spooled:
        answer["spooled"] = True
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def receive_kapso(request: web.Request) -> web.Response:
    body = await read_body(request)
    secret_id = verify(request, body)
    return await append(request, raw_delivery(request, kapso.KIND, body, secret_id))


def verify_meta(request: web.Request, body: bytes) -> str:
    """Kapso's X-Webhook-Signature with a webhook secret, or Meta's X-Hub-Signature-256 with
    META_APP_SECRET; the id of whichever secret matched, or a 401."""
    reasons = []
    for header, keyring in (
        ("X-Webhook-Signature", request.app[keys.keyring]),
        ("X-Hub-Signature-256", request.app.get(keys.meta_keyring)),
    ):
        if keyring is None:
            continue
        try:
            return signature.verify(body, request.headers.get(header), keyring)
        except signature.SignatureError as exc:
            reasons.append(f"{header}: {exc.reason}")
    request[keys.signature_failure] = True
    raise json_error(401, "invalid_signature", "; ".join(reasons))


async def receive_meta(request: web.Request) -> web.Response:
    body = await read_body(request)
    secret_id = verify_meta(request, body)
    return await append(request, raw_delivery(request, meta.KIND, body, secret_id))


async def meta_handshake(request: web.Request) -> web.Response:
    """Meta's subscription check: echo hub.challenge when hub.verify_token matches."""
    token = request.app[keys.settings].meta_verify_token
    given = request.query.get("hub.verify_token", "")
    if (
        token is None
        or request.query.get("hub.mode") != "subscribe"
        or not hmac.compare_digest(given.encode(), token.get_secret_value().encode())
    ):
        raise json_error(
            403,
            "forbidden",
            "hub.mode must be subscribe and hub.verify_token must equal META_VERIFY_TOKEN",
        )
    return web.Response(text=request.query.get("hub.challenge", ""), content_type="text/plain")


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/kapso", receive_kapso)
    app.router.add_post("/webhooks/meta", receive_meta)
    app.router.add_get("/webhooks/meta", meta_handshake)
