"""GET /v1/...: conversations, messages, delivery metrics, the raw log and projections."""

from __future__ import annotations

import base64
import hmac
from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import BaseModel

from service import keys
from service.api import models, params
from service.db import Q
from service.errors import ApiError
from service.projections import runner

MAX_PAGE = 500


def reply(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


@web.middleware
async def require_token(request: web.Request, handler):
    """Bearer-token check for /v1 when KAPSO_SINK_API_TOKEN is set."""
    token = request.app[keys.settings].api_token
    if token is not None and request.path.startswith("/v1/"):
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)


def conversation(row) -> models.Conversation:
    inactivity = None
    if row["last_inactive_at"] is not None:
        inactivity = models.Inactivity(
            at=row["last_inactive_at"], minutes=row["inactivity_minutes"]
        )
    return models.Conversation(
        id=row["id"],
        phone_number_id=row["phone_number_id"],
        status=row["status"],
        contact_phone=row["contact_phone"],
        contact_bsuid=row["contact_bsuid"],
        contact_name=row["contact_name"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        last_active_at=row["last_active_at"],
        last_inactivity=inactivity,
        inbound_count=row["inbound_count"],
        outbound_count=row["outbound_count"],
        last_message_id=row["last_message_id"],
        last_message_at=row["last_message_at"],
        updated_at=row["updated_at"],
    )


def message(row) -> models.Message:
    return models.Message(**{k: row[k] for k in models.Message.model_fields})


async def list_conversations(request: web.Request) -> web.Response:
    status = params.text(request, "status", choices=("active", "ended"))
    phone = params.text(request, "phone_number_id")
    updated_after = params.timestamp(request, "updated_after")
    limit = params.integer(request, "limit", default=50, low=1, high=MAX_PAGE)
    after = params.cursor(request) or [0, ""]
    if not isinstance(after[0], int) or not isinstance(after[1], str) or not 0 <= after[0] < 2**63:
        raise ApiError(400, "bad_parameter", "cursor: not a cursor this API returned")
    rows = await request.app[keys.pool].fetch(
        Q["list_conversations"], status, phone, updated_after, after[0], after[1], limit + 1
    )
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = params.encode_cursor(page[-1]["updated_position"], page[-1]["id"])
    return reply(
        models.ConversationPage(
            conversations=[conversation(r) for r in page], next_cursor=next_cursor
        )
    )


async def get_conversation(request: web.Request) -> web.Response:
    row = await request.app[keys.pool].fetchrow(
        Q["get_conversation"], params.path_id(request, "conversation")
    )
    if row is None:
        raise ApiError(404, "not_found", "no conversation with that id")
    return reply(conversation(row))


_NO_TIME = datetime(1, 1, 1, tzinfo=UTC)


async def conversation_messages(request: web.Request) -> web.Response:
    conversation_id = params.path_id(request, "conversation")
    limit = params.integer(request, "limit", default=100, low=1, high=MAX_PAGE)
    after = params.cursor(request)
    if after is None:
        after_time, after_id = _NO_TIME, ""
    else:
        try:
            after_time, after_id = datetime.fromisoformat(after[0]), str(after[1])
            if after_time.tzinfo is None:
                after_time = after_time.replace(tzinfo=UTC)
        except (TypeError, ValueError):
            raise ApiError(400, "bad_parameter", "cursor: not a cursor this API returned") from None
    pool = request.app[keys.pool]
    if await pool.fetchrow(Q["get_conversation"], conversation_id) is None:
        raise ApiError(404, "not_found", "no conversation with that id")
    rows = await pool.fetch(
        Q["conversation_messages"], conversation_id, after_time, after_id, limit + 1
    )
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last_time = page[-1]["message_at"] or datetime.max.replace(tzinfo=UTC)
        next_cursor = params.encode_cursor(last_time.isoformat(), page[-1]["id"])
    return reply(models.MessagePage(messages=[message(r) for r in page], next_cursor=next_cursor))


async def get_message(request: web.Request) -> web.Response:
    row = await request.app[keys.pool].fetchrow(
        Q["get_message"], params.path_id(request, "message")
    )
    if row is None:
        raise ApiError(404, "not_found", "no message with that id")
    return reply(message(row))


async def delivery_metrics(request: web.Request) -> web.Response:
    bucket = params.text(request, "bucket", choices=("hour", "day")) or "hour"
    phone = params.text(request, "phone_number_id")
    until = params.timestamp(request, "until") or datetime.now(UTC)
    since = params.timestamp(request, "since")
    if since is None:
        try:
            since = until - timedelta(days=7)
        except OverflowError:
            since = datetime.min.replace(tzinfo=UTC)
    if since >= until:
        raise ApiError(400, "bad_parameter", "since: must be before until")
    rows = await request.app[keys.pool].fetch(Q["delivery_metrics"], bucket, phone, since, until)
    buckets = [
        models.MetricsBucket(
            bucket_start=r["bucket"],
            **{k: r[k] for k in models.MetricsBucket.model_fields if k != "bucket_start"},
        )
        for r in rows
    ]
    return reply(models.DeliveryMetrics(bucket=bucket, since=since, until=until, buckets=buckets))


def log_event(row) -> models.LogEvent:
    values = {
        k: row[k] for k in models.LogEvent.model_fields if k not in ("idem_hash", "body_sha256")
    }
    return models.LogEvent(
        idem_hash=row["idem_hash"].hex(), body_sha256=row["body_sha256"].hex(), **values
    )


async def list_events(request: web.Request) -> web.Response:
    after = params.integer(request, "after", default=0, low=0, high=2**63 - 1)
    limit = params.integer(request, "limit", default=100, low=1, high=1000)
    event = params.text(request, "event", max_len=200)
    conversation_id = params.text(request, "conversation_id")
    message_id = params.text(request, "message_id")
    pool = request.app[keys.pool]
    if message_id is not None:
        rows = await pool.fetch(
            Q["events_by_message"], message_id, after, event, conversation_id, limit
        )
    elif conversation_id is not None:
        rows = await pool.fetch(Q["events_by_conversation"], conversation_id, after, event, limit)
    else:
        rows = await pool.fetch(Q["events_after"], after, event, limit)
    next_after = rows[-1]["position"] if rows else after
    return reply(models.EventPage(events=[log_event(r) for r in rows], next_after=next_after))


async def get_delivery(request: web.Request) -> web.Response:
    digest = request.match_info["sha256"]
    try:
        key = bytes.fromhex(digest)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ApiError(400, "bad_parameter", "sha256: must be 64 hex characters")
    row = await request.app[keys.pool].fetchrow(Q["get_delivery"], key)
    if row is None:
        raise ApiError(404, "not_found", "no delivery with that body hash")
    return reply(
        models.Delivery(
            body_sha256=digest.lower(),
            kind=row["kind"],
            received_at=row["received_at"],
            headers=row["headers"],
            key_is_body_sha256=row["key_is_body_sha256"],
            body_base64=base64.b64encode(row["body"]).decode(),
        )
    )


async def list_projections(request: web.Request) -> web.Response:
    rows = await runner.status(request.app[keys.pool])
    return reply(models.ProjectionList(projections=[models.Projection(**r) for r in rows]))


ROUTES = [
    ("GET", "/v1/conversations", list_conversations),
    ("GET", "/v1/conversations/{id}", get_conversation),
    ("GET", "/v1/conversations/{id}/messages", conversation_messages),
    ("GET", "/v1/messages/{id}", get_message),
    ("GET", "/v1/metrics/delivery", delivery_metrics),
    ("GET", "/v1/events", list_events),
    ("GET", "/v1/deliveries/{sha256}", get_delivery),
    ("GET", "/v1/projections", list_projections),
]


def setup(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
