"""The one-event shortcuts (Python floats where a batch uses numpy) give the batch path's bits.

Every /score is a batch of one, so several steps compute it on Python floats rather than through
numpy calls whose fixed cost is most of their price for one value. Each test here scores the same
values both ways and compares them bit for bit (NaN included)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import one_event
from app.combiner import combine_matrix
from app.detectors.base import MethodOutput, OneOutput, ScoringContext
from app.detectors.calibration import (
    MAX_CALIBRATION_EVENTS,
    MIN_RARITY,
    SURPRISE_GRID,
    SURPRISE_LEVELS,
    TAIL_FRACTION,
    OnlineRecalibration,
    TailCalibrator,
    alarm_arrays,
    alarm_rarity,
    interp_one,
    log_false_alarm_rate,
    rarity_to_score,
)
from app.detectors.sequence import SequenceDetector
from app.engine import ScoringEngine
from app.events import EventBatch, parse_events
from app.features import expected_latency_z, feature_matrix
from app.one_event import (
    SURELY_LEVEL_0,
    _surprise_levels,
    combine_one,
    features_of_one,
    recalibrate_one,
    scores_of_one,
)
from app.repeats import AlarmRepeats
from app.schemas.events import LogEvent
from tests.conftest import make_settings
from tests.helpers import bootstrap_data_model, sliced

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
    for i, value in enumerate(values.tolist()):
        alone = calibrator.rarity_one(value)
        assert type(alone) is float
        assert _same_bits(np.array([alone]), whole[i : i + 1]), value
    assert np.nanmin(whole, initial=1.0) >= 0.0
    assert np.all(np.isnan(whole) | (whole <= 1.0))
    body = values[~(values > calibrator.tail_start) & ~np.isnan(values)]
    assert np.all(calibrator.rarity(body) >= TAIL_FRACTION)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> ScoringEngine:
    tmp_path: Path = tmp_path_factory.mktemp("one-event")
    return ScoringEngine(make_settings(tmp_path), bootstrap_data_model("t-1", 37))


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


def test_every_detector_scores_one_event_as_in_a_batch(engine: ScoringEngine) -> None:
    """Every detector's one-event path (``rarity_one``, Python floats) against the same events
    in a batch (warming-up services, events without latency and extreme latencies included)."""
    events = parse_events(_events(300, seed=5))
    context = engine.observe(events, EventBatch.from_events(events))
    for detector in engine._detectors(engine.model):
        whole = detector.rarity(context)
        for i in range(len(events)):
            alone = detector.rarity_one(sliced(context, i))
            assert _same_bits(np.array([alone.rarity]), whole.rarity[i : i + 1]), detector.name
            assert list(alone.metrics) == list(whole.metrics)
            for name, column in whole.metrics.items():
                value = alone.metrics[name]
                assert type(value) is float, name
                assert _same_bits(np.array([value]), column[i : i + 1]), name


def test_sliced_context_is_a_scoring_context(engine: ScoringEngine) -> None:
    events = parse_events(_events(3, seed=1))
    context = engine.observe(events, EventBatch.from_events(events))
    assert isinstance(sliced(context, 1), ScoringContext)


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
        # The engine's one-event path: both steps fused, on the values as Python floats.
        fused = features_of_one(float(baseline[i]), float(forecast[i]), float(levels[i]))
        assert _same_bits(fused, matrix[i : i + 1])
        # Written into the engine's reused row, over whatever it held.
        row = np.full((1, 3), math.nan)
        written = features_of_one(float(baseline[i]), float(forecast[i]), float(levels[i]), row)
        assert written is row
        assert _same_bits(row, matrix[i : i + 1])


# The fused path of one event (ScoringEngine.score_one, app/one_event.py) against the array
# steps of a batch: recalibration, score mapping, combination, explanation and the answer itself.

rarities = st.one_of(
    st.floats(0.0, 1.0),
    st.floats(1e-300, 1e-3),
    st.sampled_from(
        [0.0, 1.0, 1e-300, 5e-324, 2.0, -1.0, math.inf, math.nan, SURELY_LEVEL_0]
        + [10.0**-g for g in (0.5, 1.0, 1.5, 11.5, 18.0, 299.0)]
        + [math.nextafter(10.0**-g, s) for g in (0.5, 1.0, 12.0) for s in (0.0, 1.0)]
        + [math.nextafter(SURELY_LEVEL_0, s) for s in (0.0, 1.0)]
    ),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values=st.lists(rarities, min_size=1, max_size=12))
def test_scores_of_one_equal_rarity_to_score(values: list[float]) -> None:
    for q in (0.001, 0.01):
        expected = rarity_to_score(np.array(values)[:, None], q).ravel()
        got = np.array(scores_of_one(values, float(log_false_alarm_rate(q))))
        assert _same_bits(got, expected)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    rows=st.lists(
        st.tuples(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.3, 0.5, 1.0])), max_size=12
    )
)
def test_combine_one_equals_combine_matrix(rows: list[tuple[float, float]]) -> None:
    scores = [score for score, _ in rows]
    weights = [weight for _, weight in rows]
    expected, _ = combine_matrix(np.array(scores).reshape(-1, 1), np.array(weights)[:, None], 0.5)
    assert _same_bits(np.array([combine_one(scores, weights)]), expected)


def test_surprise_levels_are_those_of_log10_and_searchsorted() -> None:
    grid = 10.0 ** -np.asarray(SURPRISE_GRID)
    values = [*grid, *np.nextafter(grid, 0.0), *np.nextafter(grid, 1.0), 1e-300, math.nan]
    values += [SURELY_LEVEL_0, math.nextafter(SURELY_LEVEL_0, 0.0), 0.3, 0.5, 1.0]
    # Just inside and just outside the margin around each level's rarity, and between levels.
    values += [*(grid * (1 + 2e-9)), *(grid * (1 - 2e-9)), *(grid * (1 + 5e-10)), *(grid * 0.7)]
    stacked = np.minimum(np.maximum(np.array(values), MIN_RARITY), 1.0)
    expected = np.searchsorted(np.asarray(SURPRISE_GRID[1:]), -np.log10(stacked), side="right")
    for value, level in zip(stacked.tolist(), expected.tolist(), strict=True):
        assert _surprise_levels([value]) == [level], value
    assert _surprise_levels(stacked.tolist()) == expected.tolist()


@contextlib.contextmanager
def _recalibration_steps(compiled: bool) -> Iterator[None]:
    """recalibrate_one through its compiled function, as served, or through its Python steps
    (as without numba; with numba, only for a rarity whose level needs numpy's log10)."""
    saved = one_event._compiled_levels_and_learning
    if not compiled:
        one_event._compiled_levels_and_learning = None
    try:
        yield
    finally:
        one_event._compiled_levels_and_learning = saved


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    specials=st.lists(st.tuples(st.integers(0, 299), st.integers(0, 3), rarities), max_size=20),
    near_halving=st.booleans(),
    compiled=st.booleans(),
)
def test_recalibrate_one_equals_observe_matrix(
    seed: int, specials: list[tuple[int, int, float]], near_halving: bool, compiled: bool
) -> None:
    """Event by event, two services, methods added midway, gaps around the isolation time,
    counts near the halving: calibrated rarities, counts and alarm times bit for bit."""
    rng = np.random.default_rng(seed)
    n = 300
    # Rarities of all sizes (many past the levels' MIN_EXCEEDANCES), some events special.
    values = 10.0 ** -rng.exponential(rng.uniform(0.3, 6.0), size=(n, 4))
    for i, m, value in specials:
        values[i, m] = value
    gaps = rng.choice([0.5, 20.0, 59.9, 60.0, 75.0], size=n)
    times = 1.8e9 + np.cumsum(gaps)
    services = rng.choice(["a", "b"], size=n).tolist()
    q, threshold = 0.001, 0.5
    weights = {"m0": 1.0, "m1": 0.5, "m2": 1.0, "m3": 0.8}
    by_array, by_floats = OnlineRecalibration(), OnlineRecalibration()
    if near_halving:
        first = ("m0", "m1", "m2")
        for service in ("a", "b"):
            # The same counts for both: totals just below the halving, levels decreasing.
            counts = np.zeros((len(first), SURPRISE_LEVELS + 1))
            counts[:, -1] = MAX_CALIBRATION_EVENTS - rng.integers(0, 30, size=len(first))
            levels = rng.integers(0, 5000, size=(len(first), SURPRISE_LEVELS))
            counts[:, :-1] = np.sort(levels)[:, ::-1]
            for recalibration in (by_array, by_floats):
                recalibration.state_for(service).learn(first, counts.copy())
    for i in range(n):
        names = ("m0", "m1", "m2") if i < n // 2 else ("m0", "m3", "m1", "m2")
        row = values[i, : len(names)].tolist()
        alarms = [alarm_rarity(q, threshold, weights[name]) for name in names]
        expected = by_array.observe_matrix(
            [services[i]], times[i : i + 1], list(names), np.array(row)[:, None], alarms
        )
        with _recalibration_steps(compiled):
            got = recalibrate_one(
                by_floats, services[i], float(times[i]), names, row, alarm_arrays(tuple(alarms))
            )
        assert _same_bits(np.array(got), expected.ravel()), i
    for service in ("a", "b"):
        array_state, float_state = by_array.state_for(service), by_floats.state_for(service)
        assert array_state.methods == float_state.methods
        assert _same_bits(array_state.counts, float_state.counts)
        assert array_state.last_alarm == float_state.last_alarm


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    alarms=st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([SURELY_LEVEL_0, 0.9, 1.0])),
        min_size=3,
        max_size=3,
    ),
    near_halving=st.booleans(),
    compiled=st.booleans(),
)
def test_recalibrate_one_level_0_events_equal_observe_matrix(
    seed: int, alarms: list[float], near_halving: bool, compiled: bool
) -> None:
    """Events whose rarities are mostly all at level 0 (recalibrate_one's shortcut: no search
    of levels, its input handed back), some above 1, with alarm rarities high enough to flag
    them: calibrated rarities, counts (halving included) and alarm times bit for bit."""
    rng = np.random.default_rng(seed)
    n = 200
    values = rng.uniform(SURELY_LEVEL_0, 1.0, size=(n, 3))
    values[rng.random((n, 3)) < 0.05] = 1.5  # above 1: clipped, a new list
    values[rng.random((n, 3)) < 0.03] = 1e-4  # now and then an event past level 0
    values[rng.random((n, 3)) < 0.03] = SURELY_LEVEL_0  # not above it: the full path
    times = 1.8e9 + np.cumsum(rng.choice([0.5, 59.9, 60.0, 75.0], size=n))
    names = ("m0", "m1", "m2")
    by_array, by_floats = OnlineRecalibration(), OnlineRecalibration()
    if near_halving:
        counts = np.zeros((3, SURPRISE_LEVELS + 1))
        counts[:, 0] = counts[:, -1] = MAX_CALIBRATION_EVENTS - rng.integers(0, 30, size=3)
        counts[:, 1:-1] = np.sort(rng.integers(0, 5000, size=(3, SURPRISE_LEVELS - 1)))[:, ::-1]
        for recalibration in (by_array, by_floats):
            recalibration.state_for("a").learn(names, counts.copy())
    for i in range(n):
        row = values[i].tolist()
        expected = by_array.observe_matrix(
            ["a"], times[i : i + 1], list(names), np.array(row)[:, None], alarms
        )
        with _recalibration_steps(compiled):
            got = recalibrate_one(
                by_floats, "a", float(times[i]), names, row, alarm_arrays(tuple(alarms))
            )
        assert _same_bits(np.array(got), expected.ravel()), i
        if min(row) > SURELY_LEVEL_0 and max(row) <= 1.0:
            assert got is row  # nothing changed: the engine writes nothing back
    array_state, float_state = by_array.state_for("a"), by_floats.state_for("a")
    assert _same_bits(array_state.counts, float_state.counts)
    assert array_state.last_alarm == float_state.last_alarm


@pytest.mark.parametrize("compiled", [True, False])
def test_recalibrate_one_reads_int_rarities_as_floats(compiled: bool) -> None:
    """A detector whose rarities are all Python ints (1, 0) gets what their floats get: the
    compiled route's entry point does not check types, so the list must become float64."""
    names = ("m0", "m1")
    alarms = alarm_arrays((0.01, 0.01))
    as_ints, as_floats = OnlineRecalibration(), OnlineRecalibration()
    for i, (first, second) in enumerate([(1, 1), (1, 0), (0, 1), (1, 1)]):
        with _recalibration_steps(compiled):
            got = recalibrate_one(as_ints, "a", 1.8e9 + i, names, [first, second], alarms)
            expected = recalibrate_one(
                as_floats, "a", 1.8e9 + i, names, [float(first), float(second)], alarms
            )
        assert _same_bits(np.array(got, dtype=np.float64), np.array(expected)), i
    assert _same_bits(as_ints.state_for("a").counts, as_floats.state_for("a").counts)
    assert as_ints.state_for("a").last_alarm == as_floats.state_for("a").last_alarm


def _varied_events(n: int, seed: int) -> list[LogEvent]:
    """Warming-up and evicted services, error bursts, latency spikes and drops, no latency,
    late events, novel messages: every kind of finding an explanation can have."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    messages = ["GET /items 200", "user 17 logged in", "disk full on /dev/sda1", "retry 3 of 5"]
    events = []
    burst_until = -1
    for i in range(n):
        service = int(rng.integers(0, 8)) if rng.random() < 0.95 else int(rng.integers(8, 40))
        if rng.random() < 0.01:
            burst_until = i + int(rng.integers(5, 40))
        in_burst = i < burst_until and service < 3
        level = (
            "ERROR"
            if in_burst and rng.random() < 0.7
            else str(rng.choice(["INFO", "ERROR", "DEBUG", "WARNING"], p=[0.85, 0.05, 0.05, 0.05]))
        )
        message = str(rng.choice(messages))
        if rng.random() < 0.03:
            message = f"novel failure {int(rng.integers(10**6))} in module m{i % 7}"
        seconds = 0.5 * i - (float(rng.uniform(0, 900)) if rng.random() < 0.01 else 0.0)
        event: dict[str, Any] = {
            "service": f"svc-{service}",
            "level": level,
            "message": message,
            "timestamp": (start + timedelta(seconds=seconds)).isoformat(),
        }
        if rng.random() > 0.07:
            factor = float(rng.choice([1.0, 40.0, 0.02])) if rng.random() < 0.04 else 1.0
            median = 5.0 * 1.7 ** (service % 8)
            event["latency_ms"] = median * float(rng.lognormal(0.0, 0.4)) * factor
        if rng.random() < 0.005:
            event["latency_ms"] = 0.0
        events.append(event)
    return parse_events(events)


def _rendered_answer(engine: ScoringEngine, event: LogEvent, received_at: float) -> bytes:
    """The answer of a batch of one through the array path that batches take (``_render``)."""
    batch = EventBatch.from_events([event], received_at)
    context = engine.observe((), batch, [event.message])
    outputs, failures = engine._run_detectors(engine.model, context)
    (answer,) = engine._render(
        engine.model,
        context.batch,
        context.baseline,
        context.window,
        outputs,
        failures,
        context.templates,
    )
    return answer


@pytest.mark.parametrize("max_services", [100_000, 5])
def test_one_event_answer_is_the_rendered_one(
    tmp_path: Path, max_services: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ScoringEngine.score_one's dict is what reading back ``_render``'s JSON gives, and its
    JSON those bytes, event after event (a method failing now and then included)."""
    model = bootstrap_data_model("t-1", 37)
    settings_ = make_settings(tmp_path, max_services=max_services)
    fused, rendered = ScoringEngine(settings_, model), ScoringEngine(settings_, model)
    original, original_one = SequenceDetector.rarity, SequenceDetector.rarity_one
    failing = {"now": False}

    def sometimes_failing(self: SequenceDetector, context: ScoringContext) -> MethodOutput:
        if failing["now"]:
            raise ValueError("sequence store unavailable")
        return original(self, context)

    def sometimes_failing_one(self: SequenceDetector, context: ScoringContext) -> OneOutput:
        if failing["now"]:
            raise ValueError("sequence store unavailable")
        return original_one(self, context)

    monkeypatch.setattr(SequenceDetector, "rarity", sometimes_failing)
    monkeypatch.setattr(SequenceDetector, "rarity_one", sometimes_failing_one)
    anomalies = findings = 0
    for i, event in enumerate(_varied_events(2500, seed=max_services)):
        failing["now"] = i % 97 == 5
        expected = _rendered_answer(rendered, event, 1.8e9)
        answer = fused.score_one(event, 1.8e9)
        assert orjson.dumps(answer) == expected, i
        assert answer == orjson.loads(expected)
        anomalies += answer["is_anomaly"]
        findings += ";" in answer["explanation"]
    # The stream reaches the paths it is meant to.
    assert anomalies > 10
    assert findings > 100


def test_score_json_of_one_event_is_the_batch_paths(engine: ScoringEngine) -> None:
    """score_json and score of single events (the fused path) against the same events scored
    in batches of 2 to 300 by a second engine of the same model."""
    events = _varied_events(1200, seed=3)
    batched = ScoringEngine(engine.settings, engine.model)
    single = ScoringEngine(engine.settings, engine.model)
    expected: list[bytes] = []
    sizes = np.random.default_rng(3).integers(2, 300, size=len(events)).tolist()
    start = 0
    while start < len(events):
        expected += batched.score_json(events[start : start + sizes[start]], 1.8e9)
        start += sizes[start]
    for i, event in enumerate(events):
        if i % 2:
            assert single.score_json([event], 1.8e9) == [expected[i]], i
        else:
            assert single.score([event], 1.8e9) == [orjson.loads(expected[i])], i


def test_one_events_answer_leaves_the_detectors_outputs_as_they_were(
    engine: ScoringEngine,
) -> None:
    """An event without latency has NaN metrics (written as null): the answer nulls a copy, so
    the detectors' outputs still say NaN and assembling the answer again gives the same one."""
    scorer = ScoringEngine(engine.settings, engine.model)
    (event,) = parse_events(
        [
            {
                "service": "no-latency",
                "level": "INFO",
                "message": "tick",
                "timestamp": "2026-11-24T10:15:00Z",
            }
        ]
    )
    batch = EventBatch.from_events((event,))
    context = scorer.observe((), batch, (event.message,))
    outputs, failures = scorer._run_detectors_one(scorer.model, context)
    said = {name: dict(output.metrics) for name, output in outputs.items()}
    assert any(value != value for metrics in said.values() for value in metrics.values())
    first = scorer._answer_of_one(scorer.model, context, outputs, failures)
    again = scorer._answer_of_one(scorer.model, context, outputs, failures)
    assert orjson.dumps(first) == orjson.dumps(again)
    for name, output in outputs.items():
        # The same keys and values, NaN still NaN (not None).
        assert list(output.metrics) == list(said[name])
        for value, before in zip(output.metrics.values(), said[name].values(), strict=True):
            assert value == before or (value != value and before != before), name
