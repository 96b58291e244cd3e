"""The feature matrix batch detectors see: every column relative to the event's own service."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from app.compiled import compile_kernel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FEATURE_NAMES = ("latency_z", "level_score", "latency_missing")


def feature_matrix(latency_z: FloatArray, level_scores: FloatArray) -> FloatArray:
    """Columns of ``FEATURE_NAMES``.

    ``latency_z`` is the robust z-score of log latency against the service's baseline, NaN where
    the event has no latency or the service's baseline is still warming up; such events count as
    typical in latency (0) and say so in ``latency_missing``, so the forest never sees a NaN.
    """
    if latency_z.shape[0] == 1:
        # The batch of one of /score: one numpy call rather than five.
        (z,), (level,) = latency_z.tolist(), level_scores.tolist()
        return np.array([[0.0 if z != z else z, level, 1.0 if z != z else 0.0]])
    missing = np.isnan(latency_z)
    # Filled column by column: a third of np.column_stack's cost for the batch of one of /score.
    matrix = np.empty((latency_z.shape[0], len(FEATURE_NAMES)))
    matrix[:, 0] = np.where(missing, 0.0, latency_z)
    matrix[:, 1] = level_scores
    matrix[:, 2] = missing
    return matrix


def expected_latency_z(baseline_z: FloatArray, forecast_z: FloatArray) -> FloatArray:
    """Latency z-scores against what was expected *for this moment*: the seasonal forecast's
    residual where the forecast is ready, else the baseline's z-score.

    Training computes ``latency_z`` from each service's median and spread, which for a stationary
    service is the same quantity; live, the forecast also knows the time of day and follows a
    lasting shift, so a daily cycle or a deploy does not read as a stream of extreme latencies.
    """
    if baseline_z.shape[0] == 1:
        # The batch of one of /score, on Python floats: min and max give fmin and fmax's
        # results for the non-NaN values they see here.
        (baseline,), (forecast,) = baseline_z.tolist(), forecast_z.tolist()
        return np.array([baseline if forecast != forecast else max(min(forecast, 50.0), -50.0)])
    # fmin/fmax: np.clip's result at a fraction of its call cost (NaN positions are not used).
    result: FloatArray = np.where(
        np.isnan(forecast_z), baseline_z, np.fmax(np.fmin(forecast_z, 50.0), -50.0)
    )
    return result


# Above this share of distinct rows, scoring only the distinct ones saves too little to pay for
# finding them: the search gives up there (see ``distinct_rows``).
MAX_DISTINCT_SHARE = 0.5
# The hash table starts this small and doubles: for the typical tens of thousands of distinct
# training rows it stays in the CPU's cache, where a table sized for every row would not.
_FIRST_CAPACITY = 1024
# Odd 64-bit multipliers for the row hash (splitmix64's finaliser and the golden ratio's).
_MIX = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


def _distinct_rows_loop(
    bits: npt.NDArray[np.uint64],
    hashes: IntArray,
    max_distinct: int,
    codes: IntArray,
    firsts: IntArray,
) -> int:
    """Number the distinct rows of ``bits`` by first appearance (the compiled kernel's source):
    ``codes[i]`` is row i's number, ``firsts[d]`` the first row numbered d. Returns how many
    there are, or -1 as soon as there are more than ``max_distinct``.

    Open addressing with linear probing on ``hashes`` (one per row), at most half full; rows
    are equal when every 64-bit word is, so only identical bit patterns share a number.
    """
    n_rows, width = bits.shape
    capacity = _FIRST_CAPACITY
    mask = capacity - 1
    table = np.full(capacity, -1, dtype=np.int64)
    distinct = 0
    for i in range(n_rows):
        code = hashes[i]
        slot = code & mask
        while True:
            held = table[slot]
            if held < 0:
                if distinct == max_distinct:
                    return -1
                table[slot] = distinct
                firsts[distinct] = i
                codes[i] = distinct
                distinct += 1
                if 2 * distinct > capacity:
                    capacity *= 2
                    mask = capacity - 1
                    table = np.full(capacity, -1, dtype=np.int64)
                    for d in range(distinct):
                        moved = hashes[firsts[d]] & mask
                        while table[moved] >= 0:
                            moved = (moved + 1) & mask
                        table[moved] = d
                break
            first = firsts[held]
            if hashes[first] == code:
                same = True
                for k in range(width):
                    if bits[first, k] != bits[i, k]:
                        same = False
                        break
                if same:
                    codes[i] = held
                    break
            slot = (slot + 1) & mask
    return distinct


_COMPILED_DISTINCT_ROWS = compile_kernel(
    _distinct_rows_loop,
    "int64(uint64[:, ::1], int64[::1], int64, int64[::1], int64[::1])",
)


def row_hashes(bits: npt.NDArray[np.uint64]) -> IntArray:
    """A 64-bit hash of each row of ``bits``, mixed so that its low bits (the table's slot)
    depend on every bit of the row: a float's low mantissa bits are often all zero."""
    mixed = np.full(bits.shape[0], _MIX[0], dtype=np.uint64)
    for k in range(bits.shape[1]):
        mixed = (mixed ^ bits[:, k]) * _MIX[1]
        mixed ^= mixed >> np.uint64(31)
    mixed *= _MIX[2]
    mixed ^= mixed >> np.uint64(29)
    return mixed.view(np.int64)


def distinct_rows(
    x: FloatArray,
    max_share: float = MAX_DISTINCT_SHARE,
    kernel: Callable[..., int] | None = None,
) -> tuple[FloatArray, IntArray] | None:
    """The distinct rows of ``x``, by their bits, and each row's index among them
    (``x == distinct[inverse]`` bit for bit); None when more than ``max_share`` of the rows are
    distinct, or without numba.

    A per-row function of the distinct rows, expanded with ``np.take(values, inverse)``, gives
    bit for bit its values on every row, at the cost of the distinct ones: training data repeats
    itself (latencies at millisecond resolution, a few levels), so a million rows may hold only
    tens of thousands. Rows are compared by their bits, not as floats: -0.0 and 0.0, or two NaNs,
    are the same row only when their bits are, so no row is ever replaced by a different one.
    ``kernel``: the loop to run (the compiled one by default; tests pass the Python source).
    """
    loop = kernel or _COMPILED_DISTINCT_ROWS
    if loop is None or x.ndim != 2:
        return None
    rows = np.ascontiguousarray(x, dtype=np.float64)
    bits = rows.view(np.uint64)
    codes = np.empty(rows.shape[0], dtype=np.int64)
    firsts = np.empty(rows.shape[0], dtype=np.int64)
    found = loop(bits, row_hashes(bits), int(max_share * rows.shape[0]), codes, firsts)
    if found < 0:
        return None
    return rows[firsts[:found]], codes


def per_distinct_row(function: Callable[[FloatArray], FloatArray], x: FloatArray) -> FloatArray:
    """``function(x)`` for a ``function`` computed row by row (each row's value depends on that
    row alone), evaluated once per distinct row of ``x`` where rows repeat enough to pay."""
    distinct = distinct_rows(x)
    if distinct is None:
        return function(x)
    rows, inverse = distinct
    values: FloatArray = np.take(function(rows), inverse)
    return values
