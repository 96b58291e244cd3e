"""GET /metrics: Prometheus text exposition of what an operator needs to see the service is healthy.

Every app has its own registry (no process-global state, so tests and several apps in one process
do not share counters). Request counters are fed by ``GuardMiddleware``; store sizes, evictions,
detector failures and training outcomes are read from the live objects at scrape time, so they
cost nothing on the scoring path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Scoring takes ~0.1-10 ms, a 100k-event /train upload seconds: buckets cover both.
# Engine stores that keep per-service state, each bounded by max_services.
SERVICE_STORES = (
    "baselines",
    "windows",
    "templates",
    "sequences",
    "forecasts",
    "patterns",
    "records",
    "repeats",
)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ServiceCollector(Collector):
    """Reads the running service's stores when Prometheus scrapes."""

    def __init__(self, state: Callable[[], Any]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        if state is None:
            return
        engine = state.engine
        tracked = GaugeMetricFamily(
            "insighthub_services_tracked", "Services whose state is kept.", labels=["store"]
        )
        evictions = CounterMetricFamily(
            "insighthub_service_evictions",
            "Services forgotten (least recently seen first) to stay within max_services.",
            labels=["store"],
        )
        for name in SERVICE_STORES:
            store = getattr(engine, name, None)
            if store is None:
                continue
            tracked.add_metric([name], len(store))
            evictions.add_metric([name], store.evictions)
        yield tracked
        yield evictions
        miner = getattr(getattr(engine, "templates", None), "miner", None)
        if miner is not None:
            yield GaugeMetricFamily(
                "insighthub_templates_tracked", "Message templates kept.", value=len(miner)
            )
            yield CounterMetricFamily(
                "insighthub_template_evictions",
                "Templates forgotten (least recently matched first) to stay within template_max.",
                value=miner.evictions,
            )
        failures = CounterMetricFamily(
            "insighthub_detector_failures",
            "Scoring calls in which a detector raised and was reported as degraded.",
            labels=["detector"],
        )
        for detector, count in sorted(getattr(engine, "detector_failures", {}).items()):
            failures.add_metric([detector], count)
        yield failures
        jobs = CounterMetricFamily(
            "insighthub_training_jobs", "Training jobs by outcome.", labels=["status"]
        )
        for status, count in sorted(getattr(state.trainer, "job_outcomes", {}).items()):
            jobs.add_metric([str(status)], count)
        yield jobs
        pause = getattr(state.trainer, "pause", None)
        if pause is not None and pause.neighbour_slowdown is not None:
            yield GaugeMetricFamily(
                "insighthub_neighbour_slowdown",
                "How much slower pure-Python work ran on one CPU beside an idle-priority spinner "
                "on another, measured at start-up (train_pause_while_serving=auto).",
                value=pause.neighbour_slowdown,
            )
        if pause is not None:
            yield GaugeMetricFamily(
                "insighthub_training_pause_enabled",
                "1 when training processes are stopped while requests are served.",
                value=float(pause.enabled),
            )
        if pause is not None and pause.enabled:
            yield CounterMetricFamily(
                "insighthub_training_pauses",
                "Times the training processes were stopped because a request was being served "
                "(train_pause_while_serving).",
                value=pause.pauses,
            )
            yield CounterMetricFamily(
                "insighthub_training_paused_seconds",
                "Time the training processes stood still while requests were served.",
                value=pause.paused_seconds,
            )
            yield CounterMetricFamily(
                "insighthub_training_forced_resumes",
                "Pauses ended after 50 ms although requests were still being served, so a fit "
                "keeps progressing under a load that never leaves the service idle.",
                value=pause.forced_resumes,
            )
        model = GaugeMetricFamily(
            "insighthub_model_info",
            "The model version serving (value is always 1).",
            labels=["version"],
        )
        model.add_metric([engine.model.version], 1)
        yield model


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "insighthub_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "insighthub_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "insighthub_http_rejected",
            "Requests refused before reaching a route: unauthorized, too_large, overloaded.",
            ["reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "insighthub_http_requests_in_flight",
            "Requests being served that count against max_concurrent_requests.",
            registry=self.registry,
        )
        # What the requests since the last scrape added, in plain Python: prometheus_client's
        # inc() and observe() take a lock per call and observe() walks the buckets in Python,
        # ~5 us per request together; everything here runs on the event loop's thread, so
        # counting needs no lock, and the sums go into the metrics when they are read.
        self._counts: dict[tuple[str, str, int], int] = {}
        self._series: set[tuple[str, str, int]] = set()
        self._durations: dict[str, _Durations] = {}
        self._bounds = DURATION_BUCKETS  # a bucket's upper bound; the last bucket is +Inf

    def watch(self, state: Callable[[], Any]) -> None:
        self.registry.register(_ServiceCollector(state))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        key = (route, method, status)
        counts = self._counts
        count = counts.get(key)
        if count is None and key not in self._series:
            # The series appears (with its creation time) at its first request, as before.
            self._series.add(key)
            self.requests.labels(route, method, str(status))
        counts[key] = (count or 0) + 1
        durations = self._durations.get(route)
        if durations is None:
            self.duration.labels(route)
            durations = self._durations[route] = _Durations(len(self._bounds) + 1)
        # The first bucket whose bound is >= seconds, as Histogram.observe picks it.
        durations.buckets[bisect_left(self._bounds, seconds)] += 1
        durations.total += seconds

    def flush(self) -> None:
        """Adds what ``observe`` counted since the last flush to the Prometheus metrics."""
        counts, self._counts = self._counts, {}
        for (route, method, status), count in counts.items():
            self.requests.labels(route, method, str(status)).inc(count)
        for route, durations in self._durations.items():
            if not durations.total and not any(durations.buckets):
                continue
            child = self.duration.labels(route)
            # Histogram.observe adds one to the first bucket that holds the value (the
            # exposition makes the counts cumulative) and the value to the sum; this adds all
            # of them at once. Private attributes of prometheus_client (pinned in the lock);
            # tests/test_metrics.py compares the exposition with observe() called per request.
            for bucket, count in zip(child._buckets, durations.buckets, strict=True):
                if count:
                    bucket.inc(count)
            child._sum.inc(durations.total)
            durations.buckets = [0] * len(durations.buckets)
            durations.total = 0.0

    def exposition(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)


class _Durations:
    """One route's request durations since the last flush: a count per bucket, and their sum."""

    __slots__ = ("buckets", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.total = 0.0


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, rejections, evictions, detector failures, training jobs."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=PROMETHEUS_MEDIA_TYPE)
