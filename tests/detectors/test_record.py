"""The record store and detector: a latency beyond the whole range a service has shown is
flagged once the range is established; a new record by a hair, the same breakout again, and a
young service's noise are not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.bootstrap import load_or_bootstrap
from app.detectors.record import RecordDetector
from app.engine import ScoringEngine
from app.events import EventBatch
from app.model_store import ModelStore
from app.records import (
    RECORD_MIN_EVENTS,
    RECORD_TOLERANCE,
    RecordStore,
    _compiled_observe,
    _observe_kernel,
)
from app.schemas.events import Level, LogEvent
from tests.conftest import make_settings
from tests.detectors.test_contract import at_second, fresh_stores, stream_context
from tests.helpers import T0


def _batch(latency: np.ndarray, services: list[str] | None = None) -> EventBatch:
    n = latency.size
    return EventBatch(
        services or ["svc"] * n,
        [Level.INFO] * n,
        np.zeros(n),
        latency.astype(np.float64),
        np.arange(n, dtype=np.float64) * 60.0,
    )


def _uniform(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100.0, 200.0, n)


def test_a_breakout_beyond_the_range_is_rare_and_not_news_twice() -> None:
    history = _uniform(RECORD_MIN_EVENTS + 200, 0)
    latency = np.concatenate([history, [300.0, 300.0, 301.0, 200.0 + 0.5 * RECORD_TOLERANCE]])
    view = RecordStore().observe(_batch(latency))
    seen = history.size
    span = history.max() - history.min()
    assert view.margin[seen] == pytest.approx((300.0 - history.max()) / span)
    assert view.rarity[seen] == pytest.approx(1.0 / (seen + 1) ** 2)
    # The breakout widened the range: the same latency, or one a hair above, is not news.
    assert view.rarity[seen + 1] == 1.0
    assert view.rarity[seen + 2] == 1.0
    assert view.margin[seen + 2] > 0.0
    assert view.rarity[seen + 3] == 1.0
    assert view.low_ms[seen + 1] == history.min()
    assert view.high_ms[seen + 1] == 300.0


def test_a_fall_below_the_range_counts_too() -> None:
    history = _uniform(RECORD_MIN_EVENTS + 10, 1)
    view = RecordStore().observe(_batch(np.concatenate([history, [20.0]])))
    assert view.rarity[-1] < 1e-6


def test_nothing_is_judged_before_the_range_is_established() -> None:
    latency = np.concatenate([_uniform(RECORD_MIN_EVENTS - 1, 2), [5000.0]])
    view = RecordStore().observe(_batch(latency))
    assert np.all(view.rarity == 1.0)
    assert np.all(np.isnan(view.margin))


def test_steady_noise_rarely_breaks_out() -> None:
    """Exchangeable latencies set new records at a rate of 1/n, and few clear the tolerance."""
    rng = np.random.default_rng(3)
    view = RecordStore().observe(_batch(50.0 * np.exp(0.2 * rng.standard_normal(20_000))))
    assert (view.rarity < 1.0).sum() <= 3


def test_services_and_missing_latencies_are_kept_apart() -> None:
    history = _uniform(RECORD_MIN_EVENTS, 4)
    store = RecordStore()
    store.observe(_batch(history, ["a"] * history.size))
    view = store.observe(_batch(np.array([900.0, 900.0, np.nan]), ["b", "a", "a"]))
    assert view.rarity[0] == 1.0  # b has no range yet
    assert view.rarity[1] < 1e-6
    assert np.isnan(view.margin[2])
    assert view.rarity[2] == 1.0


def test_a_batch_scores_as_one_event_at_a_time() -> None:
    rng = np.random.default_rng(5)
    latency = np.exp(rng.uniform(3.0, 6.0, RECORD_MIN_EVENTS + 300))
    latency[RECORD_MIN_EVENTS + 100 :: 37] *= 3.0
    whole = RecordStore().observe(_batch(latency))
    store = RecordStore()
    single = [store.observe(_batch(latency[i : i + 1])) for i in range(latency.size)]
    for field in ("margin", "rarity", "low_ms", "high_ms"):
        one_by_one = np.concatenate([getattr(view, field) for view in single])
        assert np.array_equal(getattr(whole, field), one_by_one, equal_nan=True)


def test_the_compiled_kernel_is_the_python_one() -> None:
    if _compiled_observe is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(6)
    n = RECORD_MIN_EVENTS + 500
    latency = np.exp(rng.uniform(0.0, 8.0, n))
    latency[::50] = np.nan
    codes = np.array([~0, ~1] + [int(c) for c in rng.integers(0, 2, n - 2)], dtype=np.int64)
    outputs = []
    for kernel in (_compiled_observe, _observe_kernel):
        state = np.zeros((2, 3))
        out = np.empty((4, n))
        kernel(codes, latency, state, out, RECORD_TOLERANCE, float(RECORD_MIN_EVENTS))
        outputs.append(out)
    assert np.array_equal(outputs[0], outputs[1], equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1e7), min_size=1, max_size=40))
def test_rarities_are_probabilities_for_any_latencies(values: list[float]) -> None:
    store = RecordStore(min_events=5)
    view = store.observe(_batch(np.array(values)))
    assert np.all((view.rarity > 0.0) & (view.rarity <= 1.0))


def test_detector_reads_the_engine_record_view() -> None:
    stores = fresh_stores()
    events = [at_second("api", "INFO", 50.0 + i % 7, i * 0.5) for i in range(RECORD_MIN_EVENTS)]
    events.append(at_second("api", "INFO", 500.0, RECORD_MIN_EVENTS * 0.5))
    output = RecordDetector().rarity(stream_context(stores, events))
    assert output.rarity.shape == (RECORD_MIN_EVENTS + 1,)
    assert output.rarity[-1] == pytest.approx(1.0 / (RECORD_MIN_EVENTS + 1) ** 2)
    assert set(output.metrics) == {"range_margin", "range_low_ms", "range_high_ms"}


def test_a_breakout_of_a_spiky_service_is_flagged_where_the_other_methods_learned_spikes(
    tmp_path: Path, bootstrapped_artifacts: Path
) -> None:
    """A service that spikes to 3-8x every 10th event for 2,000 events teaches the forecast, the
    likelihood and their recalibration that large residuals are its habit; a spike to 15x is
    beyond every spike it ever made. Only the record method flags it, and it says why."""
    settings_ = make_settings(tmp_path)
    model = load_or_bootstrap(ModelStore(bootstrapped_artifacts), settings_)
    engine = ScoringEngine(settings_, model)
    rng = np.random.default_rng(7)
    latency = 100.0 * np.exp(0.05 * rng.standard_normal(2000))
    latency[3::10] *= rng.uniform(3.0, 8.0, latency[3::10].size)
    stream = [
        LogEvent(
            service="spiky",
            level=Level.INFO,
            latency_ms=float(ms),
            timestamp=T0 + timedelta(seconds=300 * k),
        )
        for k, ms in enumerate([*latency, 1500.0])
    ]
    results = engine.score(stream)
    breakout = results[-1]
    assert breakout["methods"]["record"]["anomaly_score"] >= 0.9
    others = {k: v["anomaly_score"] for k, v in breakout["methods"].items() if k != "record"}
    assert max(others.values()) < 0.5, others
    assert breakout["is_anomaly"]
    assert "beyond everything this service has shown" in breakout["explanation"]
    # Its own spikes broke out of the range at most a couple of times in 2,000 events.
    assert sum(r["methods"]["record"]["anomaly_score"] >= 0.5 for r in results[:-1]) <= 2
