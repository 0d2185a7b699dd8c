"""The request latency histogram writes what prometheus_client's own Histogram would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from service.metrics import _BUCKETS, _RequestHistogram


def _family(text: bytes) -> list[str]:
    return sorted(
        line
        for line in text.decode().splitlines()
        if line.startswith("kapso_sink_request_seconds") and "_created" not in line
    )


def test_same_text_as_prometheus_client_histogram():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = _RequestHistogram()
    ours.register(mine)
    reference = Histogram(
        "kapso_sink_request_seconds",
        "HTTP request latency",
        ["method", "route", "status"],
        buckets=_BUCKETS,
        registry=theirs,
    )
    # on bucket bounds, between them, beyond the last one, and for several label sets
    samples = [0.0, 0.001, 0.0011, 0.0025, 0.05, 0.3, 1, 9.99, 10, 10.5, 42.0]
    for n, seconds in enumerate(samples):
        key = ("POST", "/webhooks/kapso", "200") if n % 3 else ("GET", "/v1/x/{id}", "404")
        mine.observe(key, seconds)
        reference.labels(*key).observe(seconds)
    expected = _family(generate_latest(theirs))
    assert expected and _family(generate_latest(ours)) == expected
