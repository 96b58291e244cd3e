"""The batch of one (every POST /score, every ``AnomalyDetector.predict``) on Python floats.

For one event each numpy call's fixed cost is most of its price, so the steps after the detectors
(online recalibration, score mapping, combination) are redone here on Python floats with the same
IEEE operations in the same order as their array versions, keeping numpy only for the functions
whose last bit Python's math module may not share (``np.log``, ``np.log10``: numpy's SIMD loops
are not libm). tests/test_one_event_paths.py compares every function here with its array version
bit for bit.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from app.detectors.calibration import (
    _GRID_PAST_FIRST,
    _LOG_CLAIMED,
    BEND_AT,
    BEND_HEADROOM,
    ISOLATED_ALARM_SECONDS,
    MAX_CALIBRATION_EVENTS,
    MIN_EXCEEDANCES,
    MIN_RARITY,
    SURPRISE_LEVELS,
    OnlineRecalibration,
)

_GRID = _GRID_PAST_FIRST.tolist()
_LOG_CLAIMED_LIST = _LOG_CLAIMED.tolist()
# The column of events learned in a method's row of counts, after the levels' exceedances.
_TOTAL = SURPRISE_LEVELS
# counts[:, ::_TOTAL] is columns 0 and _TOTAL, the two every learned event adds one to.
if SURPRISE_LEVELS + 1 > 2 * _TOTAL:  # pragma: no cover - holds for any grid of 2+ levels
    raise ImportError("the stride trick below needs fewer than 2 * SURPRISE_LEVELS columns")


def recalibrate_one(
    recalibration: OnlineRecalibration,
    service: str,
    time: float,
    names: tuple[str, ...],
    rarities: list[float],
    alarms: list[float],
    alarm_levels: list[int],
) -> list[float]:
    """``recalibration.observe_matrix`` for one event of ``service`` at ``time``: the methods'
    calibrated rarities, then the event learned. ``alarm_levels`` are the surprise levels of
    ``alarms`` (as ``_alarm_arrays`` gives them). The arithmetic is that of the compiled kernel
    (``_recalibration_loop``) for one event: same operations, same order."""
    # np.minimum(np.maximum(r, MIN_RARITY), 1.0), NaN kept.
    stacked = [MIN_RARITY if r < MIN_RARITY else 1.0 if r > 1.0 else r for r in rarities]
    # searchsorted(side="right") of -log10 on the grid past its first level; NaN sorts last.
    levels = [bisect_right(_GRID, -surprise) for surprise in np.log10(stacked).tolist()]
    state = recalibration.state_for(service)
    counts = state.counts_of(names)
    totals = counts[:, _TOTAL].tolist()
    calibrated = stacked.copy()
    flagged = False
    for m, level in enumerate(levels):
        rarity = stacked[m]
        total = totals[m]
        if level > 0 and total > 0:
            exponent = 1.0
            for j, exceed in enumerate(counts[m, 1 : level + 1].tolist(), 1):
                if exceed < MIN_EXCEEDANCES:
                    break
                if exceed < total:
                    exponent = min(exponent, math.log(exceed / total) / _LOG_CLAIMED_LIST[j])
                else:
                    exponent = 0.0
            rarity = rarity**exponent
            calibrated[m] = rarity
        if rarity <= alarms[m]:
            flagged = True
    clip = False
    if flagged:
        clip = time - state.last_alarm < ISOLATED_ALARM_SECONDS
        state.last_alarm = max(state.last_alarm, time)
    counts[:, ::_TOTAL] += 1.0
    for m, level in enumerate(levels):
        if clip and alarm_levels[m] < level:
            level = alarm_levels[m]
        if level > 0:
            counts[m, 1 : level + 1] += 1.0
        if totals[m] + 1.0 > MAX_CALIBRATION_EVENTS:
            counts[m] *= 0.5
    if counts is not state.counts:  # a copy (the methods changed): learned back into place
        state.learn(names, counts)
    return calibrated


def scores_of_one(rarities: list[float], log_rate: float) -> list[float]:
    """``rarity_to_score`` of one event's rarities (one per method)."""
    # np.fmax(np.fmin(r, 1.0), MIN_RARITY): a NaN rarity (no evidence) becomes 1.
    clipped = []
    for rarity in rarities:
        capped = rarity if rarity < 1.0 else 1.0
        clipped.append(capped if capped > MIN_RARITY else MIN_RARITY)
    linear = [0.5 * log / log_rate for log in np.log(clipped).tolist()]
    # "+ 0.0": the -0.0 of log(1) as 0.0. Past the bend, the array version clips to [0, 1].
    if all(value <= BEND_AT for value in linear):
        return [(value if value >= 0.0 else 0.0) + 0.0 for value in linear]
    scores = []
    for value in linear:
        if not value <= BEND_AT:
            beyond = value - BEND_AT
            beyond = beyond if beyond >= 0.0 else 0.0
            value = 1.0 - BEND_HEADROOM / (1.0 + beyond / BEND_HEADROOM)
        value = value if value >= 0.0 else 0.0
        scores.append((value if value <= 1.0 else 1.0) + 0.0)
    return scores


def combine_one(scores: list[float], weights: list[float]) -> float:
    """``combine_matrix``'s combined score of one event: the largest weighted score, 0 for none
    (numpy's maximum: a NaN would win)."""
    combined = 0.0
    for score, weight in zip(scores, weights, strict=True):
        product = weight * score
        if not combined >= product:
            combined = product
    return combined


def finite_or_none(value: float) -> float | None:
    """The value as the JSON answer reads back: NaN and infinities are written as null."""
    return value if value - value == 0.0 else None


__all__ = ["combine_one", "finite_or_none", "recalibrate_one", "scores_of_one"]
