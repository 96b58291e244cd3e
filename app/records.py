"""Per-service latency range, learned online: does an event break out of everything seen so far?

The "spatial anomaly" that Numenta's HTM detector for the Numenta Anomaly Benchmark adds to its
temporal model (numenta/NAB, detector ``numenta``; published there as a tolerance of 5% of the
range): a value outside ``[low - t * span, high + t * span]``, where ``low`` and ``high`` are the
smallest and largest values the stream has shown and ``span = high - low``, is anomalous however
its time of day or recent context looks. Implemented here from that description, on latency in
milliseconds (not its log, so the tolerance is a share of the range the service has really
shown, whatever its units; the map of a NAB series onto latencies is affine, so this is the
same test on the series' own values).

Why a method of its own: the forecast and the likelihood judge a residual against a spread that
a spiky service teaches them to be wide, and the recalibration learns that a spiky service's
"one in a million" happens daily, so a latency far above every spike the service ever made can
still score below the alarm. The range has no such memory of spread: it is broken only by
something larger than everything before.

The rarity of a breakout is ``1 / (seen + 1) ** 2``. ``1 / (seen + 1)`` is the chance, with the
service's ``seen`` earlier latencies and this one exchangeable, that this one is the largest
(or the smallest); squared for the margin beyond the range (a breakout by ``RECORD_TOLERANCE``
of the range is far rarer than a new record by a hair, which is not judged at all). So a young
service's breakout counts less than an old one's. The method is not recalibrated: each breakout
widens the range, so the same breakout cannot happen twice, and a service can break out only
about ``log(growth of its range) / log(1 + RECORD_TOLERANCE)`` times in its life (a trending
service, whose range keeps growing, is the exception the forecast and the repeats rule are for).

Cost: one compiled pass per batch, three floats per service.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.compiled import compile_kernel, unchecked
from app.events import EventBatch
from app.service_states import RowStore

FloatArray = npt.NDArray[np.float64]

# A breakout must clear the range by this share of it (HTM's NAB detector uses 5%; the value
# was taken from there, not tuned: docs/evaluation.md has 2% and 10% for comparison).
RECORD_TOLERANCE = 0.05
# Latencies that establish the range before it judges: a heavy-tailed service's range from a
# few hundred events is broken by ordinary noise (new records after n exchangeable values come at
# a rate of 1/n). On the synthetic stream (seed 7), 9 of the 11 breakouts of normal services that
# no other method flagged came before a service's 1,000th latency; NAB is flat from 150 to 1,000
# (docs/evaluation.md, branch nab6).
RECORD_MIN_EVENTS = 1000

_SEEN, _LOW, _HIGH = range(3)
_SCALARS = 3


class RecordView(NamedTuple):
    # How far beyond the range the latency falls, as a share of the range (> 0 outside it,
    # the larger of the two sides); NaN while the service has no range yet or no latency.
    margin: FloatArray
    rarity: FloatArray  # 1 unless the margin exceeds RECORD_TOLERANCE
    low_ms: FloatArray  # the range before the event
    high_ms: FloatArray


def _observe_kernel(
    codes: npt.NDArray[np.int64],
    latency: FloatArray,
    state: FloatArray,
    out: FloatArray,
    tolerance: float,
    min_events: float,
) -> None:
    """Judge each event against its service's range, then widen the range, in order.
    Compiled by numba (``app.compiled``); as plain Python the same arithmetic."""
    for i in range(codes.shape[0]):
        s = codes[i]
        fresh = s < 0
        if fresh:
            s = ~s  # the row's first event for this service (ServiceSlots.row_codes)
        row = state[s]
        if fresh:
            row[_SEEN] = 0.0
            row[_LOW] = math.inf
            row[_HIGH] = -math.inf
        out[0, i] = math.nan
        out[1, i] = 1.0
        out[2, i] = row[_LOW]
        out[3, i] = row[_HIGH]
        value = latency[i]
        if value != value:
            continue
        seen = row[_SEEN]
        span = row[_HIGH] - row[_LOW]
        if seen >= min_events and span > 0.0:
            margin = max(value - row[_HIGH], row[_LOW] - value) / span
            out[0, i] = margin
            if margin > tolerance:
                out[1, i] = 1.0 / ((seen + 1.0) * (seen + 1.0))
        row[_LOW] = min(row[_LOW], value)
        row[_HIGH] = max(row[_HIGH], value)
        row[_SEEN] = seen + 1.0


_compiled_observe = compile_kernel(
    _observe_kernel,
    "void(int64[::1], float64[::1], float64[:, ::1], float64[:, ::1], float64, float64)",
)
_observe = _compiled_observe or _observe_kernel
# The one-event path's call: its arguments are the store's own arrays and the batch's float64
# columns, exactly the signature's (``unchecked``).
_observe_one = unchecked(_observe)


class RecordStore(RowStore):
    """The latency range of at most ``max_services`` services (least recently seen evicted)."""

    def __init__(
        self,
        max_services: int = 100_000,
        tolerance: float = RECORD_TOLERANCE,
        min_events: int = RECORD_MIN_EVENTS,
    ) -> None:
        super().__init__(max_services, (_SCALARS,))
        self.tolerance = tolerance
        self.min_events = min_events
        # ``observe_one``'s output and its view of it, made once: the kernel overwrites it each
        # call (an array and a view made per event cost as much as the kernel).
        self._one_out = out = np.empty((4, 1))
        self._one_view = RecordView(out[0], out[1], out[2], out[3])

    def observe(self, batch: EventBatch) -> RecordView:
        codes = self.row_codes(batch.services)
        out = np.empty((4, len(batch)))
        _observe(
            codes,
            np.ascontiguousarray(batch.latency_ms, dtype=np.float64),
            self.rows[0],
            out,
            self.tolerance,
            float(self.min_events),
        )
        return RecordView(out[0], out[1], out[2], out[3])

    def observe_one(self, batch: EventBatch) -> RecordView:
        """``observe`` of a batch of one (the engine's one-event path): the same kernel on the
        same row, its row code in the store's reused array rather than a new one. The view is
        the store's own, valid until its next ``observe_one`` (the engine reads it before)."""
        codes = self.code_of_one(batch.services[0])
        latency = batch.latency_ms
        if not latency.flags.c_contiguous:  # a column of a wider array (score_columns)
            latency = np.ascontiguousarray(latency)
        _observe_one(
            codes, latency, self.rows[0], self._one_out, self.tolerance, float(self.min_events)
        )
        return self._one_view
