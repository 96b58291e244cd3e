"""Request metrics counted in plain Python and added to the Prometheus metrics at scrape time
(app/metrics.py) read exactly as prometheus_client's own per-request inc() and observe()."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import DURATION_BUCKETS, Metrics

FAMILIES = ("insighthub_http_requests", "insighthub_http_request_duration_seconds")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: bytes) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        if family.name in FAMILIES
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _reference(observations: list[tuple[str, str, int, float]]) -> Samples:
    registry = CollectorRegistry()
    requests = Counter(
        "insighthub_http_requests", "", ["route", "method", "status"], registry=registry
    )
    duration = Histogram(
        "insighthub_http_request_duration_seconds",
        "",
        ["route"],
        buckets=DURATION_BUCKETS,
        registry=registry,
    )
    for route, method, status, seconds in observations:
        requests.labels(route, method, str(status)).inc()
        duration.labels(route).observe(seconds)
    return _samples(generate_latest(registry))


def _assert_same(got: Samples, expected: Samples) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_sum"):  # added in another order: equal up to rounding
            assert got[key] == pytest.approx(value, rel=1e-12)
        else:
            assert got[key] == value, key


def test_counts_and_buckets_equal_per_request_observations_across_scrapes() -> None:
    rng = random.Random(5)
    edges = [*DURATION_BUCKETS, 0.0, 1e-7, 30.0]  # values on a bound go into that bound's bucket
    metrics = Metrics()
    seen: list[tuple[str, str, int, float]] = []
    for scrape in range(4):
        for _ in range(300):
            observation = (
                rng.choice(["/score", "/score/batch", "/stats/{service}"]),
                rng.choice(["GET", "POST"]),
                rng.choice([200, 200, 422, 503]),
                rng.choice(edges) if rng.random() < 0.3 else rng.expovariate(200.0),
            )
            metrics.observe(*observation)
            seen.append(observation)
        if scrape == 2:
            continue  # two batches of requests between scrapes
        _assert_same(_samples(metrics.exposition()), _reference(seen))


def test_a_series_appears_with_its_first_request_and_unknown_methods_are_other() -> None:
    metrics = Metrics()
    metrics.observe("/score", "BREW", 405, 0.002)
    text = metrics.exposition().decode()
    assert 'insighthub_http_requests_total{method="OTHER",route="/score",status="405"} 1.0' in text
    assert 'insighthub_http_request_duration_seconds_bucket{le="0.0025",route="/score"} 1.0' in text
    assert 'insighthub_http_request_duration_seconds_bucket{le="0.001",route="/score"} 0.0' in text
    assert metrics.exposition().decode().count('route="/score",status="405"} 1.0') == 1
