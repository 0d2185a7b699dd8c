"""schemathesis over the whole OpenAPI document of a live sink, with and without a token.

The sink is the real service on a real socket: token-protected, projector on, and seeded once
per module with the project's simulated Kapso traffic, so the /v1 answers have real rows in
them. schemathesis takes the `/openapi.json` it serves and, for every operation, generates
positive (schema-valid) and negative (schema-violating) requests, sends them with `requests`
and validates each answer. It runs in a worker thread (`asyncio.to_thread`): the in-process server
lives on the session event loop, which must keep serving while schemathesis blocks.

Checks: no 5xx, the status code is documented, the content type is the documented one, the body
matches the schema documented for its status (every 200 included), schema-violating data is
refused, an unsupported method is 405. With the token also `ignored_auth` (the same request
without or with a wrong token must be refused); without it, every /v1 answer must be the
documented 401 with `WWW-Authenticate: Bearer`. Operations with a path id are also run with the
ids of seeded rows, so their 200 bodies are validated too, not only their 404s.

Generation is derandomized (fixed seed) and bounded (EXAMPLES per operation and mode), so a run
is reproducible. Unknown extra query parameters are not generated: ignoring them is normal,
not a schema violation. One test per operation and token mode, so a finding names both.
"""

from __future__ import annotations

import asyncio
import hashlib
import traceback
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import pytest_asyncio
import requests
import schemathesis
import yarl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks

from analytics import simulator
from service.api import openapi
from tests import support

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TOKEN = "st-token-" + hashlib.sha256(b"kapso-sink schemathesis").hexdigest()[:24]
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25  # per operation and generation mode
KNOWN_ID_EXAMPLES = 5
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.unsupported_method,
]
TOKEN_CHECKS = [*CHECKS, openapi_checks.ignored_auth]

DOCUMENT = openapi.document()
OPERATIONS = [
    f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item
]


def negatable(label: str) -> bool:
    """Whether schemathesis can make schema-violating data for an operation: something must be
    required or constrained. (Otherwise hypothesis spends seconds finding out it cannot.)"""
    method, path = label.split(" ", 1)
    op = DOCUMENT["paths"][path][method.lower()]
    body = op.get("requestBody", {}).get("content", {})
    return (
        bool(op.get("security"))
        or any(
            p.get("required") or set(p.get("schema", {})) - {"type", "description"}
            for p in op.get("parameters", [])
        )
        or any(c.get("schema") for c in body.values())
    )


def modes_for(label: str) -> tuple[GenerationMode, ...]:
    if negatable(label):
        return (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return (GenerationMode.POSITIVE,)


KNOWN_FINDINGS: dict[str, str] = {}  # operation -> why it is expected to fail (none now)


@dataclass
class Report:
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def load_schema(document: dict):
    config = schemathesis.Config.from_dict(
        {
            "seed": 20260131,
            "cache": {"enabled": False},
            "generation": {"allow-extra-parameters": False},
        }
    )
    return schemathesis.openapi.from_dict(document, config=config)


def run_operation(
    schema,
    label: str,
    base_url: str,
    headers: dict,
    checks,
    *,
    expect=None,
    path_parameters: dict | None = None,
    modes=tuple(GenerationMode),
    examples: int = EXAMPLES,
) -> Report:
    """One operation, each generation mode, against the live server (blocking)."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    report = Report()
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy from the environment
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def call(case):
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=30
                )
                report.calls += 1
                report.statuses[response.status_code] = (
                    report.statuses.get(response.status_code, 0) + 1
                )
                assert b"Traceback" not in response.content
                if expect is not None:
                    expect(case, response)
                case.validate_response(
                    response,
                    checks=checks,
                    headers=headers,
                    transport_kwargs={"session": session, "headers": headers},
                )

            try:
                call()
            except Unsatisfiable as exc:  # e.g. nothing to negate in an operation without inputs
                report.skipped.append(f"{mode.value}: {exc}")
            except (Exception, FailureGroup) as exc:  # noqa: BLE001 - reported below
                detail = "".join(traceback.format_exception_only(exc)).strip()
                report.failures.append(f"{label} [{mode.value}]:\n{detail}")
    return report


def assert_clean(report: Report) -> None:
    assert not report.failures, "\n\n".join([*report.failures, f"statuses seen: {report.statuses}"])


# --------------------------------------------------------------------------------------------
# the live, seeded, token-protected sink (one per module)


@dataclass
class Seeded:
    sink: support.Sink
    ids: dict[str, str]  # "id:conversation", "id:message", "sha256" -> a value that exists
    counts: tuple[int, int]


async def counts(sink) -> tuple[int, int]:
    row = await sink.pool.fetchrow(
        "SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM deliveries) AS d"
    )
    return row["e"], row["d"]


async def seed(sink) -> None:
    """A few simulated conversations, projected into the read models."""
    for d in simulator.generate(2, seed=11, secret=support.SECRET):
        status, _, _ = await sink.post(d.body, d.headers)
        assert status == 200

    async def caught_up():
        status, doc, _ = await sink.get("/v1/projections", headers=BEARER)
        return status == 200 and all(p["lag_events"] == 0 for p in doc["projections"])

    await support.wait_until(caught_up, limit=30)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(databases, tmp_path_factory):
    dsn = await databases.create()
    settings_ = support.make_settings(
        tmp_path_factory.mktemp("schemathesis"),
        KAPSO_SINK_API_TOKEN=TOKEN,
        KAPSO_SINK_PROJECTOR=True,
        META_VERIFY_TOKEN="st-verify-token",
    )
    running = await support.start_sink(dsn, settings_)
    try:
        await seed(running)
        pool = running.pool
        conversation = await pool.fetchval(
            "SELECT conversation_id FROM messages WHERE conversation_id IS NOT NULL LIMIT 1"
        )
        ids = {
            "id:conversation": conversation,
            "id:message": await pool.fetchval("SELECT id FROM messages LIMIT 1"),
            "sha256": (await pool.fetchval("SELECT body_sha256 FROM deliveries LIMIT 1")).hex(),
        }
        assert all(ids.values()), f"seeding did not reach the read models: {ids}"
        yield Seeded(running, ids, await counts(running))
    finally:
        await support.stop_sink(running)
        await databases.drop(dsn)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def schema(seeded):
    """The document as the live server serves it (fetched without any proxy settings)."""
    status, document, _ = await seeded.sink.get("/openapi.json")
    assert status == 200
    return load_schema(document)


@pytest_asyncio.fixture(loop_scope="session")
async def untouched(seeded):
    """schemathesis never knows a webhook secret: nothing it sends may be stored."""
    yield seeded
    assert await counts(seeded.sink) == seeded.counts, "an unsigned request was stored"


def _with_known_findings(labels):
    for label in labels:
        reason = KNOWN_FINDINGS.get(label)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(label, marks=marks, id=label)


# --------------------------------------------------------------------------------------------
# the runs


async def test_live_document_is_the_one_collected(seeded, schema):
    live = [f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()]
    assert sorted(live) == sorted(OPERATIONS), "an operation would go untested"


@pytest.mark.parametrize("label", list(_with_known_findings(OPERATIONS)))
async def test_schemathesis_with_the_token(untouched, schema, label):
    report = await asyncio.to_thread(
        run_operation,
        schema,
        label,
        untouched.sink.url,
        BEARER,
        TOKEN_CHECKS,
        modes=modes_for(label),
    )
    assert_clean(report)
    assert report.calls > 0


@pytest.mark.parametrize("label", [op for op in OPERATIONS if "{" in op])
async def test_schemathesis_with_the_token_on_existing_ids(untouched, schema, label):
    """The same, with path ids of seeded rows: their 200 bodies must match the schema."""
    params = (
        {"sha256": untouched.ids["sha256"]}
        if "{sha256}" in label
        else {"id": untouched.ids["id:message" if "/messages/" in label else "id:conversation"]}
    )
    report = await asyncio.to_thread(
        run_operation,
        schema,
        label,
        untouched.sink.url,
        BEARER,
        TOKEN_CHECKS,
        path_parameters=params,
        modes=(GenerationMode.POSITIVE,),
        examples=KNOWN_ID_EXAMPLES,
    )
    assert_clean(report)
    assert report.statuses.get(200, 0) > 0, f"no 200 for an existing id: {report.statuses}"


def _v1_is_401(case, response):
    if case.path.startswith("/v1/"):
        assert response.status_code == 401, (
            case.method,
            case.formatted_path,
            response.status_code,
            response.text[:200],
        )
        assert response.headers.get("www-authenticate") == ["Bearer"], response.headers


@pytest.mark.parametrize("label", OPERATIONS)
async def test_schemathesis_without_a_token(untouched, schema, label):
    report = await asyncio.to_thread(
        run_operation,
        schema,
        label,
        untouched.sink.url,
        {},
        CHECKS,
        expect=_v1_is_401,
        modes=modes_for(label),
    )
    assert_clean(report)
    if label.split(" ", 1)[1].startswith("/v1/"):
        assert set(report.statuses) == {401}, report.statuses


# --------------------------------------------------------------------------------------------
# 5xx answers the generated runs can miss within their budget, pinned


def _pinned(path: str, why: str):
    """A request that once got a 500 (`why` says what broke), kept as a regression case."""
    return pytest.param(path, id=path)


_NUL_ID = (
    "a NUL in a path id reaches PostgreSQL (asyncpg CharacterNotInRepertoireError: "
    "invalid byte sequence for encoding UTF8: 0x00) and is answered 500; params.text "
    "refuses NUL in query values, path ids are not checked"
)
_NUL_CURSOR = (
    'a cursor that decodes to [1, "\\u0000"] passes params.cursor and its NUL '
    "reaches PostgreSQL: 500"
)
_TIME_RANGE = (
    "a date-time whose UTC value falls outside year 1..9999 after the offset is "
    "applied makes asyncpg raise DataError (date value out of range): 500 instead "
    "of 400"
)
_TIME_DEFAULT = (
    "until near datetime.min with no since: `until - timedelta(days=7)` raises "
    "OverflowError in delivery_metrics: 500 instead of 400"
)


@pytest.mark.parametrize(
    "path",
    [
        _pinned("/v1/conversations/%00", _NUL_ID),
        _pinned("/v1/conversations/a%00b/messages", _NUL_ID),
        _pinned("/v1/messages/wamid.%00", _NUL_ID),
        _pinned("/v1/conversations?cursor=WzEsIlx1MDAwMCJd", _NUL_CURSOR),
        _pinned("/v1/conversations?updated_after=9999-12-31T23:59:59-14:00", _TIME_RANGE),
        _pinned("/v1/metrics/delivery?since=0001-01-01T00:00:00%2B14:00", _TIME_RANGE),
        _pinned("/v1/metrics/delivery?until=9999-12-31T23:59:59-14:00", _TIME_RANGE),
        _pinned("/v1/metrics/delivery?until=0001-01-02T00:00:00Z", _TIME_DEFAULT),
        pytest.param("/v1/events?after=99999999999999999999999", id="after-too-big"),
        pytest.param("/v1/conversations?limit=%D9%A5", id="limit-arabic-digit"),
        pytest.param("/v1/deliveries/%00", id="delivery-nul"),
        pytest.param(
            "/v1/conversations/" + quote("\ud800", errors="surrogatepass"), id="surrogate-id"
        ),
    ],
)
async def test_v1_edge_values_are_never_500(untouched, path):
    """Each of these is a request the schema allows or a plain string id; none may be a 500."""
    url = urlsplit(untouched.sink.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            yarl.URL(f"http://{url.netloc}{path}", encoded=True), headers=BEARER
        ) as resp:
            body = await resp.read()
            assert resp.status < 500, (path, resp.status, body[:300])
            assert b"Traceback" not in body
            assert resp.content_type == "application/json"
