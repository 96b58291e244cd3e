"""POST /score and POST /score/batch: the response contract, and batch == one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.schemas import ScoreResult
from app.settings import Settings
from tests.conftest import copy_artifacts, make_settings, start_app
from tests.helpers import assert_problem, event

SLIDING_WINDOW_METRICS = {"error_rate", "latency_zscore", "total_logs"}


@pytest.fixture
def settings(bootstrapped_settings: Settings) -> Settings:
    return bootstrapped_settings


def check_result(body: dict[str, Any], service: str, version: str) -> ScoreResult:
    result = ScoreResult.model_validate(body)
    assert result.service == service
    assert result.model_version == version
    assert set(result.methods) == {
        "isolation_forest",
        "sliding_window",
        "templates",
        "sequence",
        "forecast",
        "likelihood",
        "pattern",
        "record",
        "autoencoder",
    }
    assert 0.0 <= result.anomaly_score <= 1.0
    assert result.is_anomaly == (result.anomaly_score >= 0.5)
    # The combined score is the largest weighted method score (weights default to 1).
    assert result.anomaly_score == max(m.anomaly_score for m in result.methods.values())
    for method in result.methods.values():
        assert 0.0 <= method.anomaly_score <= 1.0
        assert method.is_anomaly == (method.anomaly_score >= 0.5)
        assert method.degraded is None
        assert method.metrics is not None
    assert result.methods["isolation_forest"].method == "Isolation Forest"
    assert result.methods["sliding_window"].method == "Sliding window"
    window_metrics = result.methods["sliding_window"].metrics
    assert window_metrics is not None
    assert SLIDING_WINDOW_METRICS <= set(window_metrics)
    assert result.explanation.startswith("anomalous" if result.is_anomaly else "normal")
    return result


async def test_score_answers_the_documented_shape(client: httpx.AsyncClient) -> None:
    version = (await client.get("/ready")).json()["model_version"]
    response = await client.post("/score", json=event("api", "INFO", 120.0, 0))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result = check_result(response.json(), "api", version)
    assert result.service_events_seen == 0
    assert not result.baseline_ready
    assert "latency not judged yet: 0 of 20 events" in result.explanation
    window_metrics = result.methods["sliding_window"].metrics
    assert window_metrics is not None
    assert window_metrics["total_logs"] == 1.0


async def test_score_warms_up_then_flags_an_extreme_latency(client: httpx.AsyncClient) -> None:
    version = (await client.get("/ready")).json()["model_version"]
    for i in range(30):
        response = await client.post("/score", json=event("api", "INFO", 100.0 + i % 7, i))
        result = check_result(response.json(), "api", version)
        assert result.service_events_seen == i
        assert result.baseline_ready == (i >= 20)
    typical = check_result(
        (await client.post("/score", json=event("api", "INFO", 103.0, 30))).json(), "api", version
    )
    assert not typical.is_anomaly
    extreme = check_result(
        (await client.post("/score", json=event("api", "ERROR", 25_000.0, 31))).json(),
        "api",
        version,
    )
    assert extreme.is_anomaly
    assert extreme.anomaly_score > typical.anomaly_score
    assert "25000 ms is" in extreme.explanation
    assert "x this service's median" in extreme.explanation
    forest_metrics = extreme.methods["isolation_forest"].metrics
    assert forest_metrics is not None
    assert forest_metrics["latency_ratio"] == pytest.approx(25_000.0 / 103.0, rel=0.05)


async def test_event_without_latency_or_timestamp_is_scored(client: httpx.AsyncClient) -> None:
    response = await client.post("/score", json={"service": "jobs", "level": "warning"})
    assert response.status_code == 200
    body = response.json()
    assert body["methods"]["sliding_window"]["metrics"]["latency_zscore"] is None
    forest_metrics = body["methods"]["isolation_forest"]["metrics"]
    assert forest_metrics["level_score"] == 1.0
    assert forest_metrics["latency_ratio"] is None


async def test_batch_answers_in_input_order(client: httpx.AsyncClient) -> None:
    version = (await client.get("/ready")).json()["model_version"]
    logs = [event(f"svc-{i % 3}", "INFO", 10.0 * (i + 1), i) for i in range(9)]
    response = await client.post("/score/batch", json={"logs": logs})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["service"] for r in results] == [log["service"] for log in logs]
    for i, body in enumerate(results):
        result = check_result(body, f"svc-{i % 3}", version)
        assert result.service_events_seen == i // 3


async def test_batch_takes_ten_thousand_events_and_refuses_one_more(
    client: httpx.AsyncClient,
) -> None:
    logs = [event("bulk", "INFO", 50.0 + i % 13, i * 0.01) for i in range(10_000)]
    response = await client.post("/score/batch", json={"logs": logs})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 10_000
    too_many = await client.post("/score/batch", json={"logs": [*logs, event("bulk")]})
    assert_problem(too_many, 422, "logs")
    empty = await client.post("/score/batch", json={"logs": []})
    assert_problem(empty, 422, "logs")


def mixed_stream() -> list[dict[str, Any]]:
    """Several services, every level, missing latencies, out-of-order and stale timestamps, an
    error burst and extreme values: everything that makes per-event state matter."""
    logs: list[dict[str, Any]] = []
    levels = ["INFO", "DEBUG", "WARN", "INFO", "ERROR", "INFO", "CRITICAL", "INFO"]
    for i in range(160):
        service = ("fast", "slow", "mid")[i % 3]
        base = {"fast": 2.0, "slow": 3000.0, "mid": 150.0}[service]
        latency = None if i % 11 == 0 else base * (1.0 + 0.1 * ((i * 7) % 5))
        seconds = 2.0 * i - (7.0 if i % 17 == 0 else 0.0)  # some arrive late
        logs.append(event(service, levels[i % len(levels)], latency, seconds))
    logs.append(event("slow", "INFO", 3000.0, 1.0))  # far older than the 5-minute window
    logs.extend(event("mid", "ERROR", 150.0, 330.0 + i) for i in range(8))  # error burst
    logs.append(event("fast", "INFO", 5_000.0, 340.0))  # extreme outlier
    logs.append(event("new", "FATAL", None, 341.0))  # a service never seen before
    return logs


async def test_batch_equals_sequential_on_fresh_apps(
    tmp_path: Path, bootstrapped_artifacts: Path
) -> None:
    logs = mixed_stream()
    one_by_one: list[dict[str, Any]] = []
    copy_artifacts(bootstrapped_artifacts, tmp_path / "a" / "artifacts")
    copy_artifacts(bootstrapped_artifacts, tmp_path / "b" / "artifacts")
    sequential_settings = make_settings(tmp_path / "a")
    async for running in start_app(sequential_settings):
        for log in logs:
            response = await running.client.post("/score", json=log)
            assert response.status_code == 200
            one_by_one.append(response.json())
        sequential_stats = [
            (await running.client.get(f"/stats/{s}")).json() for s in ("fast", "slow", "mid")
        ]
    batch_settings = make_settings(tmp_path / "b")
    async for running in start_app(batch_settings):
        response = await running.client.post("/score/batch", json={"logs": logs})
        assert response.status_code == 200
        batched = response.json()["results"]
        batch_stats = [
            (await running.client.get(f"/stats/{s}")).json() for s in ("fast", "slow", "mid")
        ]
    assert len(batched) == len(one_by_one) == len(logs)
    for index, (single, in_batch) in enumerate(zip(one_by_one, batched, strict=True)):
        assert single == in_batch, f"event {index} differs"
    assert sequential_stats == batch_stats
    # The stream is not trivial: it contains flagged and unflagged events.
    flags = {r["is_anomaly"] for r in batched}
    assert flags == {True, False}
