"""Daily recurring alarms rank as repeats and stay flagged (app/recurrences.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.local import AnomalyDetector
from app.recurrences import AlarmRecurrences
from app.settings import Settings
from tests.conftest import make_settings

DAY = 86_400.0
NIGHT = 3 * 3600.0  # 03:00


def _observe(
    recurrences: AlarmRecurrences, services: list[str], times: list[float], scores: list[float]
) -> list[float]:
    given = np.asarray(scores)
    result = recurrences.observe(services, np.asarray(times), given, given, threshold=0.5)
    return [float(v) for v in result]


def test_an_alarm_at_the_time_it_alarmed_on_each_of_the_two_days_before_is_a_repeat() -> None:
    recurrences = AlarmRecurrences(days=2)
    nights = [day * DAY + NIGHT for day in range(4)]
    # Nights one and two are news; from the third on the alarm is the known nightly one.
    assert _observe(recurrences, ["a"] * 4, nights, [0.9] * 4) == [0.9, 0.9, 0.5, 0.5]


def test_the_same_time_of_day_means_within_half_an_hour() -> None:
    recurrences = AlarmRecurrences(days=2)
    times = [NIGHT, DAY + NIGHT + 1200.0, 2 * DAY + NIGHT - 600.0]
    assert _observe(recurrences, ["a"] * 3, times, [0.9] * 3) == [0.9, 0.9, 0.5]
    # Two hours off is another time of day: news.
    assert _observe(recurrences, ["a"], [3 * DAY + NIGHT + 7200.0], [0.9]) == [0.9]


def test_one_day_before_is_not_enough_and_a_missed_day_breaks_the_pattern() -> None:
    recurrences = AlarmRecurrences(days=2)
    times = [NIGHT, DAY + NIGHT, 3 * DAY + NIGHT, 4 * DAY + NIGHT]
    # Day 2 had no alarm: day 3 is news again, and day 4 (alarmed on day 3, not day 2) too.
    assert _observe(recurrences, ["a"] * 4, times, [0.9] * 4) == [0.9, 0.9, 0.9, 0.9]


def test_a_recurrence_clearly_stronger_than_the_days_before_is_news() -> None:
    recurrences = AlarmRecurrences(days=2, margin=0.05)
    nights = [day * DAY + NIGHT for day in range(4)]
    # 0.93 is within the margin of 0.9 (a repeat); 0.99 is clearly worse than 0.93 and 0.9.
    assert _observe(recurrences, ["a"] * 4, nights, [0.9, 0.9, 0.93, 0.99]) == [0.9, 0.9, 0.5, 0.99]


def test_an_alarm_already_ranked_stays_ranked_and_the_inputs_are_not_changed() -> None:
    recurrences = AlarmRecurrences(days=2)
    given = np.array([0.9, 0.9, 0.8])
    ranked = np.array([0.9, 0.9, 0.5])  # the last already a repeat of something else
    times = np.array([NIGHT, DAY + NIGHT, 2 * DAY + NIGHT])
    result = recurrences.observe(["a"] * 3, times, given, ranked, 0.5)
    assert result.tolist() == [0.9, 0.9, 0.5]
    assert given.tolist() == [0.9, 0.9, 0.8]
    assert ranked.tolist() == [0.9, 0.9, 0.5]


def test_services_events_below_the_threshold_and_zero_days_are_left_alone() -> None:
    recurrences = AlarmRecurrences(days=2)
    _observe(recurrences, ["a", "a"], [NIGHT, DAY + NIGHT], [0.9, 0.9])
    assert _observe(recurrences, ["b"], [2 * DAY + NIGHT], [0.9]) == [0.9]
    assert _observe(recurrences, ["a"], [2 * DAY + NIGHT], [0.3]) == [0.3]
    off = AlarmRecurrences(days=0)
    nights = [day * DAY + NIGHT for day in range(4)]
    assert _observe(off, ["a"] * 4, nights, [0.9] * 4) == [0.9] * 4


def test_the_memory_is_a_few_bin_numbers_per_bin_whatever_the_rate_of_alarms() -> None:
    recurrences = AlarmRecurrences(days=2)
    times = np.arange(0.0, 10 * DAY, 60.0)  # an alarm every minute for ten days
    scores = np.full(len(times), 0.9)
    recurrences.observe(["a"] * len(times), times, scores, scores, 0.5)
    bins = recurrences.get("a")
    assert bins is not None
    assert len(bins) == 96
    assert max(len(numbers) for numbers in bins.values()) == 3


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    events=st.lists(
        st.tuples(st.sampled_from("ab"), st.floats(0.0, 5 * DAY), st.floats(0.0, 1.0)),
        max_size=60,
    )
)
def test_a_batch_scores_as_one_event_at_a_time(events: list[tuple[str, float, float]]) -> None:
    events = sorted(events, key=lambda e: e[1])
    services = [e[0] for e in events]
    times = [e[1] for e in events]
    scores = [e[2] for e in events]
    single = AlarmRecurrences(days=2)
    one_by_one = [_observe(single, [s], [t], [v])[0] for s, t, v in events]
    assert _observe(AlarmRecurrences(days=2), services, times, scores) == one_by_one


def _nightly_job(start: datetime, days: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    events = []
    for i in range(days * 288):  # one event every five minutes
        at = start + timedelta(minutes=5 * i)
        nightly = at.hour == 3 and at.minute == 0
        latency = float(rng.lognormal(np.log(400.0 if nightly else 40.0), 0.1))
        events.append(
            {
                "service": "reports",
                "level": "INFO",
                "message": "report built",
                "latency_ms": latency,
                "timestamp": at,
            }
        )
    return events


def test_a_nightly_job_is_news_twice_then_a_known_recurrence(
    bootstrapped_settings: Settings,
) -> None:
    events = _nightly_job(datetime(2026, 1, 1, tzinfo=UTC), 5)
    nights = [i for i, e in enumerate(events) if e["latency_ms"] > 200.0]
    assert len(nights) == 5
    off = make_settings(bootstrapped_settings.artifacts_dir.parent, alarm_recurrence_days=0)
    plain = [AnomalyDetector(off).predict_batch(events)[i] for i in nights]
    ranked = [AnomalyDetector(bootstrapped_settings).predict_batch(events)[i] for i in nights]
    assert all(r["is_anomaly"] for r in plain)
    assert [r["is_anomaly"] for r in ranked] == [True] * 5
    assert [r["anomaly_score"] for r in ranked[:2]] == [r["anomaly_score"] for r in plain[:2]]
    assert all(r["anomaly_score"] > 0.5 for r in plain[2:])
    assert [r["anomaly_score"] for r in ranked[2:]] == [0.5, 0.5, 0.5]
