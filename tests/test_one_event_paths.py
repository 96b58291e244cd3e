"""The one-event shortcuts (Python floats where a batch uses numpy) give the batch path's bits.

Every /score is a batch of one, so several steps compute it on Python floats rather than through
numpy calls whose fixed cost is most of their price for one value. Each test here scores the same
values both ways and compares them bit for bit (NaN included)."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detectors.base import ScoringContext
from app.detectors.calibration import TAIL_FRACTION, TailCalibrator, interp_one
from app.engine import ScoringEngine
from app.events import EventBatch, parse_events
from app.features import expected_latency_z, feature_matrix
from app.model import bootstrap_training_data, fit_model, model_from_arrays
from app.repeats import AlarmRepeats
from tests.conftest import make_settings

T = TypeVar("T")

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@st.composite
def _grids(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """A calibrator's grid: sorted finite quantiles, ties included, and increasing levels."""
    size = draw(st.integers(2, 40))
    # Many ties, as a discrete raw score makes, or any finite values.
    values = st.sampled_from([-2.0, -0.5, 0.0, 0.25, 1.0, 7.0]) if draw(st.booleans()) else finite
    quantiles = sorted(draw(st.lists(values, min_size=size, max_size=size)))
    levels = np.linspace(0.0, 1.0, size).tolist()
    return quantiles, levels


@settings(max_examples=300, deadline=None, derandomize=True)
@given(grid=_grids(), picks=st.lists(st.integers(0, 39), max_size=8), extra=st.lists(finite))
def test_interp_one_is_numpys_interp(
    grid: tuple[list[float], list[float]], picks: list[int], extra: list[float]
) -> None:
    xp, fp = grid
    points = [xp[i % len(xp)] for i in picks]
    # Grid points, their float neighbours, values between and beyond, NaN and infinities.
    probes = [*points, *(math.nextafter(p, math.inf) for p in points)]
    probes += [*(math.nextafter(p, -math.inf) for p in points), *extra, math.nan]
    probes += [math.inf, -math.inf, (xp[0] + xp[-1]) / 2]
    expected = np.interp(np.array(probes), np.array(xp), np.array(fp))
    got = np.array([interp_one(x, xp, fp) for x in probes])
    assert _same_bits(got, expected)


def _calibrator(seed: int) -> TailCalibrator:
    rng = np.random.default_rng(seed)
    raw = rng.gamma(rng.uniform(0.3, 3.0), rng.uniform(0.01, 10.0), size=int(rng.integers(2, 500)))
    if seed % 3 == 0:
        raw = np.round(raw)  # ties in the quantile grid
    return TailCalibrator.fit(raw)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), scores=st.lists(st.floats(width=64), min_size=1))
def test_tail_calibrator_rarity_of_one_score_equals_the_batch(
    seed: int, scores: list[float]
) -> None:
    calibrator = _calibrator(seed)
    rng = np.random.default_rng(seed)
    values = np.array([*scores, *calibrator.quantiles[:: max(1, seed % 17)], *rng.normal(size=5)])
    values = np.concatenate([values, calibrator.tail_start + rng.exponential(size=3)])
    whole = calibrator.rarity(values)
    for i, value in enumerate(values):
        alone = calibrator.rarity(np.array([value]))
        assert _same_bits(alone, whole[i : i + 1]), value
    assert np.nanmin(whole, initial=1.0) >= 0.0
    assert np.all(np.isnan(whole) | (whole <= 1.0))
    body = values[~(values > calibrator.tail_start) & ~np.isnan(values)]
    assert np.all(calibrator.rarity(body) >= TAIL_FRACTION)


def _sliced(value: T, i: int) -> T:
    """``value`` (an array, a list or a dataclass of them) for event i alone."""
    if isinstance(value, np.ndarray):
        return value[i : i + 1].copy()  # type: ignore[return-value]
    if isinstance(value, list):
        return value[i : i + 1]  # type: ignore[return-value]
    if isinstance(value, EventBatch):  # built from its five given columns; the rest derived
        sliced = EventBatch(
            _sliced(value.services, i),
            _sliced(value.levels, i),
            _sliced(value.level_scores, i),
            _sliced(value.latency_ms, i),
            _sliced(value.timestamps, i),
        )
        return sliced  # type: ignore[return-value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # the stores' NamedTuple views
        return type(value)(*(_sliced(column, i) for column in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _sliced(getattr(value, f.name), i) for f in dataclasses.fields(value)}
        init = {f.name: fields[f.name] for f in dataclasses.fields(value) if f.init}
        return type(value)(**init)
    return value


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ScoringEngine:
    tmp_path: Path = tmp_path_factory.mktemp("one-event")
    result = fit_model(bootstrap_training_data(), {"n_estimators": 37}, 20)
    return ScoringEngine(
        make_settings(tmp_path), model_from_arrays("t-1", result.arrays, result.description)
    )


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    events = []
    for i in range(n):
        event: dict[str, Any] = {
            "service": f"svc-{i % 5}",
            "level": str(
                rng.choice(["INFO", "ERROR", "DEBUG", "WARNING"], p=[0.8, 0.1, 0.05, 0.05])
            ),
            "message": str(rng.choice(["GET /items 200", "disk full", "", "retry 3 of 5"])),
            "timestamp": (start + timedelta(seconds=0.5 * i)).isoformat(),
        }
        if rng.random() > 0.1:
            event["latency_ms"] = float(rng.lognormal(3.0, 1.0)) * (50 if i % 41 == 0 else 1)
        events.append(event)
    return events


def test_batch_detectors_score_one_event_as_in_a_batch(engine: ScoringEngine) -> None:
    """The forest and autoencoder adapters' one-event paths, against the same events in a batch
    (warming-up services, events without latency and extreme latencies included)."""
    events = parse_events(_events(300, seed=5))
    context = engine.observe(events, EventBatch.from_events(events))
    detectors = [engine.model.isolation_forest, engine.model.autoencoder]
    for detector in detectors:
        assert detector is not None
        whole = detector.rarity(context)
        for i in range(len(events)):
            alone = detector.rarity(_sliced(context, i))
            assert _same_bits(alone.rarity, whole.rarity[i : i + 1])
            assert alone.metrics.keys() == whole.metrics.keys()
            for name, column in whole.metrics.items():
                assert _same_bits(np.asarray(alone.metrics[name]), column[i : i + 1]), name


def test_sliced_context_is_a_scoring_context(engine: ScoringEngine) -> None:
    events = parse_events(_events(3, seed=1))
    context = engine.observe(events, EventBatch.from_events(events))
    assert isinstance(_sliced(context, 1), ScoringContext)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    latency=st.one_of(st.none(), st.floats(0.0, 86_400_000.0)),
    level=st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
    seconds=st.one_of(st.none(), st.floats(0.0, 4e9)),
)
def test_event_batch_of_one_equals_the_first_row_of_a_batch(
    latency: float | None, level: str, seconds: float | None
) -> None:
    event: dict[str, Any] = {"service": "s", "level": level, "message": "m"}
    if latency is not None:
        event["latency_ms"] = latency
    if seconds is not None:
        event["timestamp"] = datetime.fromtimestamp(seconds, UTC).isoformat()
    first, other = parse_events([event, {"service": "t", "level": "INFO", "message": ""}])
    one = EventBatch.from_events([first], received_at=1.8e9)
    two = EventBatch.from_events([first, other], received_at=1.8e9)
    assert one.services == two.services[:1]
    assert one.levels == two.levels[:1]
    for name in ("level_scores", "latency_ms", "timestamps", "is_error", "log_latency"):
        assert _same_bits(getattr(one, name), getattr(two, name)[:1]), name


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    combined=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    services=st.lists(st.sampled_from("abc"), min_size=40, max_size=40),
)
def test_repeats_of_single_events_equal_a_batchs(
    combined: list[float], services: list[str]
) -> None:
    one_by_one, batched = AlarmRepeats(5), AlarmRepeats(5)
    numbers = np.arange(len(combined), dtype=np.int64)
    expected = np.concatenate(
        [
            one_by_one.observe(services[i : i + 1], numbers[i : i + 1], np.array([c]), 0.5)
            for i, c in enumerate(combined)
        ]
    )
    got = batched.observe(services[: len(combined)], numbers, np.array(combined), 0.5)
    assert _same_bits(got, expected)


z_scores = st.one_of(st.floats(width=64), st.sampled_from([0.0, -0.0, 50.0, -50.0, math.nan]))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    rows=st.lists(st.tuples(z_scores, z_scores, st.sampled_from([0.0, 0.25, 0.5, 1.0])), min_size=2)
)
def test_features_of_one_event_equal_a_batchs(rows: list[tuple[float, float, float]]) -> None:
    baseline, forecast, levels = (np.array(column) for column in zip(*rows, strict=True))
    expected_z = expected_latency_z(baseline, forecast)
    matrix = feature_matrix(expected_z, levels)
    for i in range(len(rows)):
        alone_z = expected_latency_z(baseline[i : i + 1], forecast[i : i + 1])
        assert _same_bits(alone_z, expected_z[i : i + 1])
        assert _same_bits(feature_matrix(alone_z, levels[i : i + 1]), matrix[i : i + 1])
