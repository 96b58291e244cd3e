"""Sliding-window detector: error bursts and latency jumps against the service's recent past."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import bdtrc, ndtr
from scipy.special.cython_special import bdtrc as bdtrc_one
from scipy.special.cython_special import ndtr as ndtr_one

from app.detectors.base import Detector, MethodOutput, ScoringContext

# An event counts towards a sustained slowdown only if it is itself this slow (baseline z-score).
SHIFT_MIN_OWN_Z = 1.0


class SlidingWindowDetector(Detector):
    """Four tests per event, each an exact tail probability under the service's normal:

    * error burst in the window (error events only): P(at least k errors among the window's n
      events) under the service's long-run error rate, a binomial tail;
    * error burst among the service's last 16 events, the same test on a short horizon, which
      sees a burst within a few events even in a busy service;
    * latency jump: P(Z >= z) for the event's log-latency z-score against the window;
    * latency shift: P(Z >= s) for the recent mean of the service's baseline z-scores, which
      catches a sustained slowdown whose single events are each only moderately slow (judged
      for events at least ``SHIFT_MIN_OWN_Z`` above the baseline themselves).

    The event's rarity is the smallest of the four times four (Bonferroni), so running several
    tests does not multiply the false-alarm rate.
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
        if len(context.batch) == 1:
            return self._rarity_of_one(context)
        return self._rarity_of_batch(context)

    def _rarity_of_batch(self, context: ScoringContext) -> MethodOutput:
        window = context.window
        expected = window.expected_error_rate
        is_error = context.batch.is_error
        total = window.total.astype(np.float64)
        errors = window.errors.astype(np.float64)
        recent_errors = window.recent_errors.astype(np.float64)
        if is_error.any():
            window_burst = np.where(
                # An error burst needs another error among the service's last few events:
                # without one the burst is over, and the window only remembers it.
                is_error & window.in_window & (errors > 0) & (window.recent_errors >= 2),
                # n must be an integer array: scipy deprecates (and, as an error, fails on) float n.
                bdtrc(np.maximum(errors - 1.0, 0.0), window.total, expected),
                1.0,
            )
            recent_burst = np.where(
                is_error & (recent_errors > 0),
                bdtrc(np.maximum(recent_errors - 1.0, 0.0), window.recent_total, expected),
                1.0,
            )
            bursts = np.minimum(window_burst, recent_burst)
        else:
            # Burst tests apply to error events only; skipping them for a batch without one
            # saves two binomial tails for most single events.
            bursts = np.ones(len(is_error))
        z = window.latency_zscore
        # ndtr(NaN) is NaN, which np.where discards: no nan_to_num (a slow call) needed.
        latency_jump = np.where(np.isnan(z), 1.0, ndtr(-z))
        shift = context.baseline.latency_shift
        # The shift speaks for events that are themselves on the slow side: once a slowdown is
        # over, a normal event must not be flagged for the memory of it.
        own_z = context.baseline.latency_z
        part_of_shift = ~np.isnan(shift) & (own_z >= SHIFT_MIN_OWN_Z)  # NaN compares False
        latency_shift = np.where(part_of_shift, ndtr(-shift), 1.0)
        smallest = np.minimum(bursts, np.minimum(latency_jump, latency_shift))
        return MethodOutput(
            rarity=np.minimum(1.0, 4.0 * smallest),
            metrics={
                "error_rate": np.divide(errors, total, out=np.zeros_like(total), where=total > 0),
                "latency_zscore": z,
                "total_logs": total,
                "expected_error_rate": expected,
                "recent_errors": recent_errors,
                "latency_shift": shift,
            },
        )

    def _rarity_of_one(self, context: ScoringContext) -> MethodOutput:
        """``_rarity_of_batch`` for the batch of one of every /score, on Python floats: the same
        tests in the same arithmetic (scipy's scalar entry points call the C functions its
        ufuncs call), at a fraction of two dozen numpy calls' overhead on one value."""
        window = context.window
        baseline = context.baseline
        total = float(window.total[0])
        errors = float(window.errors[0])
        recent_errors = float(window.recent_errors[0])
        expected = float(window.expected_error_rate[0])
        bursts = 1.0
        if context.batch.is_error[0]:
            # As in the batch path: a window burst needs another recent error.
            if window.in_window[0] and errors > 0 and recent_errors >= 2:
                bursts = bdtrc_one(max(errors - 1.0, 0.0), int(window.total[0]), expected)
            if recent_errors > 0:
                recent = bdtrc_one(
                    max(recent_errors - 1.0, 0.0), int(window.recent_total[0]), expected
                )
                bursts = min(bursts, recent)
        z = float(window.latency_zscore[0])
        latency_jump = 1.0 if z != z else ndtr_one(-z)
        shift = float(baseline.latency_shift[0])
        # NaN compares False: no shift, or no latency of the event's own.
        part_of_shift = shift == shift and baseline.latency_z[0] >= SHIFT_MIN_OWN_Z
        latency_shift = ndtr_one(-shift) if part_of_shift else 1.0
        smallest = min(bursts, min(latency_jump, latency_shift))
        rarity, error_rate, total_logs, recent = np.array(
            [[min(1.0, 4.0 * smallest)], [errors / total if total > 0 else 0.0], [total],
             [recent_errors]]
        )  # fmt: skip
        return MethodOutput(
            rarity=rarity,
            metrics={
                "error_rate": error_rate,
                "latency_zscore": window.latency_zscore,
                "total_logs": total_logs,
                "expected_error_rate": window.expected_error_rate,
                "recent_errors": recent,
                "latency_shift": baseline.latency_shift,
            },
        )
