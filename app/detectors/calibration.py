"""Turning a method's evidence into the one score scale every response uses.

Every method ends with a *rarity*: the probability that a normal event looks at least this unusual
to that method (a tail probability, ``S``). The score is that rarity on a log scale relative to the
target false-alarm rate ``q``::

    L = log(S) / log(q)
    score = 0.5 * L                                   while that is at most 0.9 (S >= q**1.8)
    score = 1 - 0.1 / (1 + (0.5 * L - 0.9) / 0.1)      beyond, approaching 1 but not reaching it

so ``S = 1`` (perfectly ordinary) scores 0, ``S = q`` scores 0.5 (the decision threshold). With
the default ``q = 0.001``, 0.5 means "one normal event in a thousand looks like this", 0.75 one in
~31,600, 0.9 one in ~250,000, 0.95 one in a million (``q**2``), 0.99 about one in 10**11. Past
0.9 the scale bends smoothly (same slope at the joint) so that rarer always scores higher: a hard
clip at 1 would tie every extreme event, and a user (or NAB's threshold search) could no longer
tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Rarities below this are indistinguishable for our purposes and keep log() finite.
MIN_RARITY = 1e-300
# Share of the reference scores above which the tail is modelled rather than counted.
TAIL_FRACTION = 0.05
GRID_POINTS = 257
# Where the score scale bends from linear-in-log-rarity to an approach towards 1.
BEND_AT = 0.9
BEND_HEADROOM = 1.0 - BEND_AT


def rarity_to_score(rarity: npt.ArrayLike, target_false_alarm_rate: float) -> FloatArray:
    """Map tail probabilities to [0, 1]; 0.5 at the target false-alarm rate."""
    # fmax/fmin: np.clip's values at a fraction of its call cost on a single event's arrays,
    # and fmin first turns a NaN rarity (the method could not judge) into 1: no evidence, score
    # 0, where np.clip or minimum/maximum would pass the NaN on into the response.
    clipped = np.fmax(np.fmin(np.asarray(rarity, dtype=np.float64), 1.0), MIN_RARITY)
    linear = 0.5 * np.log(clipped) / np.log(target_false_alarm_rate)
    if (linear <= BEND_AT).all():
        # Nothing past the bend (the usual case; a NaN fails the test): the same result as below
        # without computing the bent branch. linear >= 0 here, so only -0.0 needs the "+ 0.0".
        unbent: FloatArray = np.maximum(linear, 0.0) + 0.0
        return unbent
    beyond = np.maximum(linear - BEND_AT, 0.0)
    bent = 1.0 - BEND_HEADROOM / (1.0 + beyond / BEND_HEADROOM)
    # "+ 0.0" turns the -0.0 of log(1) into 0.0, which JSON would otherwise print as -0.0.
    result: FloatArray = np.clip(np.where(linear <= BEND_AT, linear, bent), 0.0, 1.0) + 0.0
    return result


@dataclass(frozen=True, slots=True)
class TailCalibrator:
    """Empirical survival function of a detector's raw scores on normal data, with a fitted tail.

    The body is a quantile grid (exact up to grid resolution); beyond the ``1 - TAIL_FRACTION``
    quantile, excesses are modelled as exponential (a generalised Pareto tail with shape 0, the
    standard peaks-over-threshold choice), so rarities far beyond anything seen in training stay
    ordered and finite instead of all collapsing to "never seen".
    """

    quantiles: FloatArray  # raw score at each probability of ``levels``
    levels: FloatArray
    tail_start: float
    tail_scale: float

    @classmethod
    def fit(cls, raw_scores: npt.ArrayLike) -> TailCalibrator:
        scores = np.asarray(raw_scores, dtype=np.float64)
        if scores.ndim != 1 or scores.size < 2 or not np.all(np.isfinite(scores)):
            raise ValueError("calibration needs at least two finite reference scores")
        levels = np.linspace(0.0, 1.0, GRID_POINTS)
        quantiles = np.quantile(scores, levels)
        tail_start = float(np.quantile(scores, 1.0 - TAIL_FRACTION))
        excess = scores[scores > tail_start] - tail_start
        spread = float(np.std(scores))
        # A degenerate tail (all reference scores equal) gets a small scale from the spread,
        # or an absolute floor, so that anything above it is still judged rare.
        tail_scale = float(excess.mean()) if excess.size else 0.0
        tail_scale = max(tail_scale, 0.01 * spread, 1e-9)
        return cls(quantiles, levels, tail_start, tail_scale)

    def rarity(self, raw_scores: npt.ArrayLike) -> FloatArray:
        """P(a normal score >= raw score)."""
        scores = np.asarray(raw_scores, dtype=np.float64)
        body = 1.0 - np.interp(scores, self.quantiles, self.levels)
        body = np.maximum(body, TAIL_FRACTION)
        # Clamped at 0: np.where evaluates both branches, and far below the tail the unclamped
        # exponent overflows (a RuntimeWarning, an error under -W error) for a value not used.
        excess = np.maximum(scores - self.tail_start, 0.0)
        tail = TAIL_FRACTION * np.exp(-excess / self.tail_scale)
        result: FloatArray = np.where(scores > self.tail_start, tail, body)
        return result

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        return {
            f"{prefix}quantiles": self.quantiles,
            f"{prefix}levels": self.levels,
            f"{prefix}tail": np.array([self.tail_start, self.tail_scale], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]], prefix: str) -> TailCalibrator:
        quantiles = np.asarray(arrays[f"{prefix}quantiles"], dtype=np.float64)
        levels = np.asarray(arrays[f"{prefix}levels"], dtype=np.float64)
        tail_start, tail_scale = (float(v) for v in arrays[f"{prefix}tail"])
        if quantiles.shape != levels.shape or quantiles.ndim != 1 or quantiles.size < 2:
            raise ValueError("calibrator arrays disagree in shape")
        if not (np.all(np.isfinite(quantiles)) and np.isfinite(tail_start) and tail_scale > 0):
            raise ValueError("calibrator holds non-finite values")
        return cls(quantiles, levels, tail_start, tail_scale)
