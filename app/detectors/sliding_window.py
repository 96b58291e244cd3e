"""Sliding-window detector: error bursts and latency jumps against the service's recent past."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import bdtrc, ndtr

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
