"""Per-service latency baselines: warm-up, robustness to wild values, shift, eviction, seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from app.baselines import (
    CLIP_SCALES,
    MIN_LOG_SCALE,
    SHIFT_ALPHA,
    SHIFT_CLIP,
    SHIFT_MIN_EVENTS,
    SHIFT_SPREAD,
    BaselineStore,
    SeedBaseline,
    robust_location_scale,
)
from app.events import EventBatch
from app.schemas.events import LogEvent

WARMUP = 20


def batch(service: str, latencies: Sequence[float | None], start: float = 0.0) -> EventBatch:
    events = [LogEvent(service=service, level="INFO", latency_ms=lat) for lat in latencies]
    built = EventBatch.from_events(events, received_at=0.0)
    times = start + np.arange(len(latencies), dtype=np.float64)
    return EventBatch(built.services, built.levels, built.level_scores, built.latency_ms, times)


def fresh(max_services: int = 100) -> BaselineStore:
    return BaselineStore(WARMUP, 3600.0, max_services)


def test_warm_up_then_judged_against_the_median() -> None:
    baselines = fresh()
    latencies = [100.0 + (i % 5) for i in range(WARMUP)]
    view = baselines.observe(batch("a", [*latencies, 102.0]))
    assert not view.ready[:WARMUP].any()
    assert np.isnan(view.latency_z[:WARMUP]).all()
    assert view.events_seen.tolist() == list(range(WARMUP + 1))
    assert view.ready[WARMUP]
    location, scale = robust_location_scale(np.log1p(np.array(latencies)))
    assert view.median_latency_ms[WARMUP] == pytest.approx(math.expm1(location))
    assert view.latency_z[WARMUP] == pytest.approx((math.log1p(102.0) - location) / scale)


def test_a_wild_value_during_warm_up_does_not_move_the_baseline() -> None:
    normal = [100.0 + (i % 7) for i in range(WARMUP - 1)]
    clean, dirty = fresh(), fresh()
    clean.observe(batch("a", [*normal, 103.0]))
    dirty.observe(batch("a", [*normal, 5_000_000.0]))
    a, b = clean.get("a"), dirty.get("a")
    assert a is not None
    assert b is not None
    assert math.expm1(b.location) == pytest.approx(math.expm1(a.location), rel=0.03)
    assert b.scale < 2 * a.scale


def test_a_wild_value_after_warm_up_moves_the_baseline_at_most_a_clipped_step() -> None:
    baselines = fresh()
    baselines.observe(batch("a", [100.0 + (i % 7) for i in range(200)]))
    state = baselines.get("a")
    assert state is not None
    location, scale, weight = state.location, state.scale, state.weight
    view = baselines.observe(batch("a", [86_400_000.0], start=200.0))
    assert view.latency_z[0] == 50.0  # clipped, never infinite
    decayed_weight = weight * 2.0 ** (-1.0 / 3600.0)  # one second of event time has passed
    state = baselines.get("a")
    assert state is not None
    assert abs(state.location - location) <= CLIP_SCALES * scale / (decayed_weight + 1) + 1e-12
    assert math.expm1(state.location) == pytest.approx(math.expm1(location), rel=0.01)
    follow = baselines.observe(batch("a", [103.0], start=201.0))
    assert abs(follow.latency_z[0]) < 3


def test_single_outlier_cannot_fake_a_latency_shift_but_a_slowdown_does() -> None:
    baselines = fresh()
    view = baselines.observe(batch("a", [100.0 + (i % 7) for i in range(100)]))
    assert np.isnan(view.latency_shift[: WARMUP + SHIFT_MIN_EVENTS - 1]).all()
    assert np.nanmax(np.abs(view.latency_shift)) < 3
    outlier = baselines.observe(batch("a", [50_000.0], start=100.0))
    # One value is clipped at SHIFT_CLIP before it enters the average.
    assert outlier.latency_shift[0] < SHIFT_CLIP
    slow = baselines.observe(batch("a", [400.0] * 10, start=101.0))
    assert slow.latency_shift[-1] > 5


def test_a_spike_that_ended_is_not_a_shift_but_a_noisy_slowdown_stays_one() -> None:
    rng = np.random.default_rng(5)
    normal = (100.0 * rng.lognormal(0, 0.3, 200)).tolist()
    baselines = fresh()
    baselines.observe(batch("a", normal))
    spike = baselines.observe(batch("a", [1000.0] * 30, start=200.0))
    assert spike.latency_shift[-1] > 8  # the mean of clipped z-scores at the clip
    # The spike ends: an ordinary event below the median, then a moderately slow one (2.5x).
    after = baselines.observe(batch("a", [90.0, 250.0], start=230.0))
    assert after.latency_z[1] > 1  # slow enough to count towards a shift (SHIFT_MIN_OWN_Z)
    assert after.latency_shift[1] < 1.5  # it was ~7 spreads before the mean restarted
    # A 2x slowdown with the same noise (on a service without the spike) is never cut short:
    # the mean follows its recursion at every event and stays high (the baseline itself slowly
    # learns the new level, so it does not stay as high as at the start).
    baselines.observe(batch("b", normal))
    slowdown = (200.0 * rng.lognormal(0, 0.3, 60)).tolist()
    slow = baselines.observe(batch("b", slowdown, start=200.0))
    mean = slow.latency_shift * SHIFT_SPREAD
    clipped = np.clip(slow.latency_z, -SHIFT_CLIP, SHIFT_CLIP)
    np.testing.assert_allclose(mean[1:], mean[:-1] + SHIFT_ALPHA * (clipped[1:] - mean[:-1]))
    assert np.all(slow.latency_shift[10:] > 3)


def test_services_are_judged_on_their_own_scale() -> None:
    baselines = fresh()
    rng = np.random.default_rng(0)
    fast = (2.0 * rng.lognormal(0, 0.2, 200)).tolist()
    slow = (4000.0 * rng.lognormal(0, 0.2, 200)).tolist()
    baselines.observe(batch("fast", fast))
    baselines.observe(batch("slow", slow))
    view_slow = baselines.observe(batch("slow", [4000.0], start=300.0))
    view_fast = baselines.observe(batch("fast", [4000.0], start=300.0))
    assert abs(view_slow.latency_z[0]) < 1
    assert view_fast.latency_z[0] > 10


def test_missing_latency_counts_the_event_but_teaches_nothing() -> None:
    baselines = fresh()
    view = baselines.observe(batch("a", [None] * 30))
    assert view.events_seen.tolist() == list(range(30))
    assert not view.ready.any()
    state = baselines.get("a")
    assert state is not None
    assert state.warmup_latencies == 0


def test_constant_latency_keeps_a_minimum_scale() -> None:
    baselines = fresh()
    view = baselines.observe(batch("a", [50.0] * 40 + [51.0]))
    state = baselines.get("a")
    assert state is not None
    assert state.scale == MIN_LOG_SCALE
    assert abs(view.latency_z[-1]) < 1  # a 1 ms wobble is not a thousand-sigma event


def test_least_recently_seen_service_is_evicted() -> None:
    baselines = fresh(max_services=2)
    baselines.observe(batch("a", [1.0]))
    baselines.observe(batch("b", [1.0]))
    baselines.observe(batch("a", [1.0]))
    baselines.observe(batch("c", [1.0]))
    assert set(baselines) == {"a", "c"}
    assert baselines.evictions == 1
    state = baselines.get("a")
    assert state is not None
    assert state.events_seen == 2


def test_seeds_make_a_service_ready_but_never_override_live_state() -> None:
    baselines = fresh()
    baselines.observe(batch("live", [10.0] * 5))
    baselines.seed(
        [
            SeedBaseline("trained", math.log1p(200.0), 0.3, 5000),
            SeedBaseline("live", math.log1p(9999.0), 0.3, 5000),
            SeedBaseline("thin", math.log1p(50.0), 0.3, 3),
        ]
    )
    view = baselines.observe(batch("trained", [200.0]))
    assert view.ready[0]
    assert view.events_seen[0] == 5000
    assert view.latency_z[0] == pytest.approx(0.0, abs=1e-9)
    live = baselines.get("live")
    assert live is not None
    assert not live.ready
    assert live.events_seen == 5
    thin = baselines.get("thin")
    assert thin is not None
    assert not thin.ready  # too few trained events to skip the warm-up
