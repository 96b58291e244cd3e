"""Per-service sliding windows over event time, kept as buckets of aggregates.

A window of W seconds is B buckets of W/B seconds. Each bucket holds count, errors and latency
sums (raw and log), min and max: O(1) work per event and a fixed ~B*9*8 bytes per service, however
busy it is. Running totals are updated as buckets enter and leave, so reading a window is O(1);
min and max, which cannot be un-added, are read from the buckets only when /stats asks.

Each service also keeps a long-run error rate with an event-time half-life (much longer than the
window), the baseline an error burst in the window is judged against.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from app.baselines import MIN_LOG_SCALE
from app.events import EventBatch
from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]

# Bucket fields, each a run of B doubles in one flat array per service (one allocation, no
# per-float Python objects: ~4.4 KB per service with the default 60 buckets).
_ID, _COUNT, _ERRORS, _LAT_N, _LAT_SUM, _LOG_SUM, _LOG_SUMSQ, _LAT_MIN, _LAT_MAX = range(9)
_FIELDS = 9
_EMPTY = -1.0

# Prior for the long-run error rate of a new service: 1% with the weight of 10 events, so a
# service's first error is not an error burst and a few of its first events settle its own rate.
PRIOR_ERRORS = 0.5  # Jeffreys, as app.windows (branch seeds)
PRIOR_EVENTS = 1.0
# The last RECENT_EVENTS error flags of a service, as bits of one int: a burst shows within a few
# events here, long before it moves the rate of a busy service's whole window.
RECENT_EVENTS = 16
_RECENT_MASK = (1 << RECENT_EVENTS) - 1


class ServiceWindow:
    __slots__ = (
        "buckets",
        "errors",
        "head",
        "history_errors",
        "history_events",
        "history_time",
        "lat_n",
        "lat_sum",
        "log_sum",
        "log_sumsq",
        "newest_time",
        "recent_errors",
        "recent_seen",
        "total",
    )

    def __init__(self, n_buckets: int) -> None:
        self.buckets = array("d", [0.0]) * (n_buckets * _FIELDS)
        for slot in range(n_buckets):
            self.buckets[_ID * n_buckets + slot] = _EMPTY
        self.head = -(2**62)  # newest bucket id; nothing seen yet
        self.total = 0
        self.errors = 0
        self.lat_n = 0
        self.lat_sum = 0.0
        self.log_sum = 0.0
        self.log_sumsq = 0.0
        self.history_events = 0.0
        self.history_errors = 0.0
        self.history_time = -math.inf
        self.newest_time = -math.inf
        self.recent_errors = 0
        self.recent_seen = 0

    def advance(self, bucket_id: int, n_buckets: int) -> None:
        """Move the window's head to ``bucket_id``, retiring buckets that fall out of it."""
        if bucket_id <= self.head:
            return
        b = self.buckets
        if bucket_id - self.head >= n_buckets:
            for slot in range(n_buckets):
                b[_ID * n_buckets + slot] = _EMPTY
                for field in range(_COUNT, _FIELDS):
                    b[field * n_buckets + slot] = 0.0
            self.total = self.errors = self.lat_n = 0
            self.lat_sum = self.log_sum = self.log_sumsq = 0.0
        else:
            for new_id in range(self.head + 1, bucket_id + 1):
                slot = new_id % n_buckets
                if b[_COUNT * n_buckets + slot] > 0:
                    self.total -= int(b[_COUNT * n_buckets + slot])
                    self.errors -= int(b[_ERRORS * n_buckets + slot])
                    self.lat_n -= int(b[_LAT_N * n_buckets + slot])
                    self.lat_sum -= b[_LAT_SUM * n_buckets + slot]
                    self.log_sum -= b[_LOG_SUM * n_buckets + slot]
                    self.log_sumsq -= b[_LOG_SUMSQ * n_buckets + slot]
                    for field in range(_COUNT, _FIELDS):
                        b[field * n_buckets + slot] = 0.0
                b[_ID * n_buckets + slot] = float(new_id)
            if self.lat_n == 0:
                # Subtraction leaves rounding dust; an empty window restarts from exact zeros.
                self.lat_sum = self.log_sum = self.log_sumsq = 0.0
        self.head = bucket_id

    def add(
        self,
        bucket_id: int,
        n_buckets: int,
        is_error: bool,
        latency: float,
        log_latency: float,
    ) -> bool:
        """Count one event into its bucket; False when it is older than the whole window."""
        if bucket_id <= self.head - n_buckets:
            return False
        b = self.buckets
        slot = bucket_id % n_buckets
        b[_COUNT * n_buckets + slot] += 1.0
        self.total += 1
        if is_error:
            b[_ERRORS * n_buckets + slot] += 1.0
            self.errors += 1
        if latency == latency:  # not NaN
            b[_LAT_N * n_buckets + slot] += 1.0
            b[_LAT_SUM * n_buckets + slot] += latency
            b[_LOG_SUM * n_buckets + slot] += log_latency
            b[_LOG_SUMSQ * n_buckets + slot] += log_latency * log_latency
            count_before = b[_LAT_N * n_buckets + slot] - 1.0
            if count_before == 0 or latency < b[_LAT_MIN * n_buckets + slot]:
                b[_LAT_MIN * n_buckets + slot] = latency
            if count_before == 0 or latency > b[_LAT_MAX * n_buckets + slot]:
                b[_LAT_MAX * n_buckets + slot] = latency
            self.lat_n += 1
            self.lat_sum += latency
            self.log_sum += log_latency
            self.log_sumsq += log_latency * log_latency
        return True

    def learn_error_rate(self, is_error: bool, event_time: float, halflife: float) -> None:
        self.recent_errors = ((self.recent_errors << 1) | int(is_error)) & _RECENT_MASK
        self.recent_seen = min(self.recent_seen + 1, RECENT_EVENTS)
        if event_time > self.history_time:
            if self.history_time > -math.inf:
                decay = 2.0 ** (-(event_time - self.history_time) / halflife)
                self.history_events *= decay
                self.history_errors *= decay
            self.history_time = event_time
        self.history_events += 1.0
        if is_error:
            self.history_errors += 1.0

    @property
    def expected_error_rate(self) -> float:
        return (self.history_errors + PRIOR_ERRORS) / (self.history_events + PRIOR_EVENTS)

    def latency_extremes(self, n_buckets: int) -> tuple[float | None, float | None]:
        b = self.buckets
        lows = [
            b[_LAT_MIN * n_buckets + s] for s in range(n_buckets) if b[_LAT_N * n_buckets + s] > 0
        ]
        highs = [
            b[_LAT_MAX * n_buckets + s] for s in range(n_buckets) if b[_LAT_N * n_buckets + s] > 0
        ]
        return (min(lows), max(highs)) if lows else (None, None)


@dataclass(frozen=True, slots=True)
class WindowView:
    """Each event's service window, read as the event arrived (the event itself included in
    counts and errors, excluded from the latency mean and spread it is compared with)."""

    total: npt.NDArray[np.int64]
    errors: npt.NDArray[np.int64]
    expected_error_rate: FloatArray
    latency_zscore: FloatArray  # NaN: no latency, or too few latencies in the window yet
    in_window: npt.NDArray[np.bool_]  # False: the event is older than the window's span
    recent_total: npt.NDArray[np.int64]  # the service's last few events, this one included
    recent_errors: npt.NDArray[np.int64]
    recent_error_bits: npt.NDArray[np.int64]  # bit d: the event d events back was an error
    error_rate_weight: FloatArray  # the decayed events behind expected_error_rate, prior included


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    total: int
    errors: int
    avg_latency: float | None
    min_latency: float | None
    max_latency: float | None
    window_end: float | None


class WindowStore(ServiceStates[ServiceWindow]):
    """Windows of at most ``max_services`` services, least recently seen evicted first."""

    def __init__(
        self,
        window_seconds: float,
        n_buckets: int,
        min_events: int,
        halflife_seconds: float,
        max_services: int,
    ) -> None:
        super().__init__(partial(ServiceWindow, n_buckets), max_services)
        self.window_seconds = window_seconds
        self.n_buckets = n_buckets
        self.bucket_seconds = window_seconds / n_buckets
        self.min_events = min_events
        self.halflife = halflife_seconds

    def observe(self, batch: EventBatch) -> WindowView:
        """Read each event's window, then count the event in: sequential, in batch order."""
        n = len(batch)
        # One allocation per dtype: per-call cost matters for the batch of one of every /score.
        total, errors, recent_total, recent_errors, recent_bits = np.zeros((5, n), dtype=np.int64)
        weight = np.zeros(n)
        expected, zscore = np.full((2, n), np.nan)  # every expected[i] is set below
        in_window = np.ones(n, dtype=np.bool_)
        n_buckets = self.n_buckets
        latencies = batch.latency_ms.tolist()
        log_latencies = batch.log_latency.tolist()
        times = batch.timestamps.tolist()
        error_flags = batch.is_error.tolist()
        for i, window in enumerate(self.states_for(batch.services)):
            bucket_id = math.floor(times[i] / self.bucket_seconds)
            window.advance(bucket_id, n_buckets)
            expected[i] = window.expected_error_rate
            weight[i] = window.history_events + PRIOR_EVENTS
            log_latency = log_latencies[i]
            if window.lat_n >= self.min_events and log_latency == log_latency:
                mean = window.log_sum / window.lat_n
                variance = max(window.log_sumsq / window.lat_n - mean * mean, 0.0)
                spread = max(math.sqrt(variance), MIN_LOG_SCALE)
                zscore[i] = (log_latency - mean) / spread
            in_window[i] = window.add(
                bucket_id, n_buckets, error_flags[i], latencies[i], log_latency
            )
            window.learn_error_rate(error_flags[i], times[i], self.halflife)
            window.newest_time = max(window.newest_time, times[i])
            recent_total[i] = window.recent_seen
            recent_errors[i] = window.recent_errors.bit_count()
            recent_bits[i] = window.recent_errors
            total[i] = window.total
            errors[i] = window.errors
        return WindowView(
            total, errors, expected, zscore, in_window, recent_total, recent_errors, recent_bits,
            weight,
        )  # fmt: skip

    def snapshot(self, service: str) -> WindowSnapshot | None:
        """The service's current window (ending at its newest event time); None if never seen."""
        window = self.get(service)
        if window is None:
            return None
        low, high = window.latency_extremes(self.n_buckets)
        return WindowSnapshot(
            total=window.total,
            errors=window.errors,
            avg_latency=window.lat_sum / window.lat_n if window.lat_n else None,
            min_latency=low,
            max_latency=high,
            window_end=window.newest_time if window.newest_time > -math.inf else None,
        )
