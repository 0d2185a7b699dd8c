"""GET /metrics: Prometheus text, from a registry owned by the app (no global state)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service import keys, middleware
from service.projections import runner

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _WriterCollector:
    """Stored/duplicate counts by event name, read from the writer's own tallies at scrape."""

    def __init__(self, app: web.Application):
        self._app = app

    def collect(self):
        writer = self._app.get(keys.writer)
        stored = CounterMetricFamily(
            "kapso_sink_events_stored", "Logical events committed to the log", labels=["event"]
        )
        dupes = CounterMetricFamily(
            "kapso_sink_events_duplicate",
            "Logical events acknowledged as already stored",
            labels=["event"],
        )
        if writer is not None:
            for name, count in sorted(writer.stats.stored_by_event.items()):
                stored.add_metric([name], count)
            for name, count in sorted(writer.stats.duplicates_by_event.items()):
                dupes.add_metric([name], count)
        yield stored
        yield dupes


class Metrics:
    def __init__(self, app: web.Application):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_WriterCollector(app))
        self.signature_failures = Counter(
            "kapso_sink_signature_failures",
            "Deliveries refused for their signature",
            registry=self.registry,
        )
        self.requests = Histogram(
            "kapso_sink_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], Histogram] = {}
        self.lag_events = Gauge(
            "kapso_sink_projection_lag_events",
            "Log events not yet projected",
            ["projection"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "kapso_sink_projection_lag_seconds",
            "Age of the oldest unprojected event",
            ["projection"],
            registry=self.registry,
        )
        self.queued = Gauge(
            "kapso_sink_writer_queued", "Deliveries waiting for a commit", registry=self.registry
        )
        self.spool_records = Gauge(
            "kapso_sink_spool_records", "Deliveries in the outage spool", registry=self.registry
        )
        self.spool_bytes = Gauge(
            "kapso_sink_spool_bytes", "Size of the outage spool", registry=self.registry
        )

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"  # clients pick it
        key = (method, name, status)
        child = self._children.get(key)
        if child is None:  # labels() locks and validates: look each child up once
            child = self._children[key] = self.requests.labels(method, name, str(status))
        child.observe(seconds)
        if request.get(keys.signature_failure):
            self.signature_failures.inc()


METRICS = web.AppKey("metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    writer = request.app[keys.writer]
    m.queued.set(writer.queued)
    if writer.spool is not None:
        m.spool_records.set(writer.spool.records)
        m.spool_bytes.set(writer.spool.size)
    try:
        async with asyncio.timeout(2.0):
            for row in await runner.status(request.app[keys.pool]):
                m.lag_events.labels(row["name"]).set(row["lag_events"])
                m.lag_seconds.labels(row["name"]).set(row["lag_seconds"])
    except Exception:  # noqa: BLE001 - the database being down must not hide the other metrics
        pass
    body = generate_latest(m.registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics(app)
    middleware.set_observer(app, app[METRICS].observe)
    app.router.add_get("/metrics", metrics)
