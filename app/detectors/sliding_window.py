"""Sliding-window detector: error bursts and latency jumps against the service's recent past."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from scipy.special import stdtr
from scipy.special.cython_special import stdtr as stdtr_one

from app.compiled import compile_kernel
from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output
from app.windows import RECENT_EVENTS

FloatArray = npt.NDArray[np.float64]

# An event counts towards a sustained slowdown only if it is itself this slow (baseline z-score).
SHIFT_MIN_OWN_Z = 1.0
# The false-alarm budget shared by the tests (weighted Bonferroni: the shares sum to 1, so the
# event's rarity, the smallest of test / share, still bounds how often a normal event reaches it).
# The error-burst tests speak only for error lines and the latency tests for any line; half the
# budget each side. Before the burst scan each of four tests had a quarter.
BURST_SHARE = 0.5
LATENCY_JUMP_SHARE = 0.25
LATENCY_SHIFT_SHARE = 0.25
# The burst scan takes the smallest of up to RECENT_EVENTS tail probabilities (the line alone,
# then one per earlier error among the last RECENT_EVENTS lines): by simulation on independent
# error flags at a known rate (0.1% to 10%, 1e8-4e8 lines each) the share of lines whose smallest
# tail is at most c stays within 2.2 c for c from 1e-6 to 1e-3, and within 1.5 c for rates up to
# 1% but for one grid point (docs/evaluation.md, "Synthetic: the error-burst scan"); this factor
# pays for taking the smallest.
SCAN_CORRECTION = 2.0
# A latency jump is only worth its t tail where it can make the event's rarity: the tail over
# LATENCY_JUMP_SHARE must be below 1, so the tail below LATENCY_JUMP_SHARE. For t <= this and at
# least one degree of freedom the tail P(T >= t) is at least the normal's 1 - Phi(0.5) = 0.31
# (a t tail is heavier than the normal's at every degree of freedom): not worth its stdtr call.
JUMP_T_JUDGED_ABOVE = 0.5


def _jump_t(z: float, total: float) -> tuple[float, float]:
    """The window's latency z-score as Student's t with its degrees of freedom.

    The window's mean and spread are estimated from its own n latencies (``total`` counts the
    event itself, whose latency the window leaves out: n = total - 1; events without a latency
    make n smaller still, which this ignores, erring towards the normal tail). A new
    observation from the same normal then has (x - mean) / (s * sqrt(1 + 1/n)) ~ t(n - 1),
    with s the unbiased spread: from the window's z (population spread) that is
    z * sqrt((n - 1) / (n + 1)). The normal tail of z took a young window's spread as exact: at
    43 lines a z of 4.3 is a 1-in-100,000 line by the normal, 1 in 13,000 by t (synthetic seed 1,
    `reports`' 39th line flagged). For a window of hundreds of lines the two agree."""
    n = total - 1.0
    return z * math.sqrt((n - 1.0) / (n + 1.0)), n - 1.0


def _shift_degrees_of_freedom(events_seen: float) -> float:
    """Degrees of freedom of the latency shift's t tail: the baseline's scale (and centre) are
    estimates from the service's own n earlier events, so its z-scores, and their recent mean, are
    t- rather than normal-distributed (n - 1 degrees of freedom, as for one sample's spread).
    Simulated on normal latencies with this baseline (20-event median/MAD warm-up, then the
    clipped running mean and variance; no decay): the normal tail at 3 spreads is exceeded 3.1x
    as often as it claims in the 5th-24th judged event, 1.6x in the 25th-49th, 1.2x in the
    50th-99th, and as often from the 100th on; t(n - 1) claims 1.9x, 1.5x, 1.3x and 1.0-1.2x.
    A baseline of hundreds of events is judged as before (synthetic seed 11: `batch-export`
    flagged for a shift of 3.6 spreads at its 54th-55th lines). The batch path computes the
    same in numpy (``_rarity_of_batch``)."""
    return max(events_seen - 1.0, 1.0)


def _predictive_tail(earlier: int, lines: int, alpha: float, beta: float) -> float:
    """P(X >= earlier) for X ~ BetaBinomial(lines, alpha, beta): the pmf from x = 0 up by the
    ratio of consecutive terms, the upper terms summed (no 1 - sum, which loses tiny tails)."""
    pmf = 1.0
    for j in range(lines):
        pmf *= (beta + j) / (alpha + beta + j)
    tail = 0.0
    for x in range(lines):
        pmf *= (lines - x) / (x + 1) * (x + alpha) / (lines - x - 1 + beta)
        if x + 1 >= earlier:
            tail += pmf
    return tail


def error_burst_rarity(bits: int, rate: float, weight: float) -> float:
    """How often a normal line is an error with its service's earlier errors this close: the
    smallest over the earlier errors among the last ``RECENT_EVENTS`` lines (bit d of ``bits``
    is the line d back), times ``SCAN_CORRECTION``.

    With the m-th earlier error ``d`` lines back, a normal line looks at least this bad with
    probability ``E[p * P(Bin(d, p) >= m)]``: the line is an error, and m of the d lines before
    it are. The tail is per line, which is what a false-alarm rate counts (not per window of
    lines), and the smallest over m is a scan over every horizon up to ``RECENT_EVENTS``. The
    expectation is over the service's error rate ``p`` as its history knows it, Beta(rate *
    weight, (1 - rate) * weight): then it is ``rate * P(BetaBinomial(d, alpha + 1, beta) >=
    m)``, which for a long history is the binomial tail at ``rate``, while a young service (a few
    dozen lines, a rate known within a factor of two) is not judged as if its rate were exact.
    Two errors in four lines of a service erring 1% of the time: about ``0.01 * P(Bin(3, 0.01)
    >= 1) = 3e-4``. Only the last ``RECENT_EVENTS`` lines count: the 5-minute window's error
    count, a horizon the scan used to include, still holds a burst minutes after it ended, and a
    pair of ordinary errors then looked like its continuation (docs/evaluation.md)."""
    return SCAN_CORRECTION * error_burst_scan(bits, rate, weight)[0]


def error_burst_scan(bits: int, rate: float, weight: float) -> tuple[float, int, int]:
    """The scan behind ``error_burst_rarity``: its smallest tail (before ``SCAN_CORRECTION``)
    and where it was found, as ``(tail, errors, events)``: ``errors`` errors among the service's
    last ``events`` events, this one included. ``(rate, 1, 1)`` when no earlier error among the
    last ``RECENT_EVENTS`` lines makes the line rarer than being an error at all. One loop for
    the score and its explanation, so the explanation names what the score found. A plain
    tuple: this runs for every error event."""
    alpha = rate * weight
    beta = weight - alpha
    smallest = rate
    errors = events = 1
    earlier = 0
    for distance in range(1, RECENT_EVENTS):
        if (bits >> distance) & 1:
            earlier += 1
            tail = rate * _predictive_tail(earlier, distance, alpha + 1.0, beta)
            # Strictly smaller, as min() kept the earlier value on a tie: the same smallest.
            if tail < smallest:
                smallest, errors, events = tail, earlier + 1, distance + 1
    return smallest, errors, events


def _burst_rarities_kernel(
    rows: npt.NDArray[np.int64],
    bits: npt.NDArray[np.int64],
    rates: FloatArray,
    weights: FloatArray,
    bursts: FloatArray,
) -> None:
    """``bursts[row] = error_burst_rarity(bits[row], rates[row], weights[row])`` for each of
    ``rows`` (the batch's error events), in one compiled call: the Python scan cost ~5 us per
    error event. ``error_burst_scan`` and ``_predictive_tail`` inline, the same operations in the
    same order (``+ - * /`` only, no library function), so the same bits; pinned by
    tests/test_cdet_kernels.py."""
    for r in range(rows.shape[0]):
        row = rows[r]
        event_bits = bits[row]
        rate = rates[row]
        weight = weights[row]
        alpha = rate * weight
        beta = weight - alpha
        smallest = rate
        earlier = 0
        for distance in range(1, RECENT_EVENTS):
            if (event_bits >> distance) & 1:
                earlier += 1
                # _predictive_tail(earlier, distance, alpha + 1.0, beta)
                a = alpha + 1.0
                pmf = 1.0
                for j in range(distance):
                    pmf *= (beta + j) / (a + beta + j)
                tail = 0.0
                for x in range(distance):
                    pmf *= (distance - x) / (x + 1) * (x + a) / (distance - x - 1 + beta)
                    if x + 1 >= earlier:
                        tail += pmf
                tail = rate * tail
                if tail < smallest:
                    smallest = tail
        bursts[row] = SCAN_CORRECTION * smallest


_compiled_burst_rarities = compile_kernel(
    _burst_rarities_kernel,
    "void(int64[::1], int64[::1], float64[::1], float64[::1], float64[::1])",
)
_burst_rarities = _compiled_burst_rarities or _burst_rarities_kernel


class SlidingWindowDetector(Detector):
    """Three tests per event, each a tail probability under the service's normal:

    * error burst (error events only): the line is an error with the service's earlier errors
      this close (``error_burst_rarity``: a scan over the last 16 lines), against the
      service's long-run error rate and how sure that rate is;
    * latency jump: P(T >= t) for the event's log-latency z-score against the window, as
      Student's t on the window's own number of latencies (``_jump_t``);
    * latency shift: P(Z >= s) for the recent mean of the service's baseline z-scores, which
      catches a sustained slowdown whose single events are each only moderately slow (judged
      for events at least ``SHIFT_MIN_OWN_Z`` above the baseline themselves).

    The event's rarity is the smallest of each test divided by its share of the false-alarm
    budget (``BURST_SHARE`` and the two latency shares sum to 1: a weighted Bonferroni), so
    running several tests does not multiply the false-alarm rate.
    """

    name: ClassVar[str] = "sliding_window"
    method: ClassVar[str] = "Sliding window"
    kind: ClassVar[Any] = "online"
    requires: ClassVar[tuple[str, ...]] = ("timestamp", "level", "latency_ms")

    def __init__(self, window_minutes: float = 5.0, buckets: int = 60, min_events: int = 10):
        self.window_minutes = window_minutes
        self.buckets = buckets
        self.min_events = min_events

    def get_params(self) -> dict[str, Any]:
        return {
            "window_minutes": self.window_minutes,
            "buckets": self.buckets,
            "min_events": self.min_events,
        }

    def rarity(self, context: ScoringContext) -> MethodOutput:
        return self._rarity_of_batch(context)

    def _rarity_of_batch(self, context: ScoringContext) -> MethodOutput:
        window = context.window
        expected = window.expected_error_rate
        is_error = context.batch.is_error
        total = window.total.astype(np.float64)
        errors = window.errors.astype(np.float64)
        recent_errors = window.recent_errors.astype(np.float64)
        bursts = np.ones(len(is_error))
        if is_error.any():
            # Burst tests apply to error events only (a few in most batches): the scan of the
            # batch of one (``error_burst_rarity``), compiled over the error rows.
            _burst_rarities(
                np.flatnonzero(is_error),
                np.ascontiguousarray(window.recent_error_bits, dtype=np.int64),
                np.ascontiguousarray(expected, dtype=np.float64),
                np.ascontiguousarray(window.error_rate_weight, dtype=np.float64),
                bursts,
            )
        z = window.latency_zscore
        # A z-score needs min_events >= 10 latencies (NaN before), so n - 1 > 0 wherever z is
        # a number; elsewhere the quotient is discarded (errstate: the NaN rows' arithmetic).
        n = total - 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            t = z * np.sqrt((n - 1.0) / (n + 1.0))
        degrees = n - 1.0
        latency_jump = np.ones(len(z))
        # stdtr (~250 ns an event) only where its tail can be below LATENCY_JUMP_SHARE: elsewhere
        # the jump's test over its share is at least 1, which min(1, ...) below ignores, so any
        # value of at least LATENCY_JUMP_SHARE (1.0) gives the same rarity; the tail itself is
        # in no metric. A NaN z (or t) fails the test and keeps its 1.0 as np.where gave it;
        # fewer than one degree of freedom (a stdtr NaN) is always judged.
        judged = np.flatnonzero((t > JUMP_T_JUDGED_ABOVE) | (degrees < 1.0))
        if judged.size:
            latency_jump[judged] = np.where(
                np.isnan(z[judged]), 1.0, stdtr(degrees[judged], -t[judged])
            )
        shift = context.baseline.latency_shift
        # The shift speaks for events that are themselves on the slow side: once a slowdown is
        # over, a normal event must not be flagged for the memory of it.
        own_z = context.baseline.latency_z
        part_of_shift = ~np.isnan(shift) & (own_z >= SHIFT_MIN_OWN_Z)  # NaN compares False
        latency_shift = np.ones(len(shift))
        if part_of_shift.any():
            rows = np.flatnonzero(part_of_shift)
            # _shift_degrees_of_freedom on the rows' arrays.
            degrees = np.maximum(context.baseline.events_seen[rows] - 1.0, 1.0)
            latency_shift[rows] = stdtr(degrees, -shift[rows])
        smallest = np.minimum(
            bursts / BURST_SHARE,
            np.minimum(latency_jump / LATENCY_JUMP_SHARE, latency_shift / LATENCY_SHIFT_SHARE),
        )
        return MethodOutput(
            rarity=np.minimum(1.0, smallest),
            metrics={
                "error_rate": np.divide(errors, total, out=np.zeros_like(total), where=total > 0),
                "latency_zscore": z,
                "total_logs": total,
                "expected_error_rate": expected,
                "recent_errors": recent_errors,
                "latency_shift": shift,
                "error_burst_rarity": bursts,
            },
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        """``rarity`` of a batch of one (every /score) on Python floats: the same tests in the
        same arithmetic (scipy's scalar entry points call the C functions its ufuncs call), at a
        fraction of two dozen numpy calls' overhead on one value."""
        window = context.window
        baseline = context.baseline
        # item(): each 1-element column's Python value without a numpy scalar.
        total = float(window.total.item())
        expected = window.expected_error_rate.item()
        bursts = 1.0
        if context.batch.is_error.item():
            bursts = error_burst_rarity(
                window.recent_error_bits.item(), expected, window.error_rate_weight.item()
            )
        z = window.latency_zscore.item()
        if z != z:
            latency_jump = 1.0
        else:
            t, df = _jump_t(z, total)
            latency_jump = stdtr_one(df, -t)
        shift = baseline.latency_shift.item()
        # NaN compares False: no shift, or no latency of the event's own.
        part_of_shift = shift == shift and baseline.latency_z.item() >= SHIFT_MIN_OWN_Z
        latency_shift = (
            stdtr_one(_shift_degrees_of_freedom(float(baseline.events_seen.item())), -shift)
            if part_of_shift
            else 1.0
        )
        smallest = min(
            bursts / BURST_SHARE,
            min(latency_jump / LATENCY_JUMP_SHARE, latency_shift / LATENCY_SHIFT_SHARE),
        )
        return one_output(
            (
                min(1.0, smallest),
                {
                    "error_rate": float(window.errors.item()) / total if total > 0 else 0.0,
                    "latency_zscore": z,
                    "total_logs": total,
                    "expected_error_rate": expected,
                    "recent_errors": float(window.recent_errors.item()),
                    "latency_shift": shift,
                    "error_burst_rarity": bursts,
                },
            )
        )
