"""One contract for every registered detector, in the spirit of scikit-learn's check_estimator:
construction stores parameters only, batch detectors refuse to score before fit, rarities have
the right shape, range and direction, and a save/load round trip changes nothing; the online
detector reads the engine's stores and never learns while scoring; unavailable ones say why."""

from __future__ import annotations

import copy
import functools
import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.baselines import BaselineStore
from app.detectors import (
    DETECTOR_TYPES,
    BatchDetector,
    Detector,
    NotFittedError,
    ScoringContext,
)
from app.detectors.isolation_forest import IsolationForestDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.events import EventBatch
from app.features import FEATURE_NAMES, feature_matrix
from app.forecasts import ForecastStore
from app.patterns import PatternStore
from app.records import RecordStore
from app.schemas.events import LogEvent
from app.sequences import SequenceStore
from app.templates import TemplateStore
from app.windows import WindowStore
from tests.helpers import T0, sliced

FloatArray = npt.NDArray[np.float64]

BATCH = [name for name, cls in DETECTOR_TYPES.items() if issubclass(cls, BatchDetector)]
ONLINE = [name for name, cls in DETECTOR_TYPES.items() if cls.kind == "online"]
SMALL_PARAMS: dict[str, dict[str, Any]] = {"isolation_forest": {"n_estimators": 30}}


def test_registry_has_the_required_detectors() -> None:
    assert {"isolation_forest", "sliding_window"} <= set(DETECTOR_TYPES)
    assert BATCH == ["isolation_forest", "autoencoder"]
    assert ONLINE == [
        "sliding_window",
        "templates",
        "sequence",
        "forecast",
        "likelihood",
        "pattern",
        "record",
    ]


@pytest.mark.parametrize("name", list(DETECTOR_TYPES))
def test_every_detector_describes_itself(name: str) -> None:
    cls = DETECTOR_TYPES[name]
    assert cls.name == name
    assert cls.method
    assert cls.kind in {"batch", "online"}
    assert cls.requires
    assert all(isinstance(item, str) and item for item in cls.requires)
    detector = cls()  # every parameter has a default
    params = detector.get_params()
    json.dumps(params)  # parameters are plain data: they go into manifests and /detectors
    # __init__ stores parameters only: rebuilding from them gives the same parameters.
    assert cls(**params).get_params() == params
    if cls.available():
        assert cls.unavailable_reason is None


# -- batch detectors ------------------------------------------------------------------------


def normal_features(n: int, seed: int) -> FloatArray:
    """Service-relative features of normal traffic: latency z near 0, mostly INFO."""
    rng = np.random.default_rng(seed)
    latency_z = rng.standard_normal(n)
    levels = rng.choice([0.0, 1.0, 2.0], n, p=[0.95, 0.04, 0.01])
    return feature_matrix(np.where(rng.random(n) < 0.05, np.nan, latency_z), levels)


def context_for(features: FloatArray) -> ScoringContext:
    """A context whose features are given; batch detectors read the features (and metrics the
    batch's own columns), so the rest comes from a matching plain batch."""
    n = features.shape[0]
    events = [
        LogEvent(service="svc", level="ERROR" if f[1] >= 2 else "INFO", latency_ms=100.0)
        for f in features
    ]
    batch = EventBatch.from_events(events, received_at=T0.timestamp())
    baseline = BaselineStore(20, 3600.0, 10).observe(batch)
    window = WindowStore(300.0, 60, 10, 3600.0, 10).observe(batch)
    assert baseline.latency_z.shape == (n,)
    return ScoringContext(batch, features, baseline, window)


def make_batch(name: str) -> BatchDetector:
    detector = DETECTOR_TYPES[name](**SMALL_PARAMS.get(name, {}))
    assert isinstance(detector, BatchDetector)
    return detector


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_refuses_to_score_before_fit(name: str) -> None:
    detector = make_batch(name)
    assert not detector.is_fitted
    with pytest.raises(NotFittedError):
        detector.rarity(context_for(normal_features(5, 0)))
    with pytest.raises(NotFittedError):
        detector.to_arrays()


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_fit_returns_self_and_scores_rarities(name: str) -> None:
    detector = make_batch(name)
    params = detector.get_params()
    assert detector.fit(normal_features(2000, 1)) is detector
    assert detector.is_fitted
    assert detector.get_params() == params  # fitting learns attributes, not parameters
    queries = normal_features(257, 2)
    output = detector.rarity(context_for(queries))
    assert output.rarity.shape == (257,)
    assert output.rarity.dtype == np.float64
    assert np.all(output.rarity > 0.0)
    assert np.all(output.rarity <= 1.0)
    for metric, values in output.metrics.items():
        assert values.shape == (257,), metric
    # About as many normal events look rarer than q as q says (calibration), loosely.
    assert np.mean(output.rarity < 0.1) < 0.25


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_ranks_an_extreme_event_rarer(name: str) -> None:
    detector = make_batch(name).fit(normal_features(2000, 3))
    assert len(FEATURE_NAMES) == 3
    typical = np.array([[0.0, 0.0, 0.0]])
    slow_error = np.array([[12.0, 2.0, 0.0]])
    very_slow = np.array([[40.0, 0.0, 0.0]])
    rarities = detector.rarity(context_for(np.vstack([typical, slow_error, very_slow]))).rarity
    assert rarities[1] < rarities[0]
    assert rarities[2] < rarities[0]
    assert rarities[0] > 0.2
    assert rarities[1] < 0.01


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_round_trips_through_arrays(name: str) -> None:
    detector = make_batch(name).fit(normal_features(1500, 4))
    arrays = detector.to_arrays()
    for key, array in arrays.items():
        assert array.dtype != object, key  # storable with allow_pickle=False
    restored = type(detector).from_arrays(detector.get_params(), copy.deepcopy(arrays))
    assert restored.is_fitted
    assert restored.get_params() == detector.get_params()
    queries = np.vstack([normal_features(300, 5), [[50.0, 3.0, 0.0], [-50.0, 0.0, 1.0]]])
    context = context_for(queries)
    assert np.array_equal(restored.rarity(context).rarity, detector.rarity(context).rarity)


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_does_not_learn_while_scoring(name: str) -> None:
    detector = make_batch(name).fit(normal_features(800, 6))
    before = {k: v.copy() for k, v in detector.to_arrays().items()}
    context = context_for(normal_features(100, 7))
    first = detector.rarity(context).rarity
    second = detector.rarity(context).rarity
    assert np.array_equal(first, second)
    after = detector.to_arrays()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_scores_batches_row_by_row(name: str) -> None:
    detector = make_batch(name).fit(normal_features(800, 8))
    features = normal_features(40, 9)
    whole = detector.rarity(context_for(features)).rarity
    one_by_one = [detector.rarity(context_for(features[i : i + 1])).rarity[0] for i in range(40)]
    assert whole.tolist() == one_by_one


# -- the online sliding window ----------------------------------------------------------------


Stores = tuple[
    BaselineStore,
    WindowStore,
    TemplateStore,
    SequenceStore,
    ForecastStore,
    PatternStore,
    RecordStore,
]


def stream_context(stores: Stores, events: list[LogEvent]) -> ScoringContext:
    """What the engine builds: every store read, then learned, in event order."""
    baselines, windows, templates, sequences, forecasts, patterns, records = stores
    batch = EventBatch.from_events(events)
    baseline = baselines.observe(batch)
    window = windows.observe(batch)
    template_view = templates.observe(batch.services, [e.message for e in events])
    features = feature_matrix(baseline.latency_z, batch.level_scores)
    return ScoringContext(
        batch,
        features,
        baseline,
        window,
        template_view,
        sequences.observe(batch.services, template_view.template_id),
        forecasts.observe(batch),
        patterns=patterns.observe(batch),
        records=records.observe(batch),
    )


def at_second(
    service: str, level: str, latency: float, second: float, message: str = "request served"
) -> LogEvent:
    from datetime import timedelta

    return LogEvent(
        service=service,
        level=level,
        message=message,
        latency_ms=latency,
        timestamp=T0 + timedelta(seconds=second),
    )


def fresh_stores() -> Stores:
    return (
        BaselineStore(20, 3600.0, 100),
        WindowStore(300.0, 60, 10, 3600.0, 100),
        TemplateStore(),
        SequenceStore(),
        ForecastStore(),
        PatternStore(),
        RecordStore(),
    )


# Each online method's specialty: the contract checks it where the method claims it.
ERROR_BURST = ["sliding_window", "forecast"]
# The metric in which each method reports the jump.
LATENCY_JUMP = {"sliding_window": "latency_zscore", "forecast": "latency_residual_z"}


@pytest.mark.parametrize("name", ERROR_BURST)
def test_online_detector_flags_an_error_burst(name: str) -> None:
    detector = DETECTOR_TYPES[name]()
    stores = fresh_stores()
    rng = np.random.default_rng(0)
    normal = [at_second("api", "INFO", float(rng.lognormal(4.0, 0.2)), i * 0.5) for i in range(600)]
    calm = detector.rarity(stream_context(stores, normal)).rarity
    burst = [at_second("api", "ERROR", 55.0, 300.0 + i * 0.5) for i in range(12)]
    during = detector.rarity(stream_context(stores, burst)).rarity
    assert np.median(calm[100:]) > 0.3
    assert during[-1] < 1e-3
    assert during[-1] < calm[100:].min()


@pytest.mark.parametrize("name", list(LATENCY_JUMP))
def test_online_detector_flags_a_latency_jump(name: str) -> None:
    detector = DETECTOR_TYPES[name]()
    stores = fresh_stores()
    rng = np.random.default_rng(1)
    normal = [at_second("api", "INFO", float(rng.lognormal(4.0, 0.2)), i * 0.5) for i in range(400)]
    detector.rarity(stream_context(stores, normal))
    jump = detector.rarity(stream_context(stores, [at_second("api", "INFO", 5000.0, 201)]))
    assert jump.rarity[0] < 1e-6
    assert jump.metrics[LATENCY_JUMP[name]][0] > 10


@pytest.mark.parametrize("name", ONLINE)
def test_online_detector_does_not_learn_inside_rarity(name: str) -> None:
    detector = DETECTOR_TYPES[name]()
    stores = fresh_stores()
    events = [
        at_second("api", "ERROR" if i % 7 == 0 else "INFO", 50.0 + i, i, f"step {i % 3} done")
        for i in range(60)
    ]
    context = stream_context(stores, events)
    state_before = copy.deepcopy(vars(detector)) if hasattr(detector, "__dict__") else None
    windows_before = stores[1].snapshot("api")
    view_before = copy.deepcopy(context.window)
    first = detector.rarity(context)
    second = detector.rarity(context)
    assert np.array_equal(first.rarity, second.rarity)
    for metric in first.metrics:
        assert np.array_equal(first.metrics[metric], second.metrics[metric], equal_nan=True)
    if state_before is not None:
        assert vars(detector) == state_before
    assert stores[1].snapshot("api") == windows_before
    for field in ("total", "errors", "expected_error_rate", "recent_errors"):
        assert np.array_equal(getattr(context.window, field), getattr(view_before, field))


def test_sliding_window_rarity_is_in_range() -> None:
    detector = SlidingWindowDetector()
    stores = fresh_stores()
    events = [
        at_second("s", "ERROR" if i % 3 else "INFO", 10.0 * (1 + i % 5), i) for i in range(90)
    ]
    rarity = detector.rarity(stream_context(stores, events)).rarity
    assert rarity.shape == (90,)
    assert np.all((rarity > 0.0) & (rarity <= 1.0))


# -- one event: rarity_one is rarity's row, as Python floats ----------------------------------


def assert_one_event_rows(detector: Detector, context: ScoringContext) -> None:
    """``rarity_one`` of each event alone gives the values of ``rarity``'s row for it, bit for
    bit, each a Python float, metrics in the same order."""
    whole = detector.rarity(context)
    for i in range(len(context.batch)):
        alone = detector.rarity_one(sliced(context, i))
        assert type(alone.rarity) is float
        assert np.array([alone.rarity]).tobytes() == whole.rarity[i : i + 1].tobytes(), i
        assert list(alone.metrics) == list(whole.metrics)
        for metric, column in whole.metrics.items():
            value = alone.metrics[metric]
            assert type(value) is float, metric
            assert np.array([value]).tobytes() == column[i : i + 1].tobytes(), (metric, i)


@pytest.mark.parametrize("name", BATCH)
def test_batch_detector_scores_one_event_as_its_row(name: str) -> None:
    detector = make_batch(name).fit(normal_features(800, 10))
    odd = [[50.0, 3.0, 0.0], [-50.0, 0.0, 1.0], [1e39, 2.0, 0.0], [-np.inf, 1.0, 0.0]]
    odd += [[np.inf, 0.0, 0.0], [0.3, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 2.0, 1.0]]
    assert_one_event_rows(detector, context_for(np.vstack([normal_features(200, 11), odd])))


def test_forest_steps_hold_at_every_threshold() -> None:
    """The forest's one-event tables (``_Steps``) at and around every split on latency_z: the
    thresholds, their float64 and float32 neighbours, for every level and latency_missing."""
    detector = IsolationForestDetector(n_estimators=30).fit(normal_features(600, 12))
    assert detector.forest_ is not None
    bounds = detector.forest_.split_thresholds(0)
    as_float32 = bounds.astype(np.float32)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    z = np.concatenate(
        [
            bounds,
            np.nextafter(bounds, np.inf),
            np.nextafter(bounds, -np.inf),
            as_float32,
            np.nextafter(as_float32, up),
            np.nextafter(as_float32, down),
        ]
    )
    rng = np.random.default_rng(13)
    picked = rng.choice(z, size=600, replace=False)
    levels = rng.choice([0.0, 1.0, 2.0, 3.0], size=picked.size)
    missing = rng.choice([0.0, 1.0], size=picked.size)
    features = np.column_stack([picked, levels, missing])
    assert_one_event_rows(detector, context_for(features))
    steps = detector._steps  # the tables were used, not the kernel
    assert steps is not None
    assert len(steps.tables) == 8


@pytest.mark.parametrize("name", ONLINE)
def test_online_detector_scores_one_event_as_its_row(name: str) -> None:
    detector = DETECTOR_TYPES[name]()
    stores = fresh_stores()
    rng = np.random.default_rng(14)
    events = []
    for i in range(700):
        level = "ERROR" if rng.random() < 0.08 or 400 < i < 420 else "INFO"
        latency = float(rng.lognormal(4.0, 0.3)) * (30.0 if i % 97 == 0 else 1.0)
        message = f"step {i % 4} done" if rng.random() < 0.95 else f"novel thing {i}"
        events.append(at_second(("api", "db")[i % 2], level, latency, 0.5 * i, message))
    for start in range(0, len(events), 100):
        assert_one_event_rows(detector, stream_context(stores, events[start : start + 100]))


z_values = st.one_of(
    st.floats(width=64),
    st.floats(-6.0, 6.0),
    st.floats(width=32).map(float),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 3.4028235e38, 3.4028236e38]),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rows=st.lists(
        st.tuples(
            z_values, st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5]), st.sampled_from([0.0, 1.0])
        ),
        min_size=1,
        max_size=30,
    )
)
def test_forest_one_event_is_its_row_for_any_latency_z(
    rows: list[tuple[float, float, float]],
) -> None:
    """Any float64 latency_z (NaN, infinities, beyond float32's range, subnormals), every level
    (and one without a table), either latency_missing: the table's values are the kernel's."""
    assert_one_event_rows(_small_forest(), context_for(np.array(rows, dtype=np.float64)))


def test_forest_tables_follow_a_refit() -> None:
    detector = IsolationForestDetector(n_estimators=20).fit(normal_features(500, 15))
    context = context_for(normal_features(50, 16))
    assert_one_event_rows(detector, context)
    detector.fit(normal_features(500, 17) * 3.0)  # another forest, another calibrator
    assert_one_event_rows(detector, context)


@functools.cache
def _small_forest() -> IsolationForestDetector:
    return IsolationForestDetector(n_estimators=25).fit(normal_features(700, 18))
