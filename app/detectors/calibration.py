"""Turning a method's evidence into the one score scale every response uses.

Every method ends with a *rarity*: the probability that a normal event looks at least this unusual
to that method (a tail probability, ``S``). The score is that rarity on a log scale relative to the
target false-alarm rate ``q``::

    score = clip(0.5 * log(S) / log(q), 0, 1)

so ``S = 1`` (perfectly ordinary) scores 0, ``S = q`` scores 0.5 (the decision threshold), and
``S = q**2`` or rarer scores 1. With the default ``q = 0.001``, 0.5 means "one normal event in a
thousand looks like this", 0.75 one in ~31,600, 0.9 one in ~250,000.
"""

from __future__ import annotations

import math
from collections import OrderedDict
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


def rarity_to_score(rarity: npt.ArrayLike, target_false_alarm_rate: float) -> FloatArray:
    """Map tail probabilities to [0, 1]; 0.5 at the target false-alarm rate."""
    clipped = np.clip(np.asarray(rarity, dtype=np.float64), MIN_RARITY, 1.0)
    score = 0.5 * np.log(clipped) / np.log(target_false_alarm_rate)
    result: FloatArray = np.clip(score, 0.0, 1.0)
    return result


def alarm_rarity(target_false_alarm_rate: float, threshold: float, weight: float) -> float:
    """The rarity at which a method with ``weight`` alone makes the combined score reach
    ``threshold``: ``weight * 0.5 * log(S) / log(q) >= threshold``; 0 for a weight of 0."""
    if weight <= 0:
        return 0.0
    return float(target_false_alarm_rate ** (2.0 * threshold / weight))


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
        tail = TAIL_FRACTION * np.exp(-(scores - self.tail_start) / self.tail_scale)
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


# Online recalibration: surprise levels every half decade of rarity, down to 1e-12.
SURPRISE_STEP = 0.5
SURPRISE_LEVELS = 24
# Exceedances a level needs before its empirical frequency is trusted.
MIN_EXCEEDANCES = 10
# Counts are halved beyond this many events, so the calibration follows a service that changes.
MAX_CALIBRATION_EVENTS = 20_000.0


class OnlineRecalibration:
    """Per service and method, how often the method's rarities are really as small as they claim.

    A method's rarity is exact only when its model of the service is right; a series with a
    trend, a daily cycle or heavy tails makes "one in a million" happen every day. For every
    service and method this keeps counts of the service's *unflagged* events at rarity levels
    ``10**(-0.5 j)`` (j = 0..23) and corrects a rarity by the worst observed ratio of real to
    claimed frequency at the levels up to the event's own, once a level has ``MIN_EXCEEDANCES``
    events::

        calibrated = min(1, rarity * max(1, max over j of (E_j / N) / 10**(-0.5 j)))

    Only events the engine did not flag are learned, so an incident never teaches the service
    that incidents are normal; the tail beyond the alarm level is judged with the ratio seen in
    the body up to it. The correction only ever makes a method *less* alarming: where the model
    is right it changes (almost) nothing, and where it is wrong the service's false-alarm rate
    comes back to about the target. Work per event and method is O(1) for ordinary events (they
    reach only the first levels); memory is ``SURPRISE_LEVELS + 1`` floats per service and method.
    """

    def __init__(self, max_services: int = 100_000) -> None:
        self.max_services = max_services
        self._services: OrderedDict[str, dict[str, list[float]]] = OrderedDict()

    def observe(
        self,
        services: list[str],
        rarities: dict[str, FloatArray],
        alarm_rarities: dict[str, float],
    ) -> dict[str, FloatArray]:
        """Calibrated rarities of each event (from the service's past), then learn the event if
        no method's calibrated rarity reaches its alarm rarity (``alarm_rarities[name]``)."""
        names = list(rarities)
        if not names:
            return {}
        stacked = np.clip(np.vstack([rarities[name] for name in names]), MIN_RARITY, 1.0)
        levels = np.minimum(
            np.floor(-np.log10(stacked) / SURPRISE_STEP), SURPRISE_LEVELS - 1
        ).astype(np.int64)
        claimed = (10.0 ** (-SURPRISE_STEP * np.arange(SURPRISE_LEVELS))).tolist()
        alarms = [alarm_rarities.get(name, 0.0) for name in names]
        alarm_levels = [
            min(int(-math.log10(max(a, MIN_RARITY)) / SURPRISE_STEP), SURPRISE_LEVELS - 1)
            for a in alarms
        ]
        calibrated = stacked.copy()
        level_rows = levels.tolist()
        rarity_rows = stacked.tolist()
        for i, service in enumerate(services):
            state = self._services.get(service)
            if state is None:
                state = {}
                self._services[service] = state
                if len(self._services) > self.max_services:
                    self._services.popitem(last=False)
            else:
                self._services.move_to_end(service)
            flagged = False
            for m, name in enumerate(names):
                counts = state.get(name)
                if counts is None:
                    counts = [0.0] * (SURPRISE_LEVELS + 1)  # last slot: events learned
                    state[name] = counts
                level = level_rows[m][i]
                total = counts[SURPRISE_LEVELS]
                rarity = rarity_rows[m][i]
                if level > 0 and total > 0:
                    worst = 1.0
                    for j in range(1, level + 1):
                        exceed = counts[j]
                        if exceed < MIN_EXCEEDANCES:
                            break
                        worst = max(worst, exceed / total / claimed[j])
                    rarity = min(1.0, rarity * worst)
                    calibrated[m, i] = rarity
                if rarity <= alarms[m]:
                    flagged = True
            for m, name in enumerate(names):
                counts = state[name]
                level = level_rows[m][i]
                if flagged:
                    # A flagged event counts as reaching the alarm level, never beyond it.
                    level = min(level, alarm_levels[m])
                for j in range(level + 1):
                    counts[j] += 1.0
                counts[SURPRISE_LEVELS] += 1.0
                if counts[SURPRISE_LEVELS] > MAX_CALIBRATION_EVENTS:
                    state[name] = [c * 0.5 for c in counts]
        return {name: calibrated[m] for m, name in enumerate(names)}
