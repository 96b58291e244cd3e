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

import functools
import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]

# Rarities below this are indistinguishable for our purposes and keep log() finite.
MIN_RARITY = 1e-300
# Share of the reference scores above which the tail is modelled rather than counted.
TAIL_FRACTION = 0.05
GRID_POINTS = 257
# Where the score scale bends from linear-in-log-rarity to an approach towards 1.
BEND_AT = 0.9
BEND_HEADROOM = 1.0 - BEND_AT


@functools.lru_cache(maxsize=16)
def _log_rate(target_false_alarm_rate: float) -> np.float64:
    # numpy's log, as for the rarities, computed once per rate rather than on every call.
    log_rate: np.float64 = np.log(np.float64(target_false_alarm_rate))
    return log_rate


def rarity_to_score(rarity: npt.ArrayLike, target_false_alarm_rate: float) -> FloatArray:
    """Map tail probabilities to [0, 1]; 0.5 at the target false-alarm rate."""
    # fmax/fmin: np.clip's values at a fraction of its call cost on a single event's arrays,
    # and fmin first turns a NaN rarity (the method could not judge) into 1: no evidence, score
    # 0, where np.clip or minimum/maximum would pass the NaN on into the response.
    clipped = np.fmax(np.fmin(np.asarray(rarity, dtype=np.float64), 1.0), MIN_RARITY)
    linear = 0.5 * np.log(clipped) / _log_rate(target_false_alarm_rate)
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
        # Subnormal reference scores flushed to 0: quantiles a subnormal apart make np.interp's
        # slope overflow, and the body rarity is then no longer monotone in the raw score.
        scores = np.where(np.abs(scores) < np.finfo(np.float64).tiny, 0.0, scores)
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
        in_tail = scores > self.tail_start
        if not in_tail.any():
            # The usual case (95% of normal events): the same result without the tail's six
            # numpy calls, whose fixed cost is what a single event pays.
            return body
        # Clamped at 0: np.where evaluates both branches, and far below the tail the unclamped
        # exponent overflows (a RuntimeWarning, an error under -W error) for a value not used.
        excess = np.maximum(scores - self.tail_start, 0.0)
        tail = TAIL_FRACTION * np.exp(-excess / self.tail_scale)
        result: FloatArray = np.where(in_tail, tail, body)
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


# Online recalibration: surprise levels (decades of rarity, -log10) every half decade down to
# 1e-12, then ever coarser down to MIN_RARITY. The deep levels matter for heavy-tailed services: a
# method whose model says "1 in 10**80" about a spike the service makes every day must learn that
# too, and a power fitted at 1e-12 cannot shrink 10**-80 to "1 in 300" (tested on NAB, whose
# periodic and frequent spikes otherwise all pin at the top of the scale; docs/evaluation.md).
SURPRISE_STEP = 0.5
SURPRISE_GRID = (
    *(SURPRISE_STEP * j for j in range(24)),
    18.0, 27.0, 40.0, 60.0, 90.0, 135.0, 200.0, 299.0,
)  # fmt: skip
SURPRISE_LEVELS = len(SURPRISE_GRID)
# Exceedances a level needs before its empirical frequency is trusted.
MIN_EXCEEDANCES = 10
# Counts are halved beyond this many events, so the calibration follows a service that changes.
MAX_CALIBRATION_EVENTS = 20_000.0
# An alarm this long after the service's previous one is "isolated": it is learned in full.
ISOLATED_ALARM_SECONDS = 60.0
_GRID = np.asarray(SURPRISE_GRID)
# log of each level's claimed rarity, 10**(-SURPRISE_GRID[j]), computed once, not on every call.
_LOG_CLAIMED = (-math.log(10.0) * _GRID).tolist()


@functools.lru_cache(maxsize=64)
def _alarm_levels(alarms: tuple[float, ...]) -> list[int]:
    """The surprise level of each alarm rarity (the same few per engine: cached)."""
    return [
        int(np.searchsorted(_GRID, -math.log10(max(a, MIN_RARITY)), side="right")) - 1
        for a in alarms
    ]


class _ServiceCalibration:
    __slots__ = ("counts", "last_alarm")

    def __init__(self) -> None:
        # array('d'): 8 bytes a count instead of a Python float object each.
        self.counts: dict[str, array[float]] = {}
        self.last_alarm = -math.inf


class OnlineRecalibration(ServiceStates[_ServiceCalibration]):
    """Per service and method, how often the method's rarities are really as small as they claim.

    A method's rarity is exact only when its model of the service is right; a series with a
    trend, a daily cycle or heavy tails makes "one in a million" happen every day. For every
    service and method this counts the service's events at rarity levels ``claimed_j =
    10**(-SURPRISE_GRID[j])`` (every half decade down to 1e-12, then 1e-18, 1e-27, ... 1e-299).
    If events claimed at least as rare as level j really occur with frequency ``f_j = E_j / N``,
    the method's surprise is too large by the factor ``log(claimed_j) / log(f_j)``; the calibrated
    rarity takes the worst such factor over the levels up to its own (each with at least
    ``MIN_EXCEEDANCES`` events)::

        k = min(1, min over j of log(f_j) / log(claimed_j))      calibrated = rarity ** k

    A power, not a factor, because over-confident models are wrong on a log scale (a z-score
    against too small a spread squares its error in the exponent). ``k <= 1`` always: the
    correction only makes a method less alarming, so where the model is right it changes
    (almost) nothing. An alarm after a quiet minute is learned in full (a service whose "rare"
    events are scattered over time learns that they are not rare); alarms that follow it within
    ``ISOLATED_ALARM_SECONDS`` count only up to the alarm level, so an incident under way raises
    the alarm-level frequency but cannot teach the service that ever more extreme events are
    normal. Work per event and method is O(1) for ordinary events (they reach
    only the first levels); memory is ``SURPRISE_LEVELS + 1`` floats per service and method.
    """

    def __init__(self, max_services: int = 100_000) -> None:
        super().__init__(_ServiceCalibration, max_services)

    def observe(
        self,
        services: list[str],
        times: FloatArray,
        rarities: dict[str, FloatArray],
        alarm_rarities: dict[str, float],
    ) -> dict[str, FloatArray]:
        """Calibrated rarities of each event (from the service's past), then learn the event.
        An event is flagged when some method's calibrated rarity reaches its alarm rarity
        (``alarm_rarities[name]``)."""
        names = list(rarities)
        if not names:
            return {}
        calibrated = self.observe_matrix(
            services,
            times,
            names,
            np.vstack([rarities[name] for name in names]),
            [alarm_rarities.get(name, 0.0) for name in names],
        )
        return {name: calibrated[m] for m, name in enumerate(names)}

    def observe_matrix(
        self,
        services: list[str],
        times: FloatArray,
        names: list[str],
        rarities: FloatArray,
        alarms: list[float],
    ) -> FloatArray:
        """``observe`` on the methods' rarities stacked as rows (``names[m]`` is row m, with
        alarm rarity ``alarms[m]``): the engine's form, one array for all methods."""
        # minimum(maximum()): what np.clip computes (NaN included), at a third of its call cost.
        stacked = np.minimum(np.maximum(rarities, MIN_RARITY), 1.0)
        levels = np.searchsorted(_GRID, -np.log10(stacked), side="right").astype(np.int64) - 1
        log_claimed = _LOG_CLAIMED
        alarm_levels = _alarm_levels(tuple(alarms))
        calibrated = stacked.copy()
        level_rows = levels.tolist()
        rarity_rows = stacked.tolist()
        time_list = times.tolist()
        for i, service in enumerate(services):
            service_state = self.state_for(service)
            state = service_state.counts
            flagged = False
            for m, name in enumerate(names):
                counts = state.get(name)
                if counts is None:
                    counts = array("d", bytes(8 * (SURPRISE_LEVELS + 1)))  # last: events learned
                    state[name] = counts
                level = level_rows[m][i]
                total = counts[SURPRISE_LEVELS]
                rarity = rarity_rows[m][i]
                if level > 0 and total > 0:
                    exponent = 1.0
                    for j in range(1, level + 1):
                        exceed = counts[j]
                        if exceed < MIN_EXCEEDANCES:
                            break
                        if exceed < total:
                            exponent = min(exponent, math.log(exceed / total) / log_claimed[j])
                        else:
                            exponent = 0.0
                    rarity = rarity**exponent
                    calibrated[m, i] = rarity
                if rarity <= alarms[m]:
                    flagged = True
            # An alarm after a quiet spell teaches the service how extreme its events get; the
            # alarms that follow it within ISOLATED_ALARM_SECONDS (an incident under way) count
            # only as reaching the alarm level, never beyond it.
            clip = False
            if flagged:
                clip = time_list[i] - service_state.last_alarm < ISOLATED_ALARM_SECONDS
                service_state.last_alarm = max(service_state.last_alarm, time_list[i])
            for m, name in enumerate(names):
                counts = state[name]
                level = level_rows[m][i]
                if clip:
                    level = min(level, alarm_levels[m])
                for j in range(level + 1):
                    counts[j] += 1.0
                counts[SURPRISE_LEVELS] += 1.0
                if counts[SURPRISE_LEVELS] > MAX_CALIBRATION_EVENTS:
                    state[name] = array("d", [c * 0.5 for c in counts])
        return calibrated
