"""GET /openapi.json: an OpenAPI 3.1 document generated from the pydantic response models."""

from __future__ import annotations

from aiohttp import web
from pydantic.json_schema import models_json_schema

from service.api import models

_REF = "#/components/schemas/{model}"


def _param(
    name: str,
    where: str = "query",
    schema: dict | None = None,
    desc: str = "",
    required: bool = False,
) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": desc,
        "schema": schema or {"type": "string"},
    }


def _json(ref: str, desc: str) -> dict:
    return {
        "description": desc,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=ref)}}},
    }


_ERR = {
    "400": _json("Error", "a parameter is invalid"),
    "401": _json("Error", "missing or wrong bearer token"),
}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 500}
_TIME = {"type": "string", "format": "date-time"}
_WEBHOOK_HEADERS = [
    _param("X-Webhook-Signature", "header", desc="hex HMAC-SHA256 of the raw body", required=True),
    _param("X-Webhook-Event", "header", desc="event name"),
    _param("X-Idempotency-Key", "header"),
    _param("X-Webhook-Payload-Version", "header"),
    _param("X-Webhook-Batch", "header"),
]


def _paths() -> dict:
    secured = [{"bearer": []}]
    return {
        "/webhooks/kapso": {
            "post": {
                "summary": "Receive a Kapso webhook delivery",
                "operationId": "receiveKapso",
                "parameters": _WEBHOOK_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}},
                },
                "responses": {
                    "200": _json("WebhookAck", "committed (or already stored)"),
                    "401": _json("Error", "signature missing, malformed or wrong"),
                    "413": _json("Error", "body over the size limit"),
                    "503": _json("Error", "the log could not commit; retry"),
                },
            }
        },
        "/webhooks/meta": {
            "post": {
                "summary": "Receive a raw Meta (WhatsApp Cloud API) webhook delivery",
                "operationId": "receiveMeta",
                "parameters": [
                    _param(
                        "X-Webhook-Signature",
                        "header",
                        desc="Kapso's hex HMAC-SHA256 of the raw body with a webhook secret",
                    ),
                    _param(
                        "X-Hub-Signature-256",
                        "header",
                        desc="Meta's sha256=<hex> with META_APP_SECRET",
                    ),
                    _param("X-Idempotency-Key", "header", desc="Kapso: SHA-256 of the body"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}},
                },
                "responses": {
                    "200": _json("WebhookAck", "committed (or already stored)"),
                    "401": _json("Error", "no signature verifies"),
                    "413": _json("Error", "body over the size limit"),
                    "503": _json("Error", "the log could not commit; retry"),
                },
            },
            "get": {
                "summary": "Meta's subscription handshake",
                "operationId": "metaHandshake",
                "parameters": [
                    _param("hub.mode"),
                    _param("hub.verify_token"),
                    _param("hub.challenge"),
                ],
                "responses": {
                    "200": {
                        "description": "the challenge, echoed",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "403": _json("Error", "wrong mode or token"),
                },
            },
        },
        "/healthz": {
            "get": {
                "summary": "Process liveness",
                "operationId": "healthz",
                "responses": {"200": _json("Health", "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Database reachable and migrated",
                "operationId": "readyz",
                "responses": {"200": _json("Health", "ready"), "503": _json("Health", "not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/conversations": {
            "get": {
                "summary": "List conversations (keyset pages)",
                "operationId": "listConversations",
                "security": secured,
                "parameters": [
                    _param("status", schema={"type": "string", "enum": ["active", "ended"]}),
                    _param("phone_number_id"),
                    _param("updated_after", schema=_TIME),
                    _param("limit", schema=_LIMIT),
                    _param("cursor"),
                ],
                "responses": {"200": _json("ConversationPage", "a page"), **_ERR},
            }
        },
        "/v1/conversations/{id}": {
            "get": {
                "summary": "One conversation",
                "operationId": "getConversation",
                "security": secured,
                "parameters": [_param("id", "path")],
                "responses": {
                    "200": _json("Conversation", "found"),
                    "404": _json("Error", "unknown id"),
                    **_ERR,
                },
            }
        },
        "/v1/conversations/{id}/messages": {
            "get": {
                "summary": "A conversation's messages in conversation order",
                "operationId": "conversationMessages",
                "security": secured,
                "parameters": [
                    _param("id", "path"),
                    _param("limit", schema=_LIMIT),
                    _param("cursor"),
                ],
                "responses": {
                    "200": _json("MessagePage", "a page"),
                    "404": _json("Error", "unknown id"),
                    **_ERR,
                },
            }
        },
        "/v1/messages/{id}": {
            "get": {
                "summary": "One message's delivery and read receipts",
                "operationId": "getMessage",
                "security": secured,
                "parameters": [_param("id", "path")],
                "responses": {
                    "200": _json("Message", "found"),
                    "404": _json("Error", "unknown id"),
                    **_ERR,
                },
            }
        },
        "/v1/metrics/delivery": {
            "get": {
                "summary": "Delivery funnel and latencies per number and bucket",
                "operationId": "deliveryMetrics",
                "security": secured,
                "parameters": [
                    _param("phone_number_id"),
                    _param("since", schema=_TIME),
                    _param("until", schema=_TIME),
                    _param("bucket", schema={"type": "string", "enum": ["hour", "day"]}),
                ],
                "responses": {"200": _json("DeliveryMetrics", "metrics"), **_ERR},
            }
        },
        "/v1/events": {
            "get": {
                "summary": "Raw log entries in position order",
                "operationId": "listEvents",
                "security": secured,
                "parameters": [
                    _param("after", schema={"type": "integer", "minimum": 0}),
                    _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000}),
                    _param("event"),
                    _param("conversation_id"),
                    _param("message_id"),
                ],
                "responses": {"200": _json("EventPage", "entries"), **_ERR},
            }
        },
        "/v1/deliveries/{sha256}": {
            "get": {
                "summary": "One raw delivery, byte for byte (find the hash in /v1/events)",
                "operationId": "getDelivery",
                "security": secured,
                "parameters": [_param("sha256", "path", desc="hex SHA-256 of the body")],
                "responses": {
                    "200": _json("Delivery", "found"),
                    "404": _json("Error", "unknown hash"),
                    **_ERR,
                },
            }
        },
        "/v1/projections": {
            "get": {
                "summary": "Projection checkpoints and lag",
                "operationId": "listProjections",
                "security": secured,
                "responses": {"200": _json("ProjectionList", "projections"), **_ERR},
            }
        },
    }


def document(extra_paths: dict | None = None) -> dict:
    """The whole OpenAPI 3.1 document."""
    response_models = [
        models.Error,
        models.WebhookAck,
        models.Conversation,
        models.ConversationPage,
        models.Message,
        models.MessagePage,
        models.DeliveryMetrics,
        models.EventPage,
        models.ProjectionList,
        models.Delivery,
        models.Health,
    ]
    _, schema = models_json_schema(
        [(m, "serialization") for m in response_models], ref_template=_REF
    )
    paths = _paths()
    paths.update(extra_paths or {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kapso-sink",
            "version": "1",
            "description": "Durable store and query API for Kapso WhatsApp webhooks",
        },
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app.get(EXTRA_PATHS)))


EXTRA_PATHS = web.AppKey("openapi_extra_paths", dict)


def setup(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi)
