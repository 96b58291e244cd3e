"""The fast paths keep the slow paths' answers: JSON validated from bytes, coalesced /score
requests, the batch-of-one engine path. Speed itself is measured in bench/, never here."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message

from app.batching import ScoreCoalescer
from app.combiner import combine_matrix
from app.detectors.base import MethodOutput, ScoringContext
from app.detectors.calibration import (
    BEND_AT,
    BEND_HEADROOM,
    MIN_RARITY,
    TAIL_FRACTION,
    TailCalibrator,
    rarity_to_score,
)
from app.detectors.templates import TemplateDetector
from app.engine import ONE_BY_ONE_UP_TO, ScoringEngine
from app.events import EventBatch, parse_events
from app.model import TrainingData
from app.schemas.columns import read_batch
from app.schemas.events import Level, LogEvent
from app.settings import Settings
from tests.conftest import RunningApp, make_settings
from tests.helpers import bootstrap_data_model

PROBLEM = "application/problem+json"


def _event(service: str = "api", **extra: Any) -> dict[str, Any]:
    return {"service": service, "level": "INFO", "latency_ms": 120.0, **extra}


async def _post_raw(client: httpx.AsyncClient, path: str, body: bytes) -> httpx.Response:
    return await client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/score", b'{"service":"a","level":"INFO","latency_ms":NaN}', "latency_ms"),
        ("/score", b'{"service":"a","level":"INFO","latency_ms":Infinity}', "latency_ms"),
        ("/score", b'{"service":"a","level":"INFO","latency_ms":-Infinity}', "latency_ms"),
        ("/score", b'{"service":"a","level":"INFO","latency_ms":"fast"}', "latency_ms"),
        ("/score", b'{"service":"a","level":"LOUD"}', "level"),
        ("/score", b'{"service":"a","level":"INFO","colour":"red"}', "colour"),
        ("/score", b'{"service":"a","level":"INFO","timestamp":1700000000}', "timestamp"),
        ("/score", b'{"service":"a","level":"INFO",', "body"),
        ("/score", b"[1, 2]", "body"),
        (
            "/score/batch",
            b'{"logs":[{"service":"a","level":"INFO"},{"level":"INFO"}]}',
            "logs.1.service",
        ),
        (
            "/score/batch",
            b'{"logs":[{"service":"a","level":"INFO","latency_ms":NaN}]}',
            "logs.0.latency_ms",
        ),
        ("/score/batch", b'{"logs":[]}', "logs"),
        ("/score/batch", b'{"logs":[{"service":"a","level":"INFO"}', "body"),
    ],
)
async def test_bad_bodies_are_422_problems_naming_the_field(
    client: httpx.AsyncClient, path: str, body: bytes, field: str
) -> None:
    response = await _post_raw(client, path, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert field in [error["field"] for error in problem["errors"]]
    assert problem["detail"].startswith(problem["errors"][0]["field"])
    # The offending input is never echoed (a NaN would not even be valid JSON).
    assert all("input" not in error for error in problem["errors"])


async def test_bodies_not_declared_as_json_take_fastapis_own_path(
    client: httpx.AsyncClient,
) -> None:
    empty = await client.post("/score", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["type"] == "missing"
    plain = await client.post(
        "/score", content=orjson.dumps(_event()), headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 422
    assert plain.headers["content-type"] == PROBLEM


async def test_openapi_still_documents_the_request_models(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, model, operation_id in (
        ("/score", "LogEvent", "scoring-score_log"),
        ("/score/batch", "ScoreBatchRequest", "scoring-score_batch"),
        ("/train", "TrainRequest", "training-start_training"),
    ):
        operation = spec["paths"][path]["post"]
        assert operation["operationId"] == operation_id
        body = operation["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
        assert model in spec["components"]["schemas"]


async def test_valid_json_with_charset_and_aliases_scores(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/score",
        content=orjson.dumps(_event(level="warning", timestamp="2026-11-24T10:15:00")),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.json()["service"] == "api"


def _engine(tmp_path: Path) -> ScoringEngine:
    settings: Settings = make_settings(tmp_path)
    return ScoringEngine(settings, bootstrap_data_model("test-1", 20))


def _stream(n: int, services: int) -> list[LogEvent]:
    rng = np.random.default_rng(3)
    start = datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()
    raw = []
    for i in range(n):
        event: dict[str, Any] = {
            "service": f"svc-{i % services}",
            "level": "ERROR" if rng.random() < 0.1 else "INFO",
            "timestamp": datetime.fromtimestamp(start + i * 0.7, UTC).isoformat(),
        }
        if rng.random() > 0.1:
            event["latency_ms"] = float(rng.lognormal(4.0, 0.6)) * (30 if i % 97 == 0 else 1)
        raw.append(event)
    return parse_events(raw)


def test_batched_scoring_equals_one_event_at_a_time(tmp_path: Path) -> None:
    events = _stream(400, services=7)
    one_by_one = _engine(tmp_path / "a")
    expected = [one_by_one.score([event])[0] for event in events]
    batched = _engine(tmp_path / "b")
    got = batched.score(events[:1]) + batched.score(events[1:150]) + batched.score(events[150:])
    assert orjson.dumps(got) == orjson.dumps(expected)


def test_an_ordinary_event_scores_plus_zero_not_minus_zero(tmp_path: Path) -> None:
    result = _engine(tmp_path).score(parse_events([_event()]))[0]
    assert result["methods"]["sliding_window"]["anomaly_score"] == 0.0  # nothing to judge yet
    for method in result["methods"].values():
        assert math.copysign(1.0, method["anomaly_score"]) == 1.0
    assert b"-0.0" not in orjson.dumps(result)


def test_event_batch_columns() -> None:
    events = parse_events(
        [
            _event(timestamp="2026-11-24T10:15:00Z"),
            {"service": "db", "level": "critical"},
        ]
    )
    batch = EventBatch.from_events(events, received_at=123.0)
    assert batch.services == ["api", "db"]
    assert batch.level_scores.tolist() == [0.0, 3.0]
    assert batch.latency_ms[0] == 120.0
    assert math.isnan(batch.latency_ms[1])
    assert batch.timestamps.tolist() == [
        datetime(2026, 11, 24, 10, 15, tzinfo=UTC).timestamp(),
        123.0,
    ]
    assert batch.is_error.tolist() == [False, True]
    empty = EventBatch.from_events([], received_at=1.0)
    assert len(empty) == 0
    assert empty.latency_ms.dtype == np.float64


class _RecordingScorer:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    def __call__(self, events: Sequence[LogEvent]) -> list[dict[str, Any]]:
        self.batches.append([event.service for event in events])
        if self.fail:
            raise RuntimeError("engine broke")
        return [{"service": event.service} for event in events]


async def test_coalescer_scores_concurrent_events_in_one_call_in_order() -> None:
    scorer = _RecordingScorer()
    coalescer = ScoreCoalescer(scorer)
    events = parse_events([_event(f"s{i}") for i in range(10)])
    results = await asyncio.gather(*(coalescer.score(event) for event in events))
    assert [r["service"] for r in results] == [f"s{i}" for i in range(10)]
    assert scorer.batches == [[f"s{i}" for i in range(10)]]
    # A lone event later is a batch of one.
    assert (await coalescer.score(events[0]))["service"] == "s0"
    assert scorer.batches[-1] == ["s0"]
    assert (coalescer.flushes, coalescer.events) == (2, 11)


async def test_coalescer_caps_a_batch_and_reports_failures_to_every_waiter() -> None:
    scorer = _RecordingScorer()
    coalescer = ScoreCoalescer(scorer, max_events=4)
    events = parse_events([_event(f"s{i}") for i in range(10)])
    await asyncio.gather(*(coalescer.score(event) for event in events))
    assert [len(batch) for batch in scorer.batches] == [4, 4, 2]
    failing = ScoreCoalescer(_RecordingScorer(fail=True))
    outcomes = await asyncio.gather(
        *(failing.score(event) for event in events[:3]), return_exceptions=True
    )
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


async def test_coalescer_survives_a_waiter_that_went_away() -> None:
    scorer = _RecordingScorer()
    coalescer = ScoreCoalescer(scorer)
    events = parse_events([_event("gone"), _event("stays")])
    gone = asyncio.ensure_future(coalescer.score(events[0]))
    stays = asyncio.ensure_future(coalescer.score(events[1]))
    await asyncio.sleep(0)  # both are now waiting on the pending flush
    gone.cancel()
    assert (await stays)["service"] == "stays"
    assert scorer.batches == [["gone", "stays"]]


async def test_concurrent_score_requests_answer_as_sequential_ones(
    running: RunningApp, tmp_path: Path
) -> None:
    # One service per request, so the answer cannot depend on the order requests arrive in; each
    # event carries its time, so neither does it depend on when it was received.
    stamp = "2026-11-24T10:15:00Z"
    events = [_event(f"svc-{i}", latency_ms=10.0 * (i + 1), timestamp=stamp) for i in range(12)]
    engine: ScoringEngine = running.app.state.insighthub.engine
    flushes_before = engine.coalescer.flushes
    responses = await asyncio.gather(
        *(running.client.post("/score", json=event) for event in events)
    )
    assert all(response.status_code == 200 for response in responses)
    assert engine.coalescer.events >= len(events)
    assert engine.coalescer.flushes - flushes_before <= len(events)
    reference = ScoringEngine(make_settings(tmp_path / "ref"), engine.model)
    for event, response in zip(events, responses, strict=True):
        expected = orjson.loads(orjson.dumps(reference.score(parse_events([event]))[0]))
        assert response.json() == expected


def test_training_columns_code_services_as_sorted_unique_names() -> None:
    services = ["web", "db", "web", "api", "db", "web", "a.b-c_1"]
    levels = [
        Level.INFO,
        Level.ERROR,
        Level.WARN,
        Level.INFO,
        Level.CRITICAL,
        Level.DEBUG,
        Level.INFO,
    ]
    latency = np.array([1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0])
    data = TrainingData.from_columns(services, levels, latency, source="logs")
    names, codes = np.unique(np.asarray(services, dtype=object), return_inverse=True)
    assert data.service_names == [str(name) for name in names]
    assert data.service_codes.tolist() == codes.tolist()
    assert data.service_codes.dtype == np.int64
    assert data.level_scores.tolist() == [0.0, 2.0, 1.0, 0.0, 3.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"data": [[1.0, 0], [NaN, 0]]}', "data.1.0"),
        (b'{"data": [[1.0, 0], [2.0]]}', "data.1"),
        (b'{"data": [[1.0, 0]], "logs": []}', "body"),
        (b'{"data": [[1.0, 0]], "parameters": {"n_estimators": 0}}', "parameters.n_estimators"),
        (b'{"data": [[1.0, 0]', "body"),
    ],
)
async def test_train_bodies_validated_from_bytes_keep_their_422s(
    client: httpx.AsyncClient, body: bytes, field: str
) -> None:
    response = await _post_raw(client, "/train", body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert field in [error["field"] for error in response.json()["errors"]]


def _reference_score(rarity: np.ndarray, q: float) -> np.ndarray:
    """rarity_to_score as main wrote it, before the fast path: the fast path must match it.
    A NaN rarity (a method that could not judge) reads as 1, no evidence: never a NaN score."""
    clipped = np.clip(np.nan_to_num(np.asarray(rarity, dtype=np.float64), nan=1.0), MIN_RARITY, 1.0)
    linear = 0.5 * np.log(clipped) / np.log(q)
    beyond = np.maximum(linear - BEND_AT, 0.0)
    bent = 1.0 - BEND_HEADROOM / (1.0 + beyond / BEND_HEADROOM)
    result: np.ndarray = np.clip(np.where(linear <= BEND_AT, linear, bent), 0.0, 1.0) + 0.0
    return result


@given(
    rarities=st.lists(
        st.one_of(
            st.floats(0.0, 1.0),
            st.sampled_from([0.0, 1.0, 1e-300, 1e-310, 1e-3, 1e-6, 1e-7, 2.0, -1.0, np.nan]),
        ),
        min_size=1,
        max_size=8,
    ),
    q=st.sampled_from([0.001, 0.01, 0.2, 1e-6]),
)
@settings(max_examples=200, deadline=None)
def test_rarity_to_score_fast_path_is_bit_identical(rarities: list[float], q: float) -> None:
    rarity = np.asarray(rarities)
    got = rarity_to_score(rarity, q)
    expected = _reference_score(rarity, q)
    assert np.array_equal(got, expected)
    assert not np.isnan(got).any()
    assert not np.signbit(got).any()


async def test_a_client_that_hangs_up_mid_body_gets_fastapis_400(running: RunningApp) -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"service": "a", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/score",
        "raw_path": b"/score",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await running.app(scope, receive, send)
    assert sent[0]["status"] == 400


@given(
    scores=st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), min_size=0, max_size=6),
    weights=st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6),
    threshold=st.floats(0.05, 1.0),
)
@settings(max_examples=200, deadline=None)
def test_combining_the_score_matrix_equals_the_method_by_method_maximum(
    scores: list[list[float]], weights: list[float], threshold: float
) -> None:
    """The engine combines all methods' scores in one call; main took the running maximum
    method by method. Both must agree exactly, no method at all included (0 everywhere)."""
    expected = np.zeros(3)
    for row, weight in zip(scores, weights, strict=False):
        expected = np.maximum(expected, weight * np.asarray(row))
    matrix = np.asarray(scores, dtype=np.float64).reshape(len(scores), 3)
    column = np.asarray(weights[: len(scores)], dtype=np.float64)[:, None]
    combined, flagged = combine_matrix(matrix, column, threshold)
    assert combined.tolist() == expected.tolist()
    assert flagged.tolist() == (expected >= threshold).tolist()


class _OddMetricsDetector(TemplateDetector):
    """The templates method with metrics that are unknown (NaN) for every other event."""

    def rarity(self, context: ScoringContext) -> MethodOutput:
        n = len(context.batch)
        unknown = np.where(np.arange(n) % 2 == 0, np.nan, np.arange(n, dtype=np.float64))
        return MethodOutput(rarity=np.full(n, 0.5), metrics={"maybe": unknown, "none": unknown * 0})


def test_metrics_render_unknown_values_as_none_per_event(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    engine.online_detectors = [
        _OddMetricsDetector() if d.name == "templates" else d for d in engine.online_detectors
    ]
    results = engine.score(_stream(5, services=2))
    got = [result["methods"]["templates"]["metrics"] for result in results]
    assert got == [
        {"maybe": None, "none": None},
        {"maybe": 1.0, "none": 0.0},
        {"maybe": None, "none": None},
        {"maybe": 3.0, "none": 0.0},
        {"maybe": None, "none": None},
    ]
    # The other methods keep their own metrics, in their own order.
    assert list(results[0]["methods"]) == [d.name for d in engine._detectors(engine.model)]
    assert all(isinstance(r["methods"]["isolation_forest"]["metrics"], dict) for r in results)


def test_a_method_without_metrics_renders_an_empty_mapping(tmp_path: Path) -> None:
    class Silent(_OddMetricsDetector):
        def rarity(self, context: ScoringContext) -> MethodOutput:
            return MethodOutput(rarity=np.ones(len(context.batch)))

    engine = _engine(tmp_path)
    engine.online_detectors = [
        Silent() if d.name == "templates" else d for d in engine.online_detectors
    ]
    # Larger than the batches scored one event at a time: the array path's rendering.
    n = ONE_BY_ONE_UP_TO + 1
    results = engine.score(_stream(n, services=1))
    assert [r["methods"]["templates"]["metrics"] for r in results] == [{}] * n
    assert [r["methods"]["templates"]["anomaly_score"] for r in results] == [0.0] * n


@given(
    reference=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=200),
    raw=st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=6),
)
@settings(max_examples=200, deadline=None)
def test_tail_calibrator_skips_the_tail_only_when_no_score_is_in_it(
    reference: list[float], raw: list[float]
) -> None:
    calibrator = TailCalibrator.fit(reference)
    scores = np.asarray(raw)
    # The formula as main computed it, tail always evaluated.
    body = 1.0 - np.interp(scores, calibrator.quantiles, calibrator.levels)
    body = np.maximum(body, TAIL_FRACTION)
    excess = np.maximum(scores - calibrator.tail_start, 0.0)
    tail = TAIL_FRACTION * np.exp(-excess / calibrator.tail_scale)
    expected = np.where(scores > calibrator.tail_start, tail, body)
    assert calibrator.rarity(scores).tolist() == expected.tolist()


async def test_a_batch_read_column_wise_is_scored_as_one_validated_by_pydantic(
    running: RunningApp, tmp_path: Path
) -> None:
    # The same events twice: once in the form the column-wise reader takes, once with an
    # attribute that sends the body to pydantic; both answers equal a reference engine's.
    stamp = "2026-11-24T10:15:00.25+01:00"
    plain = [
        _event(f"svc-{i % 3}", latency_ms=float(10 * i), timestamp=stamp, message=f"GET /{i}")
        for i in range(40)
    ]
    plain[5]["level"] = " warning"
    plain[6].pop("latency_ms")
    with_attributes = [{**event, "attributes": {"k": 1}} for event in plain]
    assert read_batch(orjson.dumps({"logs": plain})) is not None
    assert read_batch(orjson.dumps({"logs": with_attributes})) is None
    engine: ScoringEngine = running.app.state.insighthub.engine
    reference = ScoringEngine(make_settings(tmp_path / "ref"), engine.model)
    for body in (plain, with_attributes):
        response = await running.client.post("/score/batch", json={"logs": body})
        assert response.status_code == 200
        assert response.json()["results"] == reference.score(parse_events(body))
