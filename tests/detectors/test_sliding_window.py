"""The sliding window's error-burst scan: exact tails, a false-alarm rate it keeps on independent
errors, and the sparse-service burst it is there for (seen where the old 16-line count was not)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import bdtrc

from app.detectors.sliding_window import (
    BURST_SHARE,
    SCAN_CORRECTION,
    SlidingWindowDetector,
    _predictive_tail,
    error_burst_rarity,
)
from app.eval.synthetic import (
    EVAL_SERVICES,
    TARGET_DETECT_SECONDS,
    evaluation_incidents,
    generate_stream,
)
from app.events import EventBatch
from app.local import AnomalyDetector
from app.schemas.events import Level, LogEvent
from app.settings import Settings
from app.windows import RECENT_EVENTS, WindowStore
from tests.helpers import T0

TARGET = 1e-3  # the default target false-alarm rate: a method alarms at rarity <= TARGET


@settings(max_examples=200, deadline=None)
@given(
    lines=st.integers(1, RECENT_EVENTS - 1),
    earlier=st.integers(1, RECENT_EVENTS - 1),
    alpha=st.floats(0.1, 1e5),
    beta=st.floats(1.0, 1e6),
)
def test_predictive_tail_is_the_beta_binomial_upper_tail(
    lines: int, earlier: int, alpha: float, beta: float
) -> None:
    # The upper terms from their closed form, C(d, x) B(x + alpha, d - x + beta) / B(alpha,
    # beta), in log space (scipy's betabinom.sf is 1 - cdf: it loses tails below ~1e-10).
    def log_beta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    expected = sum(
        math.comb(lines, x)
        * math.exp(log_beta(x + alpha, lines - x + beta) - log_beta(alpha, beta))
        for x in range(earlier, lines + 1)
    )
    # lgamma of arguments near 1e6 carries ~1e-9 relative error into each term.
    assert _predictive_tail(earlier, lines, alpha, beta) == pytest.approx(
        expected, rel=1e-6, abs=1e-300
    )


@settings(max_examples=200, deadline=None)
@given(
    bits=st.integers(0, (1 << RECENT_EVENTS) - 1).map(lambda b: b | 1),  # this line is an error
    rate=st.floats(1e-4, 0.5),
    weight=st.floats(10.0, 1e7),
)
def test_burst_rarity_is_a_probability_no_larger_than_the_line_alone(
    bits: int, rate: float, weight: float
) -> None:
    rarity = error_burst_rarity(bits, rate, weight)
    assert 0.0 < rarity <= SCAN_CORRECTION * rate * (1 + 1e-12)
    # More earlier errors (one more bit set) never make the line less rare.
    for distance in range(1, RECENT_EVENTS):
        if not (bits >> distance) & 1:
            assert error_burst_rarity(bits | (1 << distance), rate, weight) <= rarity
            break


def test_a_long_history_gives_the_binomial_tail_per_line() -> None:
    # Two errors three lines apart (bits 0 and 3) at a rate known from ~10**8 lines.
    rarity = error_burst_rarity(0b1001, 0.01, 1e8)
    per_line = 0.01 * float(bdtrc(0, 3, 0.01))  # the line errs, and one of the 3 before it
    assert rarity == pytest.approx(SCAN_CORRECTION * per_line, rel=1e-5)


def test_a_young_service_is_not_judged_as_if_its_rate_were_exact() -> None:
    bits = 0b1001
    sure = error_burst_rarity(bits, 0.01, 1e8)
    young = error_burst_rarity(bits, 0.01, 30.0)  # the same rate from 30 lines (prior included)
    assert young > 1.5 * sure


@pytest.mark.parametrize("rate", [0.002, 0.01, 0.03])
def test_independent_errors_reach_the_alarm_no_more_often_than_the_budget(rate: float) -> None:
    """On independent errors at a well-known rate, the share of lines whose burst rarity reaches
    the burst test's alarm level stays within its share of the target false-alarm rate."""
    rng = np.random.default_rng(11)
    lines = 3_000_000
    errors = np.flatnonzero(rng.random(lines) < rate)
    alarm = BURST_SHARE * TARGET
    alarms = 0
    bits = 0
    previous = -(10**9)
    for line in errors.tolist():
        gap = line - previous
        bits = ((bits << gap) | 1) & ((1 << RECENT_EVENTS) - 1) if gap < 64 else 1
        previous = line
        if error_burst_rarity(bits, rate, 1e9) <= alarm:
            alarms += 1
    # Binomial noise on ~1,500 expected alarms at most: 3 sigma above the budget is a failure.
    budget = alarm * lines
    assert alarms <= budget + 3 * math.sqrt(budget)


def _sparse_service_with_a_burst(
    history_seconds: int, burst: list[bool], rate: float = 0.006, seed: int = 3
) -> list[LogEvent]:
    """A service logging once a second with errors at ``rate`` (none in a row), then ``burst``
    (0.6%: the `reports` service's own rate before its burst at seed 7, 8 errors in 1,266)."""
    rng = np.random.default_rng(seed)
    flags = rng.random(history_seconds) < rate
    flags[1:] &= ~flags[:-1]
    levels = [Level.ERROR if f else Level.INFO for f in flags.tolist()] + [
        Level.ERROR if f else Level.INFO for f in burst
    ]
    return [
        LogEvent(
            service="reports",
            level=level,
            message="request failed" if level is Level.ERROR else "request served",
            latency_ms=4000.0,
            timestamp=T0 + timedelta(seconds=second),
        )
        for second, level in enumerate(levels)
    ]


def _burst_rarities(events: list[LogEvent]) -> tuple[np.ndarray, np.ndarray]:
    from app.baselines import BaselineStore
    from app.detectors.base import ScoringContext

    batch = EventBatch.from_events(events)
    baseline = BaselineStore(20, 3600.0, 10).observe(batch)
    window = WindowStore(300.0, 60, 10, 3600.0, 10).observe(batch)
    context = ScoringContext(batch, np.zeros((len(events), 3)), baseline, window)
    output = SlidingWindowDetector().rarity(context)
    old_recent_test = 4 * bdtrc(
        np.maximum(window.recent_errors - 1, 0), window.recent_total, window.expected_error_rate
    )
    return output.rarity, old_recent_test


def test_two_errors_in_four_lines_of_a_quiet_service_are_flagged() -> None:
    """The synthetic evaluation's burst at seed 7: after 20 minutes at 0.6% errors, an error,
    two ordinary lines, an error. The second error is a burst at the target rate; the
    16-line count this scan replaced called it one in ~100 (every error pair within 16 lines
    looks alike to a count)."""
    events = _sparse_service_with_a_burst(1200, [True, False, False, True])
    rarity, old = _burst_rarities(events)
    assert rarity[-1] <= TARGET
    assert old[-1] > TARGET
    assert rarity[-4] > TARGET  # the burst's first error alone is not news


def test_ordinary_errors_of_the_quiet_service_are_not_flagged() -> None:
    events = _sparse_service_with_a_burst(1200, [])
    rarity, _ = _burst_rarities(events)
    is_error = np.array([e.level is Level.ERROR for e in events])
    assert is_error.sum() >= 5
    assert np.all(rarity[is_error][3:] > TARGET)


def test_the_engine_flags_the_evaluation_burst_within_10_seconds(
    bootstrapped_settings: Settings,
) -> None:
    """End to end, every method and the online recalibration included, on the synthetic
    evaluation's own `reports` lines (seed 7, up to the burst; replayed alone they give the
    full evaluation's times): the burst starts at 1,275 s with an error, two ordinary lines, an
    error at 3.3 s, flagged; before the scan the first alarm came at 11.05 s."""
    incidents = evaluation_incidents(1800.0)
    stream = generate_stream(1800.0, incidents, EVAL_SERVICES, 7, varied_messages=True)
    burst = next(i for i in incidents if i.kind == "error_burst" and i.service == "reports")
    rows = [
        i
        for i, event in enumerate(stream.events)
        if event.service == "reports" and stream.seconds[i] < burst.start_second + 15.0
    ]
    results = AnomalyDetector(bootstrapped_settings).predict_batch([stream.events[i] for i in rows])
    flagged_in_burst = [
        stream.seconds[i] - burst.start_second
        for i, result in zip(rows, results, strict=True)
        if result["is_anomaly"]
        and stream.labels[i]
        and stream.incidents[stream.incident_of[i]] is burst
    ]
    assert flagged_in_burst
    assert flagged_in_burst[0] <= TARGET_DETECT_SECONDS


def _shift_rarities(events_seen: list[int], shift: float) -> tuple[np.ndarray, list[float]]:
    """The sliding window's rarity of events whose baseline (crafted) shows a latency shift of
    ``shift`` spreads after ``events_seen`` events, as a batch and one event at a time."""
    from app.baselines import BaselineView
    from app.detectors.base import ScoringContext

    n = len(events_seen)
    # No latency in the window's events: its jump test stays out (rarity 1), the shift decides.
    events = [LogEvent(service="s", level=Level.INFO, message="ok", timestamp=T0) for _ in range(n)]

    def context(rows: list[int]) -> ScoringContext:
        batch = EventBatch.from_events([events[row] for row in rows])
        window = WindowStore(300.0, 60, 10, 3600.0, 10).observe(batch)
        baseline = BaselineView(
            latency_z=np.full(len(rows), 2.0),
            median_latency_ms=np.full(len(rows), 100.0),
            events_seen=np.array([events_seen[row] for row in rows], dtype=np.int64),
            ready=np.ones(len(rows), dtype=np.bool_),
            latency_shift=np.full(len(rows), shift),
        )
        return ScoringContext(batch, np.zeros((len(rows), 3)), baseline, window)

    detector = SlidingWindowDetector()
    batch_rarity = detector.rarity(context(list(range(n)))).rarity
    one_by_one = [float(detector.rarity(context([row])).rarity[0]) for row in range(n)]
    return batch_rarity, one_by_one


def test_a_young_baselines_shift_is_judged_by_t_a_mature_ones_by_about_the_normal() -> None:
    """The baseline's centre and scale are estimates from its own n events: the recent mean of
    z-scores against them is t(n - 1), not normal (``_shift_degrees_of_freedom``)."""
    from scipy.special import ndtr, stdtr

    from app.detectors.sliding_window import LATENCY_SHIFT_SHARE

    rarity, one_by_one = _shift_rarities([30, 60, 100_000], 3.5)
    assert rarity.tolist() == one_by_one  # the batch of one computes exactly the same
    np.testing.assert_allclose(rarity[:2], stdtr([29.0, 59.0], -3.5) / LATENCY_SHIFT_SHARE)
    # Young: well above the normal tail (the shift at 3.5 spreads is ~1 in 1,300 at 30 events,
    # 1 in 4,300 by the normal); mature: the normal tail within 0.1%.
    assert rarity[0] > 2.5 * ndtr(-3.5) / LATENCY_SHIFT_SHARE
    assert rarity[2] == pytest.approx(ndtr(-3.5) / LATENCY_SHIFT_SHARE, rel=1e-3)
