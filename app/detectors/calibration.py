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
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.detectors.compiled import compile_kernel
from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Rarities below this are indistinguishable for our purposes and keep log() finite.
MIN_RARITY = 1e-300
# Share of the reference scores above which the tail is modelled rather than counted.
TAIL_FRACTION = 0.05
GRID_POINTS = 257
# Where the score scale bends from linear-in-log-rarity to an approach towards 1.
BEND_AT = 0.9
BEND_HEADROOM = 1.0 - BEND_AT


@functools.lru_cache(maxsize=16)
def log_false_alarm_rate(target_false_alarm_rate: float) -> np.float64:
    # numpy's log, as for the rarities, computed once per rate rather than on every call.
    log_rate: np.float64 = np.log(np.float64(target_false_alarm_rate))
    return log_rate


def rarity_to_score(rarity: npt.ArrayLike, target_false_alarm_rate: float) -> FloatArray:
    """Map tail probabilities to [0, 1]; 0.5 at the target false-alarm rate."""
    # fmax/fmin: np.clip's values at a fraction of its call cost on a single event's arrays,
    # and fmin first turns a NaN rarity (the method could not judge) into 1: no evidence, score
    # 0, where np.clip or minimum/maximum would pass the NaN on into the response.
    clipped = np.fmax(np.fmin(np.asarray(rarity, dtype=np.float64), 1.0), MIN_RARITY)
    linear = 0.5 * np.log(clipped) / log_false_alarm_rate(target_false_alarm_rate)
    # count_nonzero: .all()'s answer without its Python-level wrapper (a single event pays it).
    if np.count_nonzero(linear <= BEND_AT) == linear.size:
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


def interp_one(x: float, xp: list[float], fp: list[float]) -> float:
    """``np.interp(x, xp, fp)`` for one value, with numpy's arithmetic on Python floats (the
    same IEEE operations in the same order; numpy/_core/src/multiarray/compiled_base.c,
    ``arr_interp``). ``xp`` is sorted and finite, as a calibrator's quantiles are."""
    if x != x:
        return x
    # The j with xp[j] <= x < xp[j + 1], as numpy's binary search finds it.
    j = bisect_right(xp, x) - 1
    if j < 0:
        return fp[0]
    if j >= len(xp) - 1:
        return fp[-1]
    if xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])  # xp[j] < x < xp[j + 1]: never 0 / 0
    result = slope * (x - xp[j]) + fp[j]
    if result != result:  # numpy tries the other end when the slope overflowed
        result = slope * (x - xp[j + 1]) + fp[j + 1]
        if result != result and fp[j] == fp[j + 1]:
            result = fp[j]
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
    # The grid as Python floats for the one-score path of ``rarity`` (derived, not stored).
    grid_lists: tuple[list[float], list[float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid_lists", (self.quantiles.tolist(), self.levels.tolist()))

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

    def rarity_one(self, score: float) -> float:
        """``rarity`` of one score, as a Python float."""
        if score > self.tail_start:
            # In the tail (5% of normal events): the array arithmetic, whose np.exp is not
            # the math module's in the last bit.
            return float(self.rarity(np.array([score])).item())
        # In the body: the same arithmetic on Python floats.
        body = 1.0 - interp_one(score, *self.grid_lists)
        # np.maximum's result (a NaN stays NaN).
        return body if not body <= TAIL_FRACTION else TAIL_FRACTION

    def rarity(self, raw_scores: npt.ArrayLike) -> FloatArray:
        """P(a normal score >= raw score)."""
        scores = np.asarray(raw_scores, dtype=np.float64)
        body = 1.0 - np.interp(scores, self.quantiles, self.levels)
        body = np.maximum(body, TAIL_FRACTION)
        in_tail = scores > self.tail_start
        if not np.count_nonzero(in_tail):  # .any() without its Python-level wrapper
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
GRID_PAST_FIRST = _GRID[1:].copy()
# log of each level's claimed rarity, 10**(-SURPRISE_GRID[j]), computed once, not on every call.
LOG_CLAIMED = -math.log(10.0) * _GRID


_FIRST_SLOT = np.zeros(1, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def alarm_arrays(alarms: tuple[float, ...]) -> tuple[FloatArray, IntArray]:
    """The alarm rarities and the surprise level of each (the same few per engine: cached)."""
    levels = [
        int(np.searchsorted(_GRID, -math.log10(max(a, MIN_RARITY)), side="right")) - 1
        for a in alarms
    ]
    return np.array(alarms, dtype=np.float64), np.array(levels, dtype=np.int64)


class _ServiceCalibration:
    __slots__ = ("counts", "last_alarm", "methods")

    def __init__(self) -> None:
        # One row per method of ``methods``: the exceedance count of each surprise level, then
        # the events learned. One array per service, so the batch kernel can take them all.
        self.counts = np.zeros((0, SURPRISE_LEVELS + 1))
        self.methods: tuple[str, ...] = ()
        self.last_alarm = -math.inf

    def _rows(self, names: tuple[str, ...]) -> list[int]:
        missing = [name for name in names if name not in self.methods]
        if missing:
            self.methods += tuple(missing)
            self.counts = np.vstack((self.counts, np.zeros((len(missing), SURPRISE_LEVELS + 1))))
        return [self.methods.index(name) for name in names]

    def counts_of(self, names: tuple[str, ...]) -> FloatArray:
        """The counts of ``names``, one row each in that order (zeros for a new method)."""
        if names == self.methods:  # the usual case: the same methods as last time
            return self.counts
        rows = self._rows(names)  # may grow self.counts: read it after
        counts: FloatArray = self.counts[rows]
        return counts

    def learn(self, names: tuple[str, ...], counts: FloatArray) -> None:
        if names == self.methods:
            self.counts[...] = counts
        else:
            rows = self._rows(names)
            self.counts[rows] = counts


def _recalibration_loop(
    counts: FloatArray,
    last_alarm: FloatArray,
    slots: IntArray,
    levels: IntArray,
    rarities: FloatArray,
    times: FloatArray,
    alarms: FloatArray,
    alarm_levels: IntArray,
    log_claimed: FloatArray,
    calibrated: FloatArray,
) -> None:
    """Each event in turn: its calibrated rarities from its service's counts (written into
    ``calibrated``), then the event learned into them (the compiled kernel's source).

    ``counts[s, m]`` holds service slot s's counts of method m (levels, then events learned) and
    ``last_alarm[s]`` its last alarm time; ``slots[i]`` is event i's service slot, and ``levels``,
    ``rarities`` and ``calibrated`` have one row per method, one column per event.
    """
    n_methods = levels.shape[0]
    total_at = log_claimed.shape[0]
    for i in range(slots.shape[0]):
        s = slots[i]
        flagged = False
        for m in range(n_methods):
            level = levels[m, i]
            total = counts[s, m, total_at]
            rarity = rarities[m, i]
            if level > 0 and total > 0:
                exponent = 1.0
                for j in range(1, level + 1):
                    exceed = counts[s, m, j]
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
            clip = times[i] - last_alarm[s] < ISOLATED_ALARM_SECONDS
            last_alarm[s] = max(last_alarm[s], times[i])
        for m in range(n_methods):
            level = levels[m, i]
            if clip:
                level = min(level, alarm_levels[m])
            for j in range(level + 1):
                counts[s, m, j] += 1.0
            counts[s, m, total_at] += 1.0
            if counts[s, m, total_at] > MAX_CALIBRATION_EVENTS:
                for j in range(total_at + 1):
                    counts[s, m, j] *= 0.5


_RECALIBRATION_SIGNATURE = (
    "void(float64[:, :, ::1], float64[::1], int64[::1], int64[:, ::1], float64[:, ::1], "
    "float64[::1], float64[::1], int64[::1], float64[::1], float64[:, ::1])"
)
# Without numba the source itself runs (correct, slower): both paths are tested.
_recalibrate = compile_kernel(_recalibration_loop, _RECALIBRATION_SIGNATURE) or _recalibration_loop


def _levels_loop(surprises: FloatArray, grid: FloatArray, levels: IntArray) -> None:
    """``np.searchsorted(grid, surprises, side="right")`` into ``levels`` (both 2-D, ``grid``
    ascending without NaN), by a scan from the grid's start: an ordinary event passes only its
    first levels, where a binary search mispredicts a branch at each of its five steps. NaN
    sorts last, as numpy sorts it (the compiled kernel's source)."""
    size = grid.shape[0]
    for m in range(surprises.shape[0]):
        for i in range(surprises.shape[1]):
            surprise = surprises[m, i]
            j = 0
            if surprise != surprise:
                j = size
            while j < size and grid[j] <= surprise:
                j += 1
            levels[m, i] = j


_compiled_levels = compile_kernel(
    _levels_loop, "void(float64[:, ::1], float64[::1], int64[:, ::1])"
)


def surprise_levels(surprises: FloatArray) -> IntArray:
    """The last grid level at or below each surprise (2-D): searching the grid past its first
    level (0, which every surprise reaches; NaN sorts last either way) counts one fewer, so no
    "- 1" call is needed."""
    if _compiled_levels is None:  # pragma: no cover - numba is a dependency
        levels: IntArray = np.searchsorted(GRID_PAST_FIRST, surprises, side="right").astype(
            np.int64, copy=False
        )
        return levels
    levels = np.empty(surprises.shape, dtype=np.int64)
    _compiled_levels(np.ascontiguousarray(surprises), GRID_PAST_FIRST, levels)
    return levels


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
        levels = surprise_levels(-np.log10(stacked))
        calibrated = stacked.copy()
        # Events of one service state share a slot (a service evicted and seen again within the
        # batch has two states, as one event at a time would give it).
        if len(services) == 1:  # the /score path
            unique, slots = [self.state_for(services[0])], _FIRST_SLOT
        else:
            unique, slots = self.distinct_states_for(services)
        methods = tuple(names)
        if len(unique) == 1:
            # The kernel may update the one service's counts in place: they are learned back
            # into the same rows below either way, and a copy is a numpy call an event pays for.
            counts = unique[0].counts_of(methods)[None]
        else:
            counts = np.concatenate([state.counts_of(methods) for state in unique]).reshape(
                len(unique), len(methods), SURPRISE_LEVELS + 1
            )
        last_alarm = np.array([state.last_alarm for state in unique])
        alarm_array, alarm_levels = alarm_arrays(tuple(alarms))
        _recalibrate(
            counts,
            last_alarm,
            slots,
            levels,
            stacked,
            np.ascontiguousarray(times, dtype=np.float64),
            alarm_array,
            alarm_levels,
            LOG_CLAIMED,
            calibrated,
        )
        for state, learned, last in zip(unique, counts, last_alarm.tolist(), strict=True):
            state.learn(methods, learned)
            state.last_alarm = last
        return calibrated
