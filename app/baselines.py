"""Per-service latency baselines: what "normal" latency is for each service, learned as it goes.

Services differ by orders of magnitude in normal latency, so every latency feature is relative to
the service's own baseline, kept on ``log(1 + latency_ms)``, where latencies are close to normal.

A baseline starts with a short warm-up (the first ``warmup`` latencies, summarised by median and
MAD, which one wild value cannot drag), then follows the service with a time-decayed, outlier-
clipped mean and variance. The decay is in event time (a half-life), not per event, so a busy
service does not forget its normal within seconds of an incident; clipping at three scales means a
single extreme value moves the baseline by at most ``3 * scale / weight``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.compiled import TWO, compile_kernel, unchecked
from app.events import EventBatch
from app.service_states import RowStore

FloatArray = npt.NDArray[np.float64]

# Scale never drops below this (in log units, ~5%): a service with perfectly constant latency must
# not turn a 1 ms wobble into a thousand-sigma event.
MIN_LOG_SCALE = 0.05
# A median below a picosecond is no scale to compare a latency with: latency / median would
# overflow float64 (then warn, and under warnings-as-errors fail the method), so no ratio is given.
MIN_MEDIAN_FOR_RATIO_MS = 1e-9
MAD_TO_SIGMA = 1.4826  # consistency constant of the MAD for normal data
CLIP_SCALES = 3.0
# E[min(Z^2, 9)] for standard normal Z: corrects the variance of 3-sigma-clipped deviations.
CLIPPED_VARIANCE = 0.9946
MAX_ABS_Z = 50.0
# Latency shift: an exponentially weighted mean of each service's last ~10 latency z-scores,
# each clipped to +-3 so that one wild value cannot fake a shift (a single outlier is the forest's
# and the window's business). For independent standard normal z its spread is
# sqrt(alpha / (2 - alpha)); a sustained slowdown drives it far past that within a few events.
SHIFT_ALPHA = 0.2
SHIFT_CLIP = 3.0
SHIFT_SPREAD = math.sqrt(SHIFT_ALPHA / (2.0 - SHIFT_ALPHA))
SHIFT_MIN_EVENTS = 5
# A slowdown is over when an event comes in this far (in baseline spreads) below the recent mean
# of clipped z-scores: the mean restarts from the baseline, so the events after a latency spike
# are not judged by its memory (the mean, at the clip after a spike, takes ~5 events to fall below
# the alarm level, and every moderately slow normal event among them was flagged as part of the
# "shift"). After a spike, any event below the baseline's centre ends it; within a sustained
# slowdown an event falls 3 spreads below the slowdown's level about once in 740.
SHIFT_OVER_BELOW = 3.0


def robust_location_scale(values: FloatArray) -> tuple[float, float]:
    location = float(np.median(values))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(values - location)))
    return location, max(scale, MIN_LOG_SCALE)


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class BaselineView(NamedTuple):
    """Each event's service baseline as it stood just before the event."""

    latency_z: FloatArray  # NaN where latency is missing or the baseline is still warming up
    median_latency_ms: FloatArray  # NaN where not known yet
    events_seen: npt.NDArray[np.int64]
    ready: npt.NDArray[np.bool_]
    latency_shift: FloatArray  # recent mean clipped z, in units of its normal spread; NaN: too new


@dataclass(frozen=True, slots=True)
class SeedBaseline:
    """A baseline learned offline (by training), used for services not seen online yet."""

    service: str
    location: float
    scale: float
    events: int


@dataclass(frozen=True, slots=True)
class BaselineState:
    """One service's baseline as it stands (read by /stats-like callers and tests)."""

    events_seen: int
    ready: bool
    warmup_latencies: int  # latencies gathered towards the warm-up (0 once it is over)
    location: float  # of log(1 + latency_ms)
    scale: float
    weight: float


# Each service is one row of two arrays, indexed by its slot (``ServiceSlots``): scalars, and
# the warm-up's latencies.
(
    _EVENTS_SEEN,
    _WARMED,  # latencies gathered for the warm-up so far; -1 once it is over
    _LOCATION,
    _SCALE,
    _WEIGHT,
    _LAST_TIME,
    _RECENT_SHIFT,
    _JUDGED,
) = range(8)
_SCALARS = 8
# Rows of the kernel's float output, in the order of BaselineView's float fields.
_OUT_LATENCY_Z, _OUT_MEDIAN, _OUT_SHIFT = range(3)


def _observe_kernel(
    codes: npt.NDArray[np.int64],
    times: FloatArray,
    log_latency: FloatArray,
    state: FloatArray,
    warmup_values: FloatArray,
    out: FloatArray,
    seen: npt.NDArray[np.int64],
    ready: npt.NDArray[np.bool_],
    halflife: float,
    two: float,
) -> None:
    """Read each event's baseline, then learn from the event, in order. Compiled by numba (see
    ``app.compiled``); as plain Python it is the same arithmetic in the same order as the
    per-service objects it replaced."""
    warmup = warmup_values.shape[1]
    for i in range(codes.shape[0]):
        s = codes[i]
        if s < 0:
            s = ~s  # the row's first event for this service (ServiceSlots.row_codes)
            _reset(state[s])
        row = state[s]
        seen[i] = int(row[_EVENTS_SEEN])
        row[_EVENTS_SEEN] += 1.0
        out[_OUT_LATENCY_Z, i] = math.nan
        out[_OUT_MEDIAN, i] = math.nan
        out[_OUT_SHIFT, i] = math.nan
        ready[i] = False
        value = log_latency[i]
        gathered = int(row[_WARMED])
        if gathered < 0:
            ready[i] = True
            out[_OUT_MEDIAN, i] = math.expm1(row[_LOCATION])
            if value == value:  # not NaN: the event has a latency
                z = (value - row[_LOCATION]) / row[_SCALE]
                out[_OUT_LATENCY_Z, i] = min(max(z, -MAX_ABS_Z), MAX_ABS_Z)
                clipped = min(max(z, -SHIFT_CLIP), SHIFT_CLIP)
                if row[_RECENT_SHIFT] > 0.0 and clipped < row[_RECENT_SHIFT] - SHIFT_OVER_BELOW:
                    row[_RECENT_SHIFT] = 0.0
                row[_RECENT_SHIFT] += SHIFT_ALPHA * (clipped - row[_RECENT_SHIFT])
                row[_JUDGED] += 1.0
                if row[_JUDGED] >= SHIFT_MIN_EVENTS:
                    out[_OUT_SHIFT, i] = row[_RECENT_SHIFT] / SHIFT_SPREAD
        elif gathered > 0:
            out[_OUT_MEDIAN, i] = math.expm1(np.median(warmup_values[s, :gathered]))
        if value != value:
            continue
        # Learn.
        now = times[i]
        if gathered >= 0:
            warmup_values[s, gathered] = value
            gathered += 1
            row[_WARMED] = gathered
            if gathered >= warmup:
                values = warmup_values[s, :gathered]
                location = np.median(values)
                scale = MAD_TO_SIGMA * np.median(np.abs(values - location))
                row[_LOCATION] = location
                row[_SCALE] = max(scale, MIN_LOG_SCALE)
                row[_WEIGHT] = gathered
                row[_WARMED] = -1.0
            row[_LAST_TIME] = max(row[_LAST_TIME], now)
            continue
        if now > row[_LAST_TIME]:
            row[_WEIGHT] *= two ** (-(now - row[_LAST_TIME]) / halflife)
            row[_LAST_TIME] = now
        weight = row[_WEIGHT] + 1.0
        row[_WEIGHT] = weight
        scale = row[_SCALE]
        limit = CLIP_SCALES * scale
        deviation = value - row[_LOCATION]
        clipped = min(max(deviation, -limit), limit)
        row[_LOCATION] += clipped / weight
        variance = scale * scale
        variance += (clipped * clipped / CLIPPED_VARIANCE - variance) / weight
        row[_SCALE] = max(math.sqrt(variance), MIN_LOG_SCALE)


def _reset_python(row: FloatArray) -> None:
    """A new service's baseline: warming up, nothing seen."""
    row[:] = 0.0
    row[_SCALE] = MIN_LOG_SCALE
    row[_LAST_TIME] = -math.inf


_reset = compile_kernel(_reset_python, "void(float64[::1])") or _reset_python
_compiled_observe = compile_kernel(
    _observe_kernel,
    "void(int64[::1], float64[:], float64[:], float64[:, ::1], float64[:, ::1],"
    " float64[:, ::1], int64[::1], boolean[::1], float64, float64)",
)
_observe = _compiled_observe or _observe_kernel
# The one-event path's call: its arguments are the store's own arrays and the batch's float64
# columns, exactly the signature's (``unchecked``).
_observe_one = unchecked(_observe)


class BaselineStore(RowStore):
    """Baselines of at most ``max_services`` services; the least recently seen is evicted."""

    def __init__(self, warmup: int, halflife_seconds: float, max_services: int) -> None:
        # A warm-up of 0 ends with the first latency, as one of 1 does.
        super().__init__(max_services, (_SCALARS,), (max(warmup, 1),))
        self.warmup = warmup
        self.halflife = halflife_seconds
        # ``observe_one``'s outputs and its view of them, made once: the kernel overwrites them
        # each call (six arrays and a view made per event were half the call's cost).
        self._one_out = np.empty((3, 1))
        self._one_seen = np.empty(1, dtype=np.int64)
        self._one_ready = np.empty(1, dtype=np.bool_)
        self._one_view = BaselineView(
            self._one_out[_OUT_LATENCY_Z],
            self._one_out[_OUT_MEDIAN],
            self._one_seen,
            self._one_ready,
            self._one_out[_OUT_SHIFT],
        )

    def get(self, service: str) -> BaselineState | None:
        """The service's baseline if it is tracked; reading it does not count as seeing it."""
        slot = self.services.get(service)
        if slot is None:
            return None
        row = self.rows[0][slot].tolist()
        return BaselineState(
            events_seen=int(row[_EVENTS_SEEN]),
            ready=row[_WARMED] < 0,
            warmup_latencies=max(int(row[_WARMED]), 0),
            location=row[_LOCATION],
            scale=row[_SCALE],
            weight=row[_WEIGHT],
        )

    def seed(self, seeds: list[SeedBaseline]) -> None:
        """Adopt trained baselines for services that have no live baseline yet.

        Runs on the event loop when a model is swapped in, so every new service's row is handed
        out and written in one array operation rather than one call per service. Rows, slot
        order and values are those of the per-service loop; when the seeds would evict services,
        the evictions depend on the order of the calls, and that case keeps the per-service loop."""
        first: dict[str, SeedBaseline] = {}
        for seed in seeds:
            if seed.service not in first and seed.service not in self:
                first[seed.service] = seed
        new = list(first.values())
        if not new:
            return
        if len(self) + len(new) > self.services.max_services:
            self._seed_one_by_one(seeds)
            return
        slots = ~self.row_codes([seed.service for seed in new])  # may grow the rows: read after
        state = self.rows[0]
        events = np.array([seed.events for seed in new], dtype=np.float64)
        warmed = events >= self.warmup
        state[slots] = 0.0
        state[slots, _SCALE] = MIN_LOG_SCALE
        state[slots, _LAST_TIME] = -math.inf
        state[slots, _EVENTS_SEEN] = events
        warm_slots = slots[warmed]
        warm = [seed for seed, ready in zip(new, warmed.tolist(), strict=True) if ready]
        state[warm_slots, _WARMED] = -1.0
        state[warm_slots, _LOCATION] = [seed.location for seed in warm]
        state[warm_slots, _SCALE] = np.maximum([seed.scale for seed in warm], MIN_LOG_SCALE)
        state[warm_slots, _WEIGHT] = np.minimum(events[warmed], 10_000.0)

    def _seed_one_by_one(self, seeds: list[SeedBaseline]) -> None:
        for seed in seeds:
            if seed.service in self:
                continue
            # A new service: its row starts afresh here, not at its first event.
            slot = ~int(self.row_codes([seed.service])[0])  # may grow the rows: read them after
            row = self.rows[0][slot]
            _reset_python(row)
            row[_EVENTS_SEEN] = seed.events
            if seed.events >= self.warmup:
                row[_WARMED] = -1.0
                row[_LOCATION] = seed.location
                row[_SCALE] = max(seed.scale, MIN_LOG_SCALE)
                # Trained history counts, but no more than a few half-lives of live traffic would.
                row[_WEIGHT] = float(min(seed.events, 10_000))

    def observe(self, batch: EventBatch) -> BaselineView:
        """Read each event's baseline, then learn from the event: sequential, in batch order."""
        n = len(batch)
        codes = self.row_codes(batch.services)
        state, warmup_values = self.rows
        out = np.empty((3, n))
        seen = np.empty(n, dtype=np.int64)
        ready = np.empty(n, dtype=np.bool_)
        _observe(
            codes, batch.timestamps, batch.log_latency, state, warmup_values, out, seen, ready,
            self.halflife, TWO,
        )  # fmt: skip
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        return BaselineView(out[_OUT_LATENCY_Z], out[_OUT_MEDIAN], seen, ready, out[_OUT_SHIFT])

    def observe_one(self, batch: EventBatch) -> BaselineView:
        """``observe`` of a batch of one (the engine's one-event path): the same kernel on the
        same row, its row code in the store's reused array rather than a new one. The view is
        the store's own, valid until its next ``observe_one`` (the engine reads it before)."""
        codes = self.code_of_one(batch.services[0])
        state, warmup_values = self.rows
        _observe_one(
            codes, batch.timestamps, batch.log_latency, state, warmup_values, self._one_out,
            self._one_seen, self._one_ready, self.halflife, TWO,
        )  # fmt: skip
        return self._one_view
