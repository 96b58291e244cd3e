"""The compiled recalibration loop: the same numbers as its plain-Python source, and a batch
learned exactly as its events one call at a time (evictions and changing method sets included)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detectors import calibration
from app.detectors.calibration import OnlineRecalibration, alarm_rarity

Q = 0.001
METHODS = ["m0", "m1", "m2"]

# Rarities from ordinary to beyond every level, NaN (a method that could not judge) included.
rarities = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([1e-300, 1e-80, 1e-12, 1e-6, Q, np.nan]),
)


@st.composite
def _stream(draw: st.DrawFn) -> tuple[list[str], np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 60))
    services = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    # Times a second or a minute apart, so both isolated and clipped alarms happen.
    steps = draw(st.lists(st.sampled_from([0.0, 1.0, 61.0]), min_size=n, max_size=n))
    values = draw(st.lists(rarities, min_size=3 * n, max_size=3 * n))
    return services, np.cumsum(steps), np.array(values).reshape(3, n)


def _one_at_a_time(
    recalibration: OnlineRecalibration,
    services: list[str],
    times: np.ndarray,
    values: np.ndarray,
    names: list[str],
) -> np.ndarray:
    alarms = [alarm_rarity(Q, 0.5, 1.0)] * len(names)
    return np.hstack(
        [
            recalibration.observe_matrix(
                [service], times[i : i + 1], names, values[:, i : i + 1], alarms
            )
            for i, service in enumerate(services)
        ]
    )


@settings(max_examples=150, deadline=None)
@given(_stream(), st.integers(1, 5))
def test_a_batch_is_recalibrated_as_its_events_one_at_a_time(
    stream: tuple[list[str], np.ndarray, np.ndarray], max_services: int
) -> None:
    services, times, values = stream
    alarms = [alarm_rarity(Q, 0.5, 1.0)] * 3
    # A few warm-up rounds so counts pass MIN_EXCEEDANCES and the exponent is used; fewer
    # services than the batch holds evict services between its events.
    batch, single = OnlineRecalibration(max_services), OnlineRecalibration(max_services)
    for _ in range(4):
        got = batch.observe_matrix(services, times, METHODS, values, alarms)
        expected = _one_at_a_time(single, services, times, values, METHODS)
        np.testing.assert_array_equal(got, expected)
    # A method that drops out (failed) and comes back keeps its counts.
    got = batch.observe_matrix(services, times, ["m2", "m0"], values[[2, 0]], alarms[:2])
    expected = _one_at_a_time(single, services, times, values[[2, 0]], ["m2", "m0"])
    np.testing.assert_array_equal(got, expected)
    got = batch.observe_matrix(services, times, METHODS, values, alarms)
    np.testing.assert_array_equal(got, _one_at_a_time(single, services, times, values, METHODS))


def test_the_compiled_loop_computes_what_its_python_source_computes() -> None:
    assert calibration._recalibrate is not calibration._recalibration_loop  # numba is installed
    rng = np.random.default_rng(0)
    n, methods, slots = 3000, 3, 4
    levels_count = calibration.SURPRISE_LEVELS
    stacked = np.minimum(np.maximum(rng.random((methods, n)) ** 4, calibration.MIN_RARITY), 1.0)
    stacked[:, ::97] = 1e-90
    levels = (
        np.searchsorted(calibration._GRID, -np.log10(stacked), side="right").astype(np.int64) - 1
    )
    alarms, alarm_levels = calibration.alarm_arrays((Q, Q**2, 0.0))
    times = np.cumsum(rng.choice([0.5, 90.0], size=n))
    slot_of_event = rng.integers(0, slots, size=n)
    results = []
    for loop in (calibration._recalibrate, calibration._recalibration_loop):
        counts = np.zeros((slots, methods, levels_count + 1))
        counts[..., -1] = 19_990.0  # the halving at MAX_CALIBRATION_EVENTS happens too
        last_alarm = np.full(slots, -np.inf)
        calibrated = stacked.copy()
        loop(
            counts, last_alarm, slot_of_event, levels, stacked, times, alarms, alarm_levels,
            calibration.LOG_CLAIMED, calibrated,
        )  # fmt: skip
        results.append((counts, last_alarm, calibrated))
    for compiled, source in zip(*results, strict=True):
        np.testing.assert_array_equal(compiled, source)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([float(g) for g in calibration.GRID_PAST_FIRST]),
        ),
        min_size=1,
        max_size=24,
    ),
    st.sampled_from([1, 2, 3]),
)
def test_surprise_levels_are_numpys_search(values: list[float], rows: int) -> None:
    surprises = np.array(values * rows, dtype=np.float64).reshape(rows, len(values))
    expected = np.searchsorted(calibration.GRID_PAST_FIRST, surprises, side="right")
    assert np.array_equal(calibration.surprise_levels(surprises), expected)
    source = np.empty(surprises.shape, dtype=np.int64)
    calibration._levels_loop(surprises, calibration.GRID_PAST_FIRST, source)
    assert np.array_equal(source, expected)
