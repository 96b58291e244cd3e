"""The batch of one (every POST /score, every ``AnomalyDetector.predict``) on Python floats.

For one event each numpy call's fixed cost is most of its price, so the steps after the detectors
(online recalibration, score mapping, combination) are redone here on Python floats with the same
IEEE operations in the same order as their array versions, keeping numpy only for the functions
whose last bit Python's math module may not share (``np.log``, ``np.log10``: numpy's SIMD loops
are not libm). The online recalibration, the most Python steps of them, is the exception: one
call into compiled code (the batch's own kernel) costs less than its steps on Python floats, which
remain for when numba is missing. tests/test_one_event_paths.py compares every function here with
its array version bit for bit.
"""

from __future__ import annotations

import math
import operator
import struct
from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np
import numpy.typing as npt

from app.compiled import compile_kernel, unchecked
from app.detectors.calibration import (
    BEND_AT,
    BEND_HEADROOM,
    GRID_PAST_FIRST,
    ISOLATED_ALARM_SECONDS,
    LOG_CLAIMED,
    MAX_CALIBRATION_EVENTS,
    MIN_EXCEEDANCES,
    MIN_RARITY,
    SURPRISE_LEVELS,
    OnlineRecalibration,
    _recalibrate,
    _recalibration_loop,
    _ServiceCalibration,
)

_GRID = GRID_PAST_FIRST.tolist()
_LOG_CLAIMED_LIST = LOG_CLAIMED.tolist()
# The column of events learned in a method's row of counts, after the levels' exceedances.
_TOTAL = SURPRISE_LEVELS
_WIDTH = _TOTAL + 1  # a method's row of counts
# A rarity above this has a surprise (-log10) below 0.49, whatever the last bit of log10.
SURELY_LEVEL_0 = 10.0**-0.49
# The rarity 10**-g of each level g past the first, ascending, and how near one a rarity must be
# for its level to need log10 itself: 1e-9 of it moves the surprise by ~4e-10, some thousand
# times what log10's last bits can.
_LEVEL_RARITIES = sorted(10.0**-g for g in _GRID)
_NEAR = [1e-9 * rarity for rarity in _LEVEL_RARITIES]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_pack_row = struct.Struct("3d").pack_into  # a 1 x 3 float64 feature row, in place
# The score of a rarity of 1 (or NaN, or above 1), whatever the rate: see scores_of_one.
_UNKNOWN_SCORE = 0.0
if np.log(np.ones(1)).item() != 0.0:  # pragma: no cover - log(1) is exact in any libm
    raise ImportError("scores_of_one assumes numpy's log of 1 is 0")

if _GRID[0] <= 0.49:  # pragma: no cover - the grid's first level past 0 is 0.5
    raise ImportError("SURELY_LEVEL_0 assumes no surprise level below 0.49 but 0")


def recalibrate_one(
    recalibration: OnlineRecalibration,
    service: str,
    time: float,
    names: tuple[str, ...],
    rarities: list[float],
    alarms: tuple[FloatArray, IntArray],
) -> list[float]:
    """``recalibration.observe_matrix`` for one event of ``service`` at ``time``: the methods'
    calibrated rarities, then the event learned. ``alarms`` are the methods' alarm rarities and
    their surprise levels, as ``alarm_arrays`` gives them. The list returned is ``rarities``
    itself when no rarity changes (the usual event: each at level 0, none above 1), else a new
    one.

    The batch's compiled kernel (``_recalibration_loop``) itself learns the event, called on the
    event's arrays by a compiled function that first finds its levels (``_levels_and_learning``:
    one call into compiled code, where the same steps in Python cost a few times more); without
    numba, or for a rarity whose level only numpy's log10 can tell, the same steps on Python
    floats."""
    state = recalibration.state_for(service)
    counts = state.counts_of(names)
    alarm_array, level_array = alarms
    if _compiled_levels_and_learning is not None:
        calibrated = np.empty(len(rarities))
        # float64 whatever the detectors' numbers are (an all-int list would make int64, which
        # the unchecked entry point would read as doubles).
        last_alarm = _compiled_levels_and_learning(
            counts,
            np.array(rarities, dtype=np.float64),
            alarm_array,
            level_array,
            time,
            state.last_alarm,
            calibrated,
        )
        if last_alarm == last_alarm:  # else nothing was learned: the Python steps below
            state.last_alarm = last_alarm
            if counts is not state.counts:  # a copy (the methods changed): learned back
                state.learn(names, counts)
            values: list[float] = calibrated.tolist()
            # (Equal as floats is equal in bits here: a clipped rarity is never -0.0 or NaN.)
            return rarities if values == rarities else values
    # Element by element through a flat memoryview (row m's level j at m * _WIDTH + j): a few
    # dozen reads and writes of Python floats, where numpy's indexing would make a scalar or a
    # view for each, and a 2-D memoryview a tuple.
    cells: Any = counts.data.cast("B").cast("d")  # typeshed calls its items ints: here floats
    alarm_list: list[float] = alarm_array.tolist()
    # Most events of most services: every rarity above SURELY_LEVEL_0 (so none is NaN), all at
    # level 0. Nothing is calibrated (the kernel's exponent is reached only past level 0), a
    # clipped alarm level cannot be below 0, so the event adds 1 to each method's level 0 and
    # total: the kernel's steps for such an event, without the levels' search.
    if all(map(SURELY_LEVEL_0.__lt__, rarities)):
        calibrated_list = rarities if max(rarities) <= 1.0 else [min(r, 1.0) for r in rarities]
        if any(map(operator.le, calibrated_list, alarm_list)):
            state.last_alarm = max(state.last_alarm, time)
        for row in range(0, len(calibrated_list) * _WIDTH, _WIDTH):
            cells[row] += 1.0
            total = cells[row + _TOTAL] + 1.0
            cells[row + _TOTAL] = total
            if total > MAX_CALIBRATION_EVENTS:
                counts[row // _WIDTH] *= 0.5
    else:
        calibrated_list = _recalibrated(
            state, cells, counts, time, rarities, alarm_list, level_array.tolist()
        )
    cells.release()
    if counts is not state.counts:  # a copy (the methods changed): learned back into place
        state.learn(names, counts)
    return calibrated_list


def _levels_and_learning(
    counts: FloatArray,
    rarities: FloatArray,
    alarms: FloatArray,
    alarm_levels: IntArray,
    time: float,
    last_alarm: float,
    calibrated: FloatArray,
) -> float:
    """The compiled part of ``recalibrate_one``: the clipped rarities' levels (by the search of
    ``_surprise_levels``), then ``_recalibration_loop`` on the one event, its service's ``counts``
    (a row per method) and alarm time: calibrated rarities into ``calibrated``, the new alarm
    time returned. NaN, with nothing changed, when a rarity is NaN or its level needs numpy's
    log10."""
    n = rarities.shape[0]
    stacked = np.empty((n, 1))
    levels = np.empty((n, 1), dtype=np.int64)
    size = _LEVEL_RARITY_ARRAY.shape[0]
    for m in range(n):
        rarity = rarities[m]
        value = MIN_RARITY if rarity < MIN_RARITY else 1.0 if rarity > 1.0 else rarity
        stacked[m, 0] = calibrated[m] = value  # the kernel writes only what it calibrates
        if value > SURELY_LEVEL_0:
            levels[m, 0] = 0
            continue
        if value != value:
            return math.nan
        k = np.searchsorted(_LEVEL_RARITY_ARRAY, value)
        if (k < size and _LEVEL_RARITY_ARRAY[k] - value <= _NEAR_ARRAY[k]) or (
            k > 0 and value - _LEVEL_RARITY_ARRAY[k - 1] <= _NEAR_ARRAY[k - 1]
        ):
            return math.nan
        levels[m, 0] = size - k
    last = np.full(1, last_alarm)
    # (The kernel's signature takes writable arrays; numba freezes globals read-only.)
    _recalibrate(
        counts.reshape(1, n, _WIDTH),
        last,
        np.zeros(1, dtype=np.int64),
        levels,
        stacked,
        np.full(1, time),
        alarms,
        alarm_levels,
        LOG_CLAIMED.copy(),
        calibrated.reshape(n, 1),
    )
    return float(last[0])


def _recalibrated(
    state: _ServiceCalibration,
    cells: Any,
    counts: FloatArray,
    time: float,
    rarities: list[float],
    alarms: list[float],
    alarm_levels: list[int],
) -> list[float]:
    """``recalibrate_one`` of an event some of whose methods are past level 0 (or NaN): the
    kernel's every step, on the state's ``counts`` (read and written through ``cells``).

    A method's row is read and written only for that method, and the event's flag changes only
    what a method past level 0 learns: a method at level 0 is learned as soon as it is seen, in
    the one pass that finds the levels and calibrates the others, and only those are learned
    after the flag."""
    calibrated = []
    past: list[tuple[int, int]] = []  # (method, level) of each method past level 0
    for m, rarity in enumerate(rarities):
        # np.minimum(np.maximum(r, MIN_RARITY), 1.0), NaN kept.
        value = MIN_RARITY if rarity < MIN_RARITY else 1.0 if rarity > 1.0 else rarity
        calibrated.append(value)
        row = m * _WIDTH
        level = 0 if value > SURELY_LEVEL_0 else _surprise_level(value)
        if not level:
            cells[row] += 1.0
            total = cells[row + _TOTAL] + 1.0
            cells[row + _TOTAL] = total
            if total > MAX_CALIBRATION_EVENTS:
                counts[m] *= 0.5
            continue
        past.append((m, level))
        total = cells[row + _TOTAL]
        if total > 0:
            exponent = 1.0
            for j in range(1, level + 1):
                exceed = cells[row + j]
                if exceed < MIN_EXCEEDANCES:
                    break
                if exceed < total:
                    # min(exponent, ...) without the call; never NaN (0 < exceed < total).
                    factor = math.log(exceed / total) / _LOG_CLAIMED_LIST[j]
                    if factor < exponent:
                        exponent = factor
                else:
                    exponent = 0.0
            calibrated[m] = value**exponent
    clip = False
    if any(map(operator.le, calibrated, alarms)):
        clip = time - state.last_alarm < ISOLATED_ALARM_SECONDS
        state.last_alarm = max(state.last_alarm, time)
    for m, level in past:
        if clip and alarm_levels[m] < level:
            level = alarm_levels[m]
        row = m * _WIDTH
        for j in range(row, row + level + 1):
            cells[j] += 1.0
        total = cells[row + _TOTAL] + 1.0
        cells[row + _TOTAL] = total
        if total > MAX_CALIBRATION_EVENTS:
            counts[m] *= 0.5
    return calibrated


def _surprise_levels(stacked: list[float]) -> list[int]:
    """The last grid level at or below each rarity's surprise (-log10), as observe_matrix finds
    it with ``np.log10`` and searchsorted: a NaN reaches every level."""
    return [0 if value > SURELY_LEVEL_0 else _surprise_level(value) for value in stacked]


def _surprise_level(value: float) -> int:
    """``_surprise_levels`` of one rarity at or below SURELY_LEVEL_0 (or NaN)."""
    # The level is the number of level rarities at or above the value, unless the value is
    # within _NEAR of one of them (or NaN): there only numpy's log10 can tell (elementwise, as
    # on the batch's array).
    k = bisect_left(_LEVEL_RARITIES, value)
    if (
        not value == value
        or (k < len(_LEVEL_RARITIES) and _LEVEL_RARITIES[k] - value <= _NEAR[k])
        or (k > 0 and value - _LEVEL_RARITIES[k - 1] <= _NEAR[k - 1])
    ):
        # (np.array first: a ufunc converts a list through a slower path.)
        return bisect_right(_GRID, -np.log10(np.array([value])).item())
    return len(_LEVEL_RARITIES) - k


# Arrays of the level search's constants, for the compiled function (numba freezes them in).
_LEVEL_RARITY_ARRAY = np.array(_LEVEL_RARITIES)
_NEAR_ARRAY = np.array(_NEAR)
# Only where the batch's kernel is compiled too (it is called from this one). Called through
# its compiled entry point (``unchecked``): recalibrate_one passes exactly the signature's types.
_compiled = (
    compile_kernel(
        _levels_and_learning,
        "float64(float64[:, ::1], float64[::1], float64[::1], int64[::1], float64, float64, "
        "float64[::1])",
    )
    if _recalibrate is not _recalibration_loop
    else None
)
_compiled_levels_and_learning = unchecked(_compiled) if _compiled is not None else None


def scores_of_one(rarities: list[float], log_rate: float) -> list[float]:
    """``rarity_to_score`` of one event's rarities (one per method)."""
    # Rarity 1 (no evidence: most methods for most events; np.fmin makes a NaN and anything
    # above 1 one too) has the log numpy gives it, 0: its linear value is a zero of either sign
    # for any rate, and its score 0. The others, clipped below at MIN_RARITY as np.fmax does,
    # take one np.log call (np.array first: a ufunc converts a list through a slower path).
    below = [rarity if rarity > MIN_RARITY else MIN_RARITY for rarity in rarities if rarity < 1.0]
    if not below:
        return [_UNKNOWN_SCORE] * len(rarities)
    logs = iter(np.log(np.array(below)).tolist())
    scores = []
    for rarity in rarities:
        if rarity < 1.0:
            # A clipped rarity below 1 has a negative log, as log_rate is (q < 0.5): the value
            # is positive, and at or below BEND_AT it is its own score (neither bent nor
            # clipped, "+ 0.0" changing no positive value).
            value = 0.5 * next(logs) / log_rate
            scores.append(value if value <= BEND_AT else _score_of_linear(value))
        else:
            scores.append(_UNKNOWN_SCORE)
    return scores


def _score_of_linear(value: float) -> float:
    """``rarity_to_score``'s last step on one value: bent past BEND_AT, clipped to [0, 1], and
    "+ 0.0" making the -0.0 of log(1) 0.0. Every value is finite (a clipped rarity's log over
    log(q), q in (0, 0.5) by the settings)."""
    if not value <= BEND_AT:
        beyond = value - BEND_AT
        beyond = beyond if beyond >= 0.0 else 0.0
        value = 1.0 - BEND_HEADROOM / (1.0 + beyond / BEND_HEADROOM)
    value = value if value >= 0.0 else 0.0
    return (value if value <= 1.0 else 1.0) + 0.0


def features_of_one(
    baseline_z: float, forecast_z: float, level_score: float, out: FloatArray | None = None
) -> FloatArray:
    """``feature_matrix(expected_latency_z(...), ...)`` of one event, from its Python values: the
    1-row matrix in one numpy call rather than one per step (min and max give fmin and fmax's
    results for the non-NaN values they see here). Written into ``out`` (a C-contiguous 1 x 3
    float64 array, then returned) where given: the engine reuses one, at a fifth of the cost of
    making the matrix."""
    z = baseline_z if forecast_z != forecast_z else max(min(forecast_z, 50.0), -50.0)
    if out is None:
        return np.array([[0.0 if z != z else z, level_score, 1.0 if z != z else 0.0]])
    # The three doubles' bytes copied as they are (struct's native 'd'), NaN payloads included.
    # (numpy's stubs give arrays the buffer protocol only from Python 3.12.)
    _pack_row(out, 0, 0.0 if z != z else z, level_score, 1.0 if z != z else 0.0)  # type: ignore[arg-type]
    return out


def combine_one(scores: list[float], weights: list[float]) -> float:
    """``combine_matrix``'s combined score of one event: the largest weighted score, 0 for none.
    Scores and weights (the settings') are in [0, 1], so each product is too, never NaN nor
    -0.0: the largest, or 0, is numpy's max with initial 0 bit for bit."""
    return max(map(operator.mul, weights, scores), default=0.0)


def finite_or_none(value: float) -> float | None:
    """The value as the JSON answer reads back: NaN and infinities are written as null."""
    return value if value - value == 0.0 else None


__all__ = [
    "combine_one",
    "features_of_one",
    "finite_or_none",
    "recalibrate_one",
    "scores_of_one",
]
