"""The batch path's compiled kernels of branch `cdet` against the Python/numpy code they replace:
the sliding window's burst scan over a batch's error rows, its stdtr only where a jump can set
the rarity, and the autoencoder's fused reconstruction + calibration. Bit for bit (NaN for NaN):
answers must not move."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import stdtr

from app.detectors import autoencoder as ae
from app.detectors import sliding_window as sw
from app.detectors.base import ScoringContext
from app.detectors.calibration import TAIL_FRACTION, TailCalibrator
from app.windows import RECENT_EVENTS

FloatArray = npt.NDArray[np.float64]

_MASK = (1 << RECENT_EVENTS) - 1


def _same(a: FloatArray, b: FloatArray) -> bool:
    """Equal bit for bit (a NaN equals a NaN; 0.0 and -0.0 differ)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and a.view(np.int64).tolist() == b.view(np.int64).tolist()


_rates = st.floats(1e-6, 0.999)
_weights = st.floats(1.0, 1e9)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, _MASK).map(lambda b: b | 1), _rates, _weights),
        min_size=1,
        max_size=20,
    )
)
def test_burst_kernel_is_the_scan(events: list[tuple[int, float, float]]) -> None:
    bits = np.array([b for b, _, _ in events], dtype=np.int64)
    rates = np.array([r for _, r, _ in events])
    weights = np.array([w for _, _, w in events])
    rows = np.arange(len(events), dtype=np.int64)
    expected = [sw.error_burst_rarity(b, r, w) for b, r, w in events]
    for kernel in (sw._burst_rarities, sw._burst_rarities_kernel):
        out = np.ones(len(events))
        kernel(rows, bits, rates, weights, out)
        assert _same(out, np.array(expected))


def _old_window_rarity(detector: sw.SlidingWindowDetector, context: Any) -> Any:
    """``_rarity_of_batch`` before the compiled scan and the judged-rows stdtr (main at e746dfd)."""
    window = context.window
    expected = window.expected_error_rate
    is_error = context.batch.is_error
    total = window.total.astype(np.float64)
    bursts = np.ones(len(is_error))
    for row in np.flatnonzero(is_error).tolist():
        bursts[row] = sw.error_burst_rarity(
            int(window.recent_error_bits[row]),
            float(expected[row]),
            float(window.error_rate_weight[row]),
        )
    z = window.latency_zscore
    n = total - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = z * np.sqrt((n - 1.0) / (n + 1.0))
        latency_jump = np.where(np.isnan(z), 1.0, stdtr(n - 1.0, -t))
    shift = context.baseline.latency_shift
    own_z = context.baseline.latency_z
    part_of_shift = ~np.isnan(shift) & (own_z >= sw.SHIFT_MIN_OWN_Z)
    latency_shift = np.ones(len(shift))
    if part_of_shift.any():
        rows = np.flatnonzero(part_of_shift)
        degrees = np.maximum(context.baseline.events_seen[rows] - 1.0, 1.0)
        latency_shift[rows] = stdtr(degrees, -shift[rows])
    smallest = np.minimum(
        bursts / sw.BURST_SHARE,
        np.minimum(latency_jump / sw.LATENCY_JUMP_SHARE, latency_shift / sw.LATENCY_SHIFT_SHARE),
    )
    return np.minimum(1.0, smallest), bursts


# Mostly near the jump's judged boundary (t ~ 0.5-0.7), where skipping stdtr would show.
_maybe_nan = st.one_of(st.floats(-2.0, 2.0), st.floats(-40.0, 40.0), st.just(float("nan")))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, _MASK).map(lambda b: b | 1),
            _rates,
            _weights,
            _maybe_nan,  # latency z
            st.integers(0, 500),  # window total (small ones: few or no degrees of freedom)
            _maybe_nan,  # latency shift
            _maybe_nan,  # own baseline z
            st.floats(0.0, 1e6),  # events seen
        ),
        min_size=1,
        max_size=40,
    )
)
def test_window_rarity_is_the_old_batch_rarity(rows: list[tuple[Any, ...]]) -> None:
    columns = list(zip(*rows, strict=True))
    is_error = np.array(columns[0], dtype=np.bool_)
    bits = np.array(columns[1], dtype=np.int64) & np.where(is_error, _MASK, _MASK - 1)
    window = SimpleNamespace(
        expected_error_rate=np.array(columns[2]),
        error_rate_weight=np.array(columns[3]),
        recent_error_bits=bits,
        latency_zscore=np.array(columns[4]),
        total=np.array(columns[5], dtype=np.int64),
        errors=np.zeros(len(rows), dtype=np.int64),
        recent_errors=np.zeros(len(rows), dtype=np.int64),
    )
    baseline = SimpleNamespace(
        latency_shift=np.array(columns[6]),
        latency_z=np.array(columns[7]),
        events_seen=np.array(columns[8]),
    )
    context = cast(
        ScoringContext,
        SimpleNamespace(window=window, baseline=baseline, batch=SimpleNamespace(is_error=is_error)),
    )
    detector = sw.SlidingWindowDetector()
    with np.errstate(invalid="ignore", divide="ignore"):
        output = detector.rarity(context)
    rarity, bursts = _old_window_rarity(detector, context)
    assert _same(output.rarity, rarity)
    assert _same(output.metrics["error_burst_rarity"], bursts)


def _network(draw: Any) -> dict[str, npt.NDArray[Any]]:
    """A network of random weights, 3 -> h -> b -> h -> 3 (3 -> 8 -> 2 -> 8 -> 3 in service)."""
    hidden, bottleneck = draw(st.integers(1, 8)), draw(st.integers(1, 3))
    widths = [3, hidden, bottleneck, hidden, 3]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays: dict[str, npt.NDArray[Any]] = {
        "mean": rng.normal(size=3),
        "std": rng.uniform(0.01, 3.0, size=3),
    }
    for i in range(len(widths) - 1):
        arrays[f"w{i}"] = rng.normal(0.0, draw(st.floats(0.1, 4.0)), (widths[i], widths[i + 1]))
        arrays[f"b{i}"] = rng.normal(size=widths[i + 1])
    return arrays


def _calibrator(draw: Any, errors: FloatArray) -> TailCalibrator:
    """Random sorted quantiles, some of them the batch's own errors (an error on a grid point,
    np.interp's exact case) and some repeated (a calibration on many equal errors has ties)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = int(draw(st.integers(2, 300)))
    values = rng.exponential(draw(st.floats(0.01, 10.0)), grid)
    if draw(st.booleans()):
        values = np.round(values, 1)
    if draw(st.booleans()):
        values[: min(grid // 2, errors.size)] = errors[: grid // 2]
    if draw(st.booleans()):
        values[: grid // 3] = values[grid // 3]
    quantiles = np.sort(values)
    levels = np.linspace(0.0, 1.0, grid)
    tail_start = float(quantiles[max(int(grid * (1 - TAIL_FRACTION)) - 1, 0)])
    return TailCalibrator(quantiles, levels, tail_start, draw(st.floats(1e-6, 10.0)))


@st.composite
def _cases(draw: Any) -> tuple[ae.AutoencoderDetector, FloatArray, FloatArray]:
    network = _network(draw)
    n = draw(st.integers(1, 60))
    features = draw(
        hnp.arrays(
            np.float64,
            (n, 3),
            elements=st.one_of(st.floats(-50.0, 50.0), st.sampled_from([0.0, 1.0, -0.0, 0.5, 2.0])),
        )
    )
    latency = draw(
        hnp.arrays(np.float64, n, elements=st.one_of(st.floats(0.0, 1e4), st.just(np.nan)))
    )
    placeholder = TailCalibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 1.0, 1.0)
    errors = ae.AutoencoderDetector.from_arrays(
        {}, network | placeholder.to_arrays("calibrator_")
    ).reconstruction_error(features)
    calibrator = _calibrator(draw, errors)
    detector = ae.AutoencoderDetector.from_arrays({}, network | calibrator.to_arrays("calibrator_"))
    return detector, features, latency


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_fused_autoencoder_rarity_is_the_numpy_passes(
    case: tuple[ae.AutoencoderDetector, FloatArray, FloatArray],
) -> None:
    detector, features, latency = case
    calibrator = detector.calibrator_
    assert calibrator is not None
    context = cast(
        ScoringContext,
        SimpleNamespace(features=features, batch=SimpleNamespace(latency_ms=latency)),
    )
    output = detector.rarity(context)
    # The path before the fused kernel: the reconstruction kernel, the calibrator's numpy.
    error = detector.reconstruction_error(features)
    warming_up = (features[:, ae._MISSING_COLUMN] == 1.0) & (latency == latency)
    with np.errstate(over="ignore"):
        expected = np.where(warming_up, 1.0, calibrator.rarity(error))
    assert _same(output.rarity, expected)
    assert _same(output.metrics["reconstruction_error"], np.where(warming_up, np.nan, error))
    # The kernel's Python source (the reference numba compiles) gives the same.
    if ae._COMPILED_RARITY is not None:
        assert detector.mean_ is not None
        assert detector.std_ is not None
        n = features.shape[0]
        rarity, errors = np.empty(n), np.empty(n)
        weights, biases, widths = detector._flat
        ae._rarity_loop(
            np.ascontiguousarray(features), latency, detector.mean_, detector.std_, weights,
            biases, widths, calibrator.quantiles, calibrator.levels,
            ae.interp_slopes(calibrator.quantiles, calibrator.levels), calibrator.tail_start,
            ae._MISSING_COLUMN, rarity, errors,
        )  # fmt: skip
        body = ~np.isnan(rarity)
        assert _same(rarity[body], output.rarity[body])
        assert _same(errors, output.metrics["reconstruction_error"])
