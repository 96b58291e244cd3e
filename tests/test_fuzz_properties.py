"""Property tests: whatever the input, features are finite, windows stay consistent, and every
score the service returns is a finite number in [0, 1]."""

from __future__ import annotations

import functools
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.combiner import combine
from app.detectors.calibration import TailCalibrator, rarity_to_score
from app.engine import ScoringEngine
from app.events import EventBatch
from app.features import FEATURE_NAMES, feature_matrix
from app.model_store import ModelStore
from app.schemas.events import MAX_LATENCY_MS, Level, LogEvent
from app.windows import WindowStore
from tests.conftest import make_settings
from tests.hardening_support import small_fit

FloatArray = npt.NDArray[np.float64]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
SERVICES = st.sampled_from(["api", "db", "auth", "cache", "queue", "edge"])
LATENCIES = st.one_of(
    st.none(),
    st.floats(min_value=0.0, max_value=MAX_LATENCY_MS),
    st.sampled_from([0.0, 1e-300, 5e-324, MAX_LATENCY_MS]),
)
# Event times across the whole accepted range, in any order, with many collisions.
TIMESTAMPS = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)
    ),
    st.sampled_from([datetime(2026, 11, 24, 10, 15, s, tzinfo=UTC) for s in range(0, 60, 7)]),
)
EVENTS = st.builds(
    LogEvent,
    service=SERVICES,
    level=st.sampled_from(list(Level)),
    latency_ms=LATENCIES,
    timestamp=TIMESTAMPS,
)


def _assert_unit_interval(values: FloatArray) -> None:
    assert np.all(np.isfinite(values)), values
    assert np.all((values >= 0.0) & (values <= 1.0)), values


@FAST
@given(
    latency_z=arrays(
        np.float64,
        st.integers(0, 50),
        elements=st.one_of(st.just(math.nan), st.floats(-50.0, 50.0)),
    ),
    data=st.data(),
)
def test_features_are_finite_and_flag_missing_latency(
    latency_z: FloatArray, data: st.DataObject
) -> None:
    levels = data.draw(
        arrays(np.float64, latency_z.shape, elements=st.sampled_from([0.0, 1.0, 2.0, 3.0]))
    )
    features = feature_matrix(latency_z, levels)
    assert features.shape == (latency_z.shape[0], len(FEATURE_NAMES))
    assert np.all(np.isfinite(features))
    missing = np.isnan(latency_z)
    assert np.array_equal(features[:, 2], missing.astype(np.float64))
    assert np.array_equal(features[~missing, 0], latency_z[~missing])
    assert np.all(features[missing, 0] == 0.0)


@FAST
@given(
    rarity=arrays(np.float64, st.integers(0, 40), elements=ANY_FLOAT),
    q=st.floats(min_value=1e-12, max_value=0.49),
)
def test_rarity_to_score_is_finite_in_unit_interval(rarity: FloatArray, q: float) -> None:
    _assert_unit_interval(rarity_to_score(rarity, q))


@FAST
@given(
    rarities=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=40),
    q=st.floats(min_value=1e-12, max_value=0.49),
)
def test_rarer_never_scores_lower(rarities: list[float], q: float) -> None:
    ordered = np.sort(np.asarray(rarities))[::-1]  # from common to rare
    scores = rarity_to_score(ordered, q)
    assert np.all(np.diff(scores) >= 0.0)


@FAST
@given(
    n=st.integers(0, 30),
    data=st.data(),
    threshold=st.floats(min_value=0.01, max_value=0.99),
)
def test_combination_stays_in_unit_interval(n: int, data: st.DataObject, threshold: float) -> None:
    names = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    scores = {
        name: data.draw(arrays(np.float64, n, elements=st.floats(0.0, 1.0))) for name in names
    }
    weights = {name: data.draw(st.floats(0.0, 1.0)) for name in names}
    combined, flagged = combine(scores, weights, threshold, n)
    assert combined.shape == (n,)
    _assert_unit_interval(combined)
    assert np.array_equal(flagged, combined >= threshold)
    for name in names:
        assert np.all(combined >= weights[name] * scores[name])


@FAST
@given(
    reference=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=300),
    raw=arrays(
        np.float64, st.integers(1, 40), elements=st.one_of(st.floats(-1.0, 1.0), st.just(math.nan))
    ),
    q=st.floats(min_value=1e-6, max_value=0.2),
)
# Found by hypothesis: quantiles a subnormal apart overflowed np.interp's slope.
@example(reference=[0.0, 1.0, -2.225073858507e-311], raw=np.array([0.0, -5e-324]), q=0.001)
def test_calibrated_rarities_and_scores_are_sane(
    reference: list[float],
    raw: FloatArray,
    q: float,
) -> None:
    calibrator = TailCalibrator.fit(reference)
    finite = raw[np.isfinite(raw)]
    rarity = calibrator.rarity(np.sort(finite))
    assert np.all((rarity >= 0.0) & (rarity <= 1.0))
    assert np.all(np.diff(rarity) <= 1e-12)  # a higher raw score is never more common
    _assert_unit_interval(rarity_to_score(calibrator.rarity(raw), q))
    again = TailCalibrator.from_arrays(calibrator.to_arrays("p_"), "p_")
    assert np.array_equal(again.rarity(finite), calibrator.rarity(finite))


@FAST
@given(events=st.lists(EVENTS, min_size=1, max_size=40), max_services=st.integers(1, 4))
def test_window_store_stays_consistent(events: list[LogEvent], max_services: int) -> None:
    store = WindowStore(
        window_seconds=300.0,
        n_buckets=10,
        min_events=3,
        halflife_seconds=3600.0,
        max_services=max_services,
    )
    view = store.observe(EventBatch.from_events(events, received_at=1.8e9))
    assert len(store) <= max_services
    assert np.all(view.total >= 1)
    assert np.all((view.errors >= 0) & (view.errors <= view.total))
    assert np.all((view.expected_error_rate > 0.0) & (view.expected_error_rate < 1.0))
    assert np.all((view.recent_errors >= 0) & (view.recent_errors <= view.recent_total))
    z = view.latency_zscore
    assert np.all(np.isfinite(z) | np.isnan(z))
    for service in {event.service for event in events}:
        snapshot = store.snapshot(service)
        if snapshot is None:
            continue  # evicted
        assert 0 <= snapshot.errors <= snapshot.total
        assert snapshot.total <= sum(event.service == service for event in events)
        if snapshot.avg_latency is not None:
            assert snapshot.min_latency is not None
            assert snapshot.max_latency is not None
            tolerance = 1e-9 * max(1.0, snapshot.max_latency)
            assert snapshot.min_latency - tolerance <= snapshot.avg_latency
            assert snapshot.avg_latency <= snapshot.max_latency + tolerance


@functools.cache
def _engine() -> ScoringEngine:
    root = Path(tempfile.mkdtemp(prefix="insighthub-prop-"))
    settings_ = make_settings(root, max_services=5, baseline_warmup_events=3, window_min_events=2)
    model = ModelStore(settings_.artifacts_dir).save(small_fit(seed=7))
    return ScoringEngine(settings_, model)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(EVENTS, min_size=1, max_size=30))
def test_every_returned_score_is_finite_in_unit_interval(events: list[LogEvent]) -> None:
    # One engine across examples: its state (baselines, windows, evictions) gets ever stranger.
    for result in _engine().score(events):
        scores = [result["anomaly_score"]] + [
            m["anomaly_score"] for m in result["methods"].values()
        ]
        _assert_unit_interval(np.asarray(scores))
        assert all(method.get("degraded") is None for method in result["methods"].values())
        assert result["is_anomaly"] == (result["anomaly_score"] >= 0.5)
