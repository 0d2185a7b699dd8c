"""GET /metrics: Prometheus text, from a registry owned by the app (no global state)."""

from __future__ import annotations

import asyncio
from bisect import bisect_left

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from service import keys, middleware
from service.projections import runner

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BOUNDS = tuple(floatToGoString(b) for b in (*_BUCKETS, float("inf")))  # as Histogram writes


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


class _RequestHistogram:
    """Request latency by (method, route, status), counted in plain lists on the event loop
    and turned into a Prometheus histogram at scrape time: prometheus_client's Histogram
    takes a lock per bucket and per sum on every observation, which cost a few percent of
    the server's CPU per webhook."""

    def __init__(self):
        self.series: dict[tuple[str, str, str], list] = {}  # key -> [bucket counts..., sum]

    def observe(self, key: tuple[str, str, str], seconds: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0] * len(_BOUNDS) + [0.0]
        counts[bisect_left(_BUCKETS, seconds)] += 1  # le: the first bound >= seconds; else +Inf
        counts[-1] += seconds

    def collect(self):
        family = HistogramMetricFamily(
            "kapso_sink_request_seconds",
            "HTTP request latency",
            labels=["method", "route", "status"],
        )
        for key, counts in sorted(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(_BOUNDS, counts, strict=False):  # counts end with the sum
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(key), buckets, counts[-1])
        yield family


class Metrics:
    def __init__(self, app: web.Application):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_WriterCollector(app))
        self.signature_failures = Counter(
            "kapso_sink_signature_failures",
            "Deliveries refused for their signature",
            registry=self.registry,
        )
        self.requests = _RequestHistogram()
        self.registry.register(self.requests)
        self._keys: dict[tuple[str, str, int], tuple[str, str, str]] = {}
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
        key = self._keys.get((method, name, status))
        if key is None:
            key = self._keys[(method, name, status)] = (method, name, str(status))
        self.requests.observe(key, seconds)
        if status == 401 and request.get(keys.signature_failure):  # get() is slow on a miss
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
