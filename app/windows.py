"""Per-service sliding windows over event time, kept as buckets of aggregates.

A window of W seconds is B buckets of W/B seconds. Each bucket holds count, errors and latency
sums (raw and log), min and max: O(1) work per event and a fixed ~B*9*8 bytes per service, however
busy it is. Running totals are updated as buckets enter and leave, so reading a window is O(1);
min and max, which cannot be un-added, are read from the buckets only when /stats asks.

Each service also keeps a long-run error rate with an event-time half-life (much longer than the
window), the baseline an error burst is judged against, and the error flags of its last
``RECENT_EVENTS`` events as the bits of one integer (the sliding window's burst scan reads where
the errors among them fall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.baselines import MIN_LOG_SCALE
from app.compiled import TWO, compile_kernel, unchecked
from app.events import EventBatch
from app.service_states import RowStore

FloatArray = npt.NDArray[np.float64]

# Each service is one row of two arrays, indexed by its slot (``ServiceSlots``): its buckets,
# field by field (B doubles per field: one allocation for all services, no per-float Python
# objects, ~4.4 KB per service with the default 60 buckets), and its running totals.
_ID, _COUNT, _ERRORS, _LAT_N, _LAT_SUM, _LOG_SUM, _LOG_SUMSQ, _LAT_MIN, _LAT_MAX = range(9)
_FIELDS = 9
_EMPTY = -1.0
(
    _HEAD,  # newest bucket id (a float: exact below 2**53)
    _TOTAL,
    _TOTAL_ERRORS,
    _TOTAL_LAT_N,
    _TOTAL_LAT_SUM,
    _TOTAL_LOG_SUM,
    _TOTAL_LOG_SUMSQ,
    _HISTORY_EVENTS,
    _HISTORY_ERRORS,
    _HISTORY_TIME,
    _NEWEST_TIME,
    _RECENT_ERRORS,  # the last RECENT_EVENTS error flags as the bits of an integer
    _RECENT_SEEN,
) = range(13)
_SCALARS = 13
_NO_HEAD = -float(2**62)
# Rows of the kernel's integer output, in the order of WindowView's integer fields.
_OUT_TOTAL, _OUT_ERRORS, _OUT_RECENT_TOTAL, _OUT_RECENT_ERRORS, _OUT_RECENT_BITS = range(5)
_OUT_ROWS = 5

# Prior for the long-run error rate of a service: Jeffreys' Beta(1/2, 1/2) (half an error in one
# event). After n clean lines the next line errs with probability 1/2 / (n + 1), not 0.1 / (n + 10):
# the old prior (1% with the weight of 10 events, most of its mass near 0) judged a service's
# first error after 200 clean lines a 1-in-2,000 event, although a 1% service has no error in
# 200 lines one time in seven (synthetic seeds 4 and 5: a first `reports` or `batch-export` error
# flagged). Error rates are unknown a priori: the non-informative prior says so. NAB (no errors)
# and BGL (F1 0.721, 93 TP, 56 FP) are unchanged (docs/evaluation.md, branch `seeds`).
PRIOR_ERRORS = 0.5
PRIOR_EVENTS = 1.0
# The last RECENT_EVENTS error flags of a service, as bits of one int: a burst shows within a few
# events here, long before it moves the rate of a busy service's whole window.
RECENT_EVENTS = 16
_RECENT_MASK = (1 << RECENT_EVENTS) - 1


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class WindowView(NamedTuple):
    """Each event's service window, read as the event arrived (the event itself included in
    counts and errors, excluded from the latency mean and spread it is compared with)."""

    total: npt.NDArray[np.int64]
    errors: npt.NDArray[np.int64]
    expected_error_rate: FloatArray
    latency_zscore: FloatArray  # NaN: no latency, or too few latencies in the window yet
    in_window: npt.NDArray[np.bool_]  # False: the event is older than the window's span
    recent_total: npt.NDArray[np.int64]  # the service's last few events, this one included
    recent_errors: npt.NDArray[np.int64]
    # The error flags of those events: bit d is the event d events back (bit 0 this one).
    recent_error_bits: npt.NDArray[np.int64]
    # The events (decayed, prior included) behind expected_error_rate: how sure it is.
    error_rate_weight: FloatArray


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    total: int
    errors: int
    avg_latency: float | None
    min_latency: float | None
    max_latency: float | None
    window_end: float | None


def _observe_kernel(
    codes: npt.NDArray[np.int64],
    times: FloatArray,
    latency_ms: FloatArray,
    log_latency: FloatArray,
    is_error: npt.NDArray[np.bool_],
    state: FloatArray,
    buckets: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    rates: FloatArray,
    in_window: npt.NDArray[np.bool_],
    bucket_seconds: float,
    min_events: int,
    halflife: float,
    two: float,
) -> None:
    """Read each event's window, then count the event in, in order: ``counts`` gets the integer
    fields of ``WindowView`` (rows ``_OUT_*``), ``rates`` the expected error rate, the latency
    z-score and the weight of the error rate. Compiled by numba (see ``app.compiled``); as plain
    Python it is the same arithmetic in the same order as the per-service objects it replaced."""
    n_buckets = buckets.shape[2]
    for i in range(codes.shape[0]):
        s = codes[i]
        fresh = s < 0
        if fresh:
            s = ~s  # the row's first event for this service (ServiceSlots.row_codes)
        row = state[s]
        b = buckets[s]
        if fresh:
            row[:] = 0.0
            row[_HEAD] = _NO_HEAD
            row[_HISTORY_TIME] = -math.inf
            row[_NEWEST_TIME] = -math.inf
            b[:, :] = 0.0
            b[_ID, :] = _EMPTY
        now = times[i]
        bucket_id = math.floor(now / bucket_seconds)
        # Move the window's head to bucket_id, retiring buckets that fall out of it.
        head = int(row[_HEAD])
        if bucket_id > head:
            if bucket_id - head >= n_buckets:
                b[:, :] = 0.0
                b[_ID, :] = _EMPTY
                row[_TOTAL] = row[_TOTAL_ERRORS] = row[_TOTAL_LAT_N] = 0.0
                row[_TOTAL_LAT_SUM] = row[_TOTAL_LOG_SUM] = row[_TOTAL_LOG_SUMSQ] = 0.0
            else:
                for new_id in range(head + 1, bucket_id + 1):
                    slot = new_id % n_buckets
                    if b[_COUNT, slot] > 0:
                        row[_TOTAL] -= b[_COUNT, slot]
                        row[_TOTAL_ERRORS] -= b[_ERRORS, slot]
                        row[_TOTAL_LAT_N] -= b[_LAT_N, slot]
                        row[_TOTAL_LAT_SUM] -= b[_LAT_SUM, slot]
                        row[_TOTAL_LOG_SUM] -= b[_LOG_SUM, slot]
                        row[_TOTAL_LOG_SUMSQ] -= b[_LOG_SUMSQ, slot]
                        for field in range(_COUNT, _FIELDS):
                            b[field, slot] = 0.0
                    b[_ID, slot] = new_id
                if row[_TOTAL_LAT_N] == 0:
                    # Subtraction leaves rounding dust; an empty window restarts from exact zeros.
                    row[_TOTAL_LAT_SUM] = row[_TOTAL_LOG_SUM] = row[_TOTAL_LOG_SUMSQ] = 0.0
            head = bucket_id
            row[_HEAD] = head
        rates[0, i] = (row[_HISTORY_ERRORS] + PRIOR_ERRORS) / (row[_HISTORY_EVENTS] + PRIOR_EVENTS)
        rates[2, i] = row[_HISTORY_EVENTS] + PRIOR_EVENTS
        rates[1, i] = math.nan
        log_value = log_latency[i]
        lat_n = row[_TOTAL_LAT_N]
        if lat_n >= min_events and log_value == log_value:
            mean = row[_TOTAL_LOG_SUM] / lat_n
            variance = max(row[_TOTAL_LOG_SUMSQ] / lat_n - mean * mean, 0.0)
            spread = max(math.sqrt(variance), MIN_LOG_SCALE)
            rates[1, i] = (log_value - mean) / spread
        # Count the event into its bucket, unless it is older than the whole window.
        error = is_error[i]
        if bucket_id <= head - n_buckets:
            in_window[i] = False
        else:
            in_window[i] = True
            slot = bucket_id % n_buckets
            b[_COUNT, slot] += 1.0
            row[_TOTAL] += 1.0
            if error:
                b[_ERRORS, slot] += 1.0
                row[_TOTAL_ERRORS] += 1.0
            value = latency_ms[i]
            if value == value:  # not NaN
                b[_LAT_N, slot] += 1.0
                b[_LAT_SUM, slot] += value
                b[_LOG_SUM, slot] += log_value
                b[_LOG_SUMSQ, slot] += log_value * log_value
                count_before = b[_LAT_N, slot] - 1.0
                if count_before == 0 or value < b[_LAT_MIN, slot]:
                    b[_LAT_MIN, slot] = value
                if count_before == 0 or value > b[_LAT_MAX, slot]:
                    b[_LAT_MAX, slot] = value
                row[_TOTAL_LAT_N] += 1.0
                row[_TOTAL_LAT_SUM] += value
                row[_TOTAL_LOG_SUM] += log_value
                row[_TOTAL_LOG_SUMSQ] += log_value * log_value
        # The long-run error rate, and the last few error flags.
        bits = ((int(row[_RECENT_ERRORS]) << 1) | int(error)) & _RECENT_MASK
        row[_RECENT_ERRORS] = bits
        row[_RECENT_SEEN] = min(row[_RECENT_SEEN] + 1.0, RECENT_EVENTS)
        if now > row[_HISTORY_TIME]:
            if row[_HISTORY_TIME] > -math.inf:
                decay = two ** (-(now - row[_HISTORY_TIME]) / halflife)
                row[_HISTORY_EVENTS] *= decay
                row[_HISTORY_ERRORS] *= decay
            row[_HISTORY_TIME] = now
        row[_HISTORY_EVENTS] += 1.0
        if error:
            row[_HISTORY_ERRORS] += 1.0
        row[_NEWEST_TIME] = max(row[_NEWEST_TIME], now)
        set_bits = 0
        while bits:
            set_bits += bits & 1
            bits >>= 1
        counts[_OUT_TOTAL, i] = int(row[_TOTAL])
        counts[_OUT_ERRORS, i] = int(row[_TOTAL_ERRORS])
        counts[_OUT_RECENT_TOTAL, i] = int(row[_RECENT_SEEN])
        counts[_OUT_RECENT_ERRORS, i] = set_bits
        counts[_OUT_RECENT_BITS, i] = int(row[_RECENT_ERRORS])


_compiled_observe = compile_kernel(
    _observe_kernel,
    "void(int64[::1], float64[:], float64[:], float64[:], boolean[:],"
    " float64[:, ::1], float64[:, :, ::1], int64[:, ::1], float64[:, ::1], boolean[::1],"
    " float64, int64, float64, float64)",
)
_observe = _compiled_observe or _observe_kernel
# The one-event path's call: its arguments are the store's own arrays and the batch's float64
# columns, exactly the signature's (``unchecked``).
_observe_one = unchecked(_observe)


class WindowStore(RowStore):
    """Windows of at most ``max_services`` services, least recently seen evicted first."""

    def __init__(
        self,
        window_seconds: float,
        n_buckets: int,
        min_events: int,
        halflife_seconds: float,
        max_services: int,
    ) -> None:
        super().__init__(max_services, (_SCALARS,), (_FIELDS, n_buckets))
        self.window_seconds = window_seconds
        self.n_buckets = n_buckets
        self.bucket_seconds = window_seconds / n_buckets
        self.min_events = min_events
        self.halflife = halflife_seconds
        # ``observe_one``'s outputs and its view of them, made once: the kernel overwrites them
        # each call (three arrays and a view of nine slices made per event cost more than it).
        self._one_counts = np.empty((_OUT_ROWS, 1), dtype=np.int64)
        self._one_rates = np.empty((3, 1))
        self._one_in_window = np.empty(1, dtype=np.bool_)
        counts, rates = self._one_counts, self._one_rates
        self._one_view = WindowView(
            counts[_OUT_TOTAL], counts[_OUT_ERRORS], rates[0], rates[1], self._one_in_window,
            counts[_OUT_RECENT_TOTAL], counts[_OUT_RECENT_ERRORS], counts[_OUT_RECENT_BITS],
            rates[2],
        )  # fmt: skip

    def observe(self, batch: EventBatch) -> WindowView:
        """Read each event's window, then count the event in: sequential, in batch order."""
        n = len(batch)
        codes = self.row_codes(batch.services)
        state, buckets = self.rows
        counts = np.empty((_OUT_ROWS, n), dtype=np.int64)
        rates = np.empty((3, n))
        in_window = np.empty(n, dtype=np.bool_)
        _observe(
            codes,
            batch.timestamps,
            batch.latency_ms,
            batch.log_latency,
            batch.is_error,
            state,
            buckets,
            counts,
            rates,
            in_window,
            self.bucket_seconds,
            self.min_events,
            self.halflife,
            TWO,
        )
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        return WindowView(
            counts[_OUT_TOTAL],
            counts[_OUT_ERRORS],
            rates[0],
            rates[1],
            in_window,
            counts[_OUT_RECENT_TOTAL],
            counts[_OUT_RECENT_ERRORS],
            counts[_OUT_RECENT_BITS],
            rates[2],
        )

    def observe_one(self, batch: EventBatch) -> WindowView:
        """``observe`` of a batch of one (the engine's one-event path): the same kernel on the
        same row, its row code in the store's reused array rather than a new one. The view is
        the store's own, valid until its next ``observe_one`` (the engine reads it before)."""
        codes = self.code_of_one(batch.services[0])
        state, buckets = self.rows
        _observe_one(
            codes, batch.timestamps, batch.latency_ms, batch.log_latency, batch.is_error, state,
            buckets, self._one_counts, self._one_rates, self._one_in_window, self.bucket_seconds,
            self.min_events, self.halflife, TWO,
        )  # fmt: skip
        return self._one_view

    def running_sums(self, service: str) -> tuple[float, float, float] | None:
        """The service's window totals of latency, log latency and its square; None if never
        seen (what the z-scores are computed from)."""
        slot = self.services.get(service)
        if slot is None:
            return None
        row = self.rows[0][slot]
        return (
            float(row[_TOTAL_LAT_SUM]),
            float(row[_TOTAL_LOG_SUM]),
            float(row[_TOTAL_LOG_SUMSQ]),
        )

    def snapshot(self, service: str) -> WindowSnapshot | None:
        """The service's current window (ending at its newest event time); None if never seen."""
        slot = self.services.get(service)
        if slot is None:
            return None
        row = self.rows[0][slot].tolist()
        b = self.rows[1][slot]
        with_latency = b[_LAT_N] > 0
        lat_n = int(row[_TOTAL_LAT_N])
        return WindowSnapshot(
            total=int(row[_TOTAL]),
            errors=int(row[_TOTAL_ERRORS]),
            avg_latency=row[_TOTAL_LAT_SUM] / lat_n if lat_n else None,
            min_latency=float(b[_LAT_MIN][with_latency].min()) if with_latency.any() else None,
            max_latency=float(b[_LAT_MAX][with_latency].max()) if with_latency.any() else None,
            window_end=row[_NEWEST_TIME] if row[_NEWEST_TIME] > -math.inf else None,
        )
