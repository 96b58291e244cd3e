"""Repeated alarms rank below the alarm they repeat, and stay flagged (app/repeats.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from app.local import AnomalyDetector
from app.repeats import AlarmRepeats
from app.settings import Settings
from tests.conftest import make_settings, start_app


def _observe(
    repeats: AlarmRepeats, services: list[str], numbers: list[int], scores: list[float]
) -> list[float]:
    result = repeats.observe(
        services, np.asarray(numbers, dtype=np.int64), np.asarray(scores), threshold=0.5
    )
    return [float(v) for v in result]


def test_an_alarm_no_stronger_than_a_recent_one_scores_the_threshold() -> None:
    repeats = AlarmRepeats(horizon=10)
    scores = _observe(repeats, ["a"] * 5, [0, 1, 2, 3, 4], [0.9, 0.8, 0.9, 0.95, 0.3])
    # 0.8 and the second 0.9 repeat the first 0.9; 0.95 is worse, so news; 0.3 is no alarm.
    assert scores == [0.9, 0.5, 0.5, 0.95, 0.3]


def test_an_alarm_beyond_the_horizon_is_news_again() -> None:
    repeats = AlarmRepeats(horizon=10)
    assert _observe(repeats, ["a", "a", "a"], [0, 9, 19], [0.9, 0.7, 0.7]) == [0.9, 0.5, 0.7]


def test_services_do_not_repeat_each_other_and_zero_turns_it_off() -> None:
    repeats = AlarmRepeats(horizon=10)
    assert _observe(repeats, ["a", "b"], [0, 0], [0.9, 0.8]) == [0.9, 0.8]
    off = AlarmRepeats(horizon=0)
    assert _observe(off, ["a", "a"], [0, 1], [0.9, 0.8]) == [0.9, 0.8]


def test_an_alarm_right_after_an_alarm_is_news_only_when_clearly_stronger() -> None:
    repeats = AlarmRepeats(horizon=10, run_margin=0.05)
    # An incident's accumulating evidence creeps up event by event: only the onset and the
    # clear step up (0.98 -> 0.99 is not one, 0.92 -> 0.98 is) keep their scores.
    scores = _observe(repeats, ["a"] * 5, [0, 1, 2, 3, 4], [0.9, 0.92, 0.98, 0.99, 0.995])
    assert scores == [0.9, 0.5, 0.98, 0.5, 0.5]


def test_the_run_margin_compares_only_consecutive_events() -> None:
    repeats = AlarmRepeats(horizon=10, run_margin=0.05)
    # One quiet event between: the slightly stronger alarm is a worsening, as without the margin.
    assert _observe(repeats, ["a"] * 3, [0, 1, 2], [0.9, 0.2, 0.92]) == [0.9, 0.2, 0.92]
    # Another service's alarm on the event before is not part of this service's run.
    other = AlarmRepeats(horizon=10, run_margin=0.05)
    assert _observe(other, ["a", "b"], [0, 1], [0.9, 0.92]) == [0.9, 0.92]


def test_a_zero_run_margin_is_the_horizon_rule_alone() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.uniform(0.3, 1.0, 40).tolist()
        numbers = list(range(40))
        with_margin = _observe(AlarmRepeats(10, run_margin=0.0), ["a"] * 40, numbers, scores)
        assert with_margin == _observe(AlarmRepeats(10), ["a"] * 40, numbers, scores)


def test_the_run_margin_scores_a_batch_as_one_event_at_a_time() -> None:
    rng = np.random.default_rng(1)
    services = rng.choice(["a", "b"], 300).tolist()
    scores = rng.uniform(0.3, 1.0, 300).tolist()
    counters = {"a": 0, "b": 0}
    numbers = []
    for service in services:
        numbers.append(counters[service])
        counters[service] += 1
    batched = _observe(AlarmRepeats(2, run_margin=0.05), services, numbers, scores)
    single = AlarmRepeats(2, run_margin=0.05)
    one_by_one = [
        _observe(single, [s], [n], [v])[0]
        for s, n, v in zip(services, numbers, scores, strict=True)
    ]
    assert batched == one_by_one
    assert sum(v == 0.5 for v in batched) > sum(
        v == 0.5 for v in _observe(AlarmRepeats(2), services, numbers, scores)
    )


def test_a_restarted_event_counter_starts_a_new_history() -> None:
    repeats = AlarmRepeats(horizon=10)
    _observe(repeats, ["a"], [50], [0.9])
    assert _observe(repeats, ["a"], [3], [0.8]) == [0.8]


def _slowdown(start: datetime) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    events = []
    for i in range(400):
        slow = 300 <= i < 310
        latency = float(rng.lognormal(np.log(2000.0 if slow else 20.0), 0.1))
        events.append(
            {
                "service": "api",
                "level": "INFO",
                "message": "GET /items served",
                "latency_ms": latency,
                "timestamp": start + timedelta(seconds=i),
            }
        )
    return events


def test_a_slowdown_keeps_every_event_flagged_but_ranks_its_onset_first(
    bootstrapped_settings: Settings,
) -> None:
    events = _slowdown(datetime(2026, 1, 1, tzinfo=UTC))
    off = make_settings(bootstrapped_settings.artifacts_dir.parent, alarm_repeat_events=0)
    plain = AnomalyDetector(off).predict_batch(events)[300:310]
    ranked = AnomalyDetector(bootstrapped_settings).predict_batch(events)[300:310]
    assert all(r["is_anomaly"] for r in plain)
    assert [r["is_anomaly"] for r in ranked] == [r["is_anomaly"] for r in plain]
    assert ranked[0]["anomaly_score"] == plain[0]["anomaly_score"] > 0.9
    repeats = [r for r in ranked if r["anomaly_score"] == 0.5]
    assert len(repeats) >= 5
    # The per-method breakdown still says how unusual each repeat is.
    assert all(max(m["anomaly_score"] for m in r["methods"].values()) > 0.5 for r in repeats)


def test_a_noisier_stretch_is_explained_by_the_anomaly_likelihood(
    bootstrapped_settings: Settings,
) -> None:
    rng = np.random.default_rng(4)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    steady = 50.0 * np.exp(0.1 * rng.standard_normal(3000))
    noisy = 50.0 * np.exp(0.28 * np.where(np.arange(10) % 2 == 0, 1.0, -1.0))
    events = [
        {
            "service": "api",
            "level": "INFO",
            "message": "GET /items served",
            "latency_ms": float(ms),
            "timestamp": start + timedelta(minutes=i),
        }
        for i, ms in enumerate(np.concatenate([steady, noisy]))
    ]
    results = AnomalyDetector(bootstrapped_settings).predict_batch(events)[-10:]
    flagged = [r for r in results if r["is_anomaly"]]
    assert flagged
    assert all(r["methods"]["likelihood"]["is_anomaly"] for r in flagged)
    assert "a run of surprising latencies" in flagged[0]["explanation"]


def test_only_alarming_services_are_kept_and_their_number_is_bounded() -> None:
    repeats = AlarmRepeats(horizon=10, max_services=2)
    _observe(repeats, ["a", "b", "c", "d"], [0, 0, 0, 0], [0.9, 0.8, 0.7, 0.1])
    assert len(repeats) == 2  # "d" never alarmed; "a" was evicted
    assert repeats.evictions == 1
    assert list(repeats) == ["b", "c"]


async def test_metrics_count_the_services_kept_for_repeats(bootstrapped_settings: Settings) -> None:
    events = _slowdown(datetime(2026, 1, 1, tzinfo=UTC))
    logs = [event | {"timestamp": event["timestamp"].isoformat()} for event in events]
    async for running_app in start_app(bootstrapped_settings):
        client: httpx.AsyncClient = running_app.client
        assert (await client.post("/score/batch", json={"logs": logs})).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'insighthub_services_tracked{store="repeats"} 1.0' in metrics
