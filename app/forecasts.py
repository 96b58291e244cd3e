"""Per-service forecasts of latency and error rate, seasonal by time of day, learned online.

Latency (on ``log(1 + ms)``) follows an additive Holt-Winters-style model without trend
(Holt 1957, Winters 1960; Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, 8.3):

    forecast = level + season[slot of the day]
    level   <- level + (x - season - level) / w_level           (event-time decayed weight)
    season  <- season + (x - level - season) / w_slot           (per slot, decayed over days)

so each update is O(1) and a service holds ``slots`` seasonal values. Residuals are clipped at
``CLIP_SCALES`` scales before they update the spread and the seasonal offsets; the level takes the
whole residual, but its memory is long (a half-life in event time, at most ``MAX_LEVEL_WEIGHT``
events), so an outlier barely moves it while a lasting shift is followed. The prediction
interval is ``forecast +- z * scale`` with ``scale`` the
decayed root mean square of (clipped) residuals; an event's rarity is the two-sided normal tail of
its residual.

Anomaly likelihood (Ahmad et al. 2017, "Unsupervised real-time anomaly detection for streaming
data", Neurocomputing 262): the raw score is the residual's size on a log scale,
``log(1 + min(|z|, LIKELIHOOD_CLIP))``; its short average (exponentially weighted,
``LIKELIHOOD_SHORT_ALPHA`` per event, a half-life of about two events) is judged against the mean
and spread of that same average over the service's longer past (exponentially weighted over
``LIKELIHOOD_LONG_EVENTS`` events), by the normal upper tail. It sees what a single residual does
not: several moderately surprising events in a row, a noisier stretch, spikes coming denser than
usual. A second, slow average (``LIKELIHOOD_SLOW_ALPHA``, a half-life of about fourteen events)
is judged the same way against its own long-run mean and spread, for changes too gradual for the
short one (a stretch of events each 1.5 spreads off: the short average stays within its usual
range); the rarity is the smaller of the two tails times two (Bonferroni). The slow average
remembers an incident for tens of events after it ends, so it speaks only for an event at least
as surprising as the slow average itself (one that keeps the run going). The log makes the
averages close to normal, as the tail assumes; on ``|z|`` itself the average is skewed and the
tail over-confident (synthetic stream: 0.118% false alarms instead of 0.067%). Unlike the paper,
the long-run statistics are updated every event (O(1), seven floats per service) instead of
re-estimated over a stored window every 100 records.

Error rate: each service keeps decayed event and error counts per time-of-day slot; the forecast is
the slot's rate (shrunk towards the service's overall rate while the slot has little history). The
error events of the current ``bucket_seconds`` bucket are judged against it with a binomial upper
tail, so a burst is seen within one bucket.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import bdtrc, ndtr
from scipy.special.cython_special import bdtrc as bdtrc_one
from scipy.special.cython_special import ndtr as ndtr_one

from app.baselines import CLIPPED_VARIANCE, MIN_LOG_SCALE
from app.compiled import TWO, compile_kernel, unchecked
from app.events import EventBatch
from app.service_states import RowStore
from app.windows import PRIOR_ERRORS, PRIOR_EVENTS

FloatArray = npt.NDArray[np.float64]

DAY_SECONDS = 86_400.0
CLIP_SCALES = 3.0
# The level's memory in events at most, so a busy service's forecast still follows it within
# minutes, not only within the half-life.
MAX_LEVEL_WEIGHT = 2000.0
# Residuals learned after the warm-up before the forecast judges: the spread from the warm-up's
# few events is too rough to put a one-in-a-thousand interval on.
SETTLE_EVENTS = 100
# Half-life of each time-of-day slot's seasonal offset (and of the error-rate counts). A slot
# learns a few events a day, so a one-week half-life estimated the daily profile from the last
# ~60 events of each slot; two weeks halves that noise while a changed daily pattern is still
# followed within days (its residuals move the offsets at once). NAB-tuned: measured at 7 / 10 /
# 14 / 21 / 28 / 56 days, 63.9 / 64.0 / 65.1 / 65.0 / 65.0 / 65.1 (docs/evaluation.md).
SEASON_HALFLIFE_DAYS = 14.0
# Weight a slot's own history needs before its seasonal offset is used (else 0, the level alone).
MIN_SLOT_WEIGHT = 3.0
# Pseudo-events of the service's overall error rate mixed into a slot's rate.
SLOT_PRIOR_EVENTS = 50.0
# The service's overall rate starts from the window store's prior (PRIOR_ERRORS, PRIOR_EVENTS:
# Jeffreys' Beta(1/2, 1/2); why there): a short clean history is not forecast to be error-free.
MAX_SLOT_EVENTS = 20_000.0
# Anomaly likelihood (see the module docstring).
LIKELIHOOD_CLIP = 5.0
LIKELIHOOD_SHORT_ALPHA = 0.3
# The slow average: half-life log(0.5) / log(0.95) ~ 14 events (see the module docstring).
LIKELIHOOD_SLOW_ALPHA = 0.05
LIKELIHOOD_LONG_EVENTS = 2000.0
# Short averages learned before the likelihood judges: its spread needs a history.
LIKELIHOOD_MIN_EVENTS = 200
# Floor of the short average's spread, so that a perfectly flat service can still be surprised.
LIKELIHOOD_MIN_SPREAD = 0.01


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class ForecastView(NamedTuple):
    latency_forecast_ms: FloatArray  # NaN while the service warms up or the event has no latency
    latency_low_ms: FloatArray  # prediction interval at the target false-alarm rate
    latency_high_ms: FloatArray
    latency_residual_z: FloatArray
    latency_rarity: FloatArray
    error_rate_forecast: FloatArray
    bucket_errors: FloatArray  # errors in the event's bucket so far, this one included
    bucket_events: FloatArray
    error_rarity: FloatArray  # 1 for events that are not errors
    # Anomaly likelihood: the short or slow average of the residuals' size against its own
    # long-run mean and spread (the larger of the two z's).
    likelihood_z: FloatArray  # NaN while the service has too little history
    likelihood_rarity: FloatArray


# Each service's state is one row of three arrays, indexed by its slot (``ServiceSlots``):
# scalars, per-time-of-day-slot values, and the warm-up's latencies.
(
    _LEVEL,
    _LEVEL_WEIGHT,
    _VARIANCE,
    _LAST_TIME,
    _WARMED,  # latencies gathered for the warm-up so far; -1 once it is over
    _JUDGED,
    _LIK_SHORT,
    _LIK_MEAN,
    _LIK_VAR,
    _LIK_N,
    _SLOW_SHORT,
    _SLOW_MEAN,
    _SLOW_VAR,
    _EVENTS,
    _ERRORS,
    _RATE_TIME,
    _BUCKET_ID,  # float: exact for every bucket id an event time can give (below 2**53)
    _BUCKET_EVENTS,
    _BUCKET_ERRORS,
) = range(19)
_SCALARS = 19
_SEASON, _SEASON_WEIGHT, _SEASON_TIME, _SLOT_EVENTS, _SLOT_ERRORS = range(5)
_SEASONAL = 5
_NO_BUCKET = -float(2**62)
# Rows of the kernel's output, in the order of ForecastView's fields.
(
    _FORECAST_MS,
    _LOW_MS,
    _HIGH_MS,
    _RESIDUAL_Z,
    _LATENCY_RARITY,
    _RATE,
    _BUCKET_ERRORS_OUT,
    _BUCKET_EVENTS_OUT,
    _ERROR_RARITY,
    _LIKELIHOOD_Z,
    _LIKELIHOOD_RARITY,
) = range(11)
_OUTPUTS = 11


def _observe_kernel(
    codes: npt.NDArray[np.int64],
    times: FloatArray,
    log_latency: FloatArray,
    is_error: npt.NDArray[np.bool_],
    state: FloatArray,
    seasonal: npt.NDArray[np.float64],
    warmup_values: FloatArray,
    out: FloatArray,
    halflife: float,
    season_halflife: float,
    bucket_seconds: float,
    interval_z: float,
    two: float,
) -> None:
    """Forecast each event from its service's row, then learn from it, in order; writes every
    row of ``out`` but the three tail probabilities (scipy's, computed on the whole batch); the
    forecast and its interval are on the log scale.

    Compiled by numba (see ``app.compiled``); as plain Python it is the same
    arithmetic in the same order, one event at a time, as the per-service objects it replaced.
    """
    n_slots = seasonal.shape[2]
    slot_seconds = DAY_SECONDS / n_slots
    warmup = warmup_values.shape[1]
    for i in range(codes.shape[0]):
        s = codes[i]
        fresh = s < 0
        if fresh:
            s = ~s  # the row's first event for this service (ServiceSlots.row_codes)
        row = state[s]
        season = seasonal[s]
        if fresh:
            row[:] = 0.0
            row[_VARIANCE] = MIN_LOG_SCALE**2
            row[_LAST_TIME] = -math.inf
            row[_RATE_TIME] = -math.inf
            row[_BUCKET_ID] = _NO_BUCKET
            season[:, :] = 0.0
        now = times[i]
        slot = int((now % DAY_SECONDS) // slot_seconds)
        # -- error rate: forecast for this slot, then count the event into its bucket.
        # The slot's own events are left out of the rate it is shrunk towards, and that rate
        # weighs no more than the events behind it: a young service (every event in one slot)
        # counted its clean events twice, once in the slot and once in the overall rate it
        # was shrunk to, so its rate fell as 1/n**2 (150 clean events: 0.08%, where
        # Jeffreys' rule gives 0.33%) and its first error was flagged (synthetic seed 11).
        other_events = max(row[_EVENTS] - season[_SLOT_EVENTS, slot], 0.0)
        other_errors = min(max(row[_ERRORS] - season[_SLOT_ERRORS, slot], 0.0), other_events)
        other = (other_errors + PRIOR_ERRORS) / (other_events + PRIOR_EVENTS)
        prior_weight = min(SLOT_PRIOR_EVENTS, other_events + PRIOR_EVENTS)
        out[_RATE, i] = (season[_SLOT_ERRORS, slot] + prior_weight * other) / (
            season[_SLOT_EVENTS, slot] + prior_weight
        )
        bucket_id = math.floor(now / bucket_seconds)
        if bucket_id > row[_BUCKET_ID]:
            # The finished bucket joins the history only now: a forecast never learns from
            # the bucket it is judging, so a burst cannot raise its own expected rate.
            if row[_BUCKET_EVENTS] != 0:
                start = row[_BUCKET_ID] * bucket_seconds
                closed = int((start % DAY_SECONDS) // slot_seconds)
                if row[_RATE_TIME] > -math.inf and start > row[_RATE_TIME]:
                    decay = two ** (-(start - row[_RATE_TIME]) / season_halflife)
                    row[_EVENTS] *= decay
                    row[_ERRORS] *= decay
                row[_RATE_TIME] = max(row[_RATE_TIME], start)
                row[_EVENTS] += row[_BUCKET_EVENTS]
                row[_ERRORS] += row[_BUCKET_ERRORS]
                season[_SLOT_EVENTS, closed] += row[_BUCKET_EVENTS]
                season[_SLOT_ERRORS, closed] += row[_BUCKET_ERRORS]
                if season[_SLOT_EVENTS, closed] > MAX_SLOT_EVENTS:
                    # Halving keeps a slot's rate current without a clock per slot.
                    season[_SLOT_EVENTS, closed] *= 0.5
                    season[_SLOT_ERRORS, closed] *= 0.5
                row[_BUCKET_EVENTS] = 0.0
                row[_BUCKET_ERRORS] = 0.0
            row[_BUCKET_ID] = bucket_id
        if bucket_id == row[_BUCKET_ID]:
            row[_BUCKET_EVENTS] += 1.0
            if is_error[i]:
                row[_BUCKET_ERRORS] += 1.0
        out[_BUCKET_EVENTS_OUT, i] = row[_BUCKET_EVENTS]
        out[_BUCKET_ERRORS_OUT, i] = row[_BUCKET_ERRORS]
        # -- latency.
        out[_FORECAST_MS, i] = math.nan
        out[_LOW_MS, i] = math.nan
        out[_HIGH_MS, i] = math.nan
        out[_RESIDUAL_Z, i] = math.nan
        out[_LIKELIHOOD_Z, i] = math.nan
        value = log_latency[i]
        if value != value:
            continue
        if row[_WARMED] >= 0.0:
            gathered = int(row[_WARMED])
            warmup_values[s, gathered] = value
            gathered += 1
            row[_WARMED] = gathered
            if gathered >= warmup:
                values = warmup_values[s, :gathered]
                level = np.median(values)
                spread = 1.4826 * np.median(np.abs(values - level))
                row[_LEVEL] = level
                row[_VARIANCE] = max(spread, MIN_LOG_SCALE) ** 2
                row[_LEVEL_WEIGHT] = gathered
                row[_LAST_TIME] = now
                row[_WARMED] = -1.0
            continue
        scale = max(math.sqrt(row[_VARIANCE]), MIN_LOG_SCALE)
        offset = season[_SEASON, slot] if season[_SEASON_WEIGHT, slot] >= MIN_SLOT_WEIGHT else 0.0
        predicted = row[_LEVEL] + offset
        z = (value - predicted) / scale
        row[_JUDGED] += 1.0
        # Anomaly likelihood: judge this event's short average against the earlier ones,
        # then learn it.
        raw = math.log1p(min(abs(z), LIKELIHOOD_CLIP))
        short = row[_LIK_SHORT] + LIKELIHOOD_SHORT_ALPHA * (raw - row[_LIK_SHORT])
        slow = row[_SLOW_SHORT] + LIKELIHOOD_SLOW_ALPHA * (raw - row[_SLOW_SHORT])
        if row[_LIK_N] >= LIKELIHOOD_MIN_EVENTS:
            spread = max(math.sqrt(row[_LIK_VAR]), LIKELIHOOD_MIN_SPREAD)
            lik_z = (short - row[_LIK_MEAN]) / spread
            if raw >= slow:
                # The slow average remembers a run for tens of events after it ends; it
                # speaks only for an event at least as surprising as the run so far (one
                # that keeps it going), so the events after an incident are not flagged.
                spread = max(math.sqrt(row[_SLOW_VAR]), LIKELIHOOD_MIN_SPREAD)
                lik_z = max(lik_z, (slow - row[_SLOW_MEAN]) / spread)
            out[_LIKELIHOOD_Z, i] = lik_z
        row[_LIK_SHORT] = short
        row[_SLOW_SHORT] = slow
        lik_n = min(row[_LIK_N] + 1.0, LIKELIHOOD_LONG_EVENTS)
        row[_LIK_N] = lik_n
        delta = short - row[_LIK_MEAN]
        row[_LIK_MEAN] += delta / lik_n
        row[_LIK_VAR] += (delta * (short - row[_LIK_MEAN]) - row[_LIK_VAR]) / lik_n
        delta = slow - row[_SLOW_MEAN]
        row[_SLOW_MEAN] += delta / lik_n
        row[_SLOW_VAR] += (delta * (slow - row[_SLOW_MEAN]) - row[_SLOW_VAR]) / lik_n
        if row[_JUDGED] > SETTLE_EVENTS:
            # On the log scale here; numpy's expm1 (vectorised, not libm's) takes them to ms.
            out[_FORECAST_MS, i] = predicted
            out[_LOW_MS, i] = max(predicted - interval_z * scale, 0.0)
            out[_HIGH_MS, i] = predicted + interval_z * scale
            out[_RESIDUAL_Z, i] = z
        # Learn: clipped residual into the level, the scale and the slot's seasonal offset.
        if now > row[_LAST_TIME]:
            row[_LEVEL_WEIGHT] *= two ** (-(now - row[_LAST_TIME]) / halflife)
            row[_LAST_TIME] = now
        level_weight = min(row[_LEVEL_WEIGHT] + 1.0, MAX_LEVEL_WEIGHT)
        row[_LEVEL_WEIGHT] = level_weight
        # The level takes the whole residual: with a long memory one wild value barely moves
        # it, while a lasting shift is followed instead of being flagged for a day. The
        # spread learns only clipped residuals, so one wild value cannot widen the interval.
        row[_LEVEL] += (value - predicted) / level_weight
        limit = CLIP_SCALES * scale
        clipped = min(max(value - predicted, -limit), limit)
        row[_VARIANCE] += (clipped * clipped / CLIPPED_VARIANCE - row[_VARIANCE]) / min(
            level_weight, 1000.0
        )
        stored = season[_SEASON, slot]
        deviation = min(max(value - row[_LEVEL] - stored, -limit), limit)
        elapsed = now - season[_SEASON_TIME, slot]
        slot_weight = season[_SEASON_WEIGHT, slot]
        if slot_weight > 0 and elapsed > 0:
            slot_weight *= two ** (-elapsed / season_halflife)
        slot_weight = min(slot_weight + 1.0, 1000.0)
        season[_SEASON_WEIGHT, slot] = slot_weight
        season[_SEASON_TIME, slot] = now
        season[_SEASON, slot] = stored + deviation / slot_weight


_compiled_observe = compile_kernel(
    _observe_kernel,
    "void(int64[::1], float64[:], float64[:], boolean[:], float64[:, ::1],"
    " float64[:, :, ::1], float64[:, ::1], float64[:, ::1],"
    " float64, float64, float64, float64, float64)",
)
_observe = _compiled_observe or _observe_kernel
# The one-event path's call: its arguments are the store's own arrays and the batch's float64
# columns, exactly the signature's (``unchecked``).
_observe_one = unchecked(_observe)


class ForecastStore(RowStore):
    """Forecasts of at most ``max_services`` services (least recently seen evicted), each one row
    of three arrays (scalars, per-time-of-day-slot values, warm-up latencies)."""

    def __init__(
        self,
        slots: int = 48,
        halflife_seconds: float = 3600.0,
        season_halflife_days: float = SEASON_HALFLIFE_DAYS,
        bucket_seconds: float = 10.0,
        warmup: int = 20,
        interval_z: float = 3.29,
        max_services: int = 100_000,
    ) -> None:
        # A warm-up of 0 ends with the first latency, as one of 1 does.
        warmup = max(warmup, 1)
        super().__init__(max_services, (_SCALARS,), (_SEASONAL, slots), (warmup,))
        self.slots = slots
        self.halflife = halflife_seconds
        self.season_halflife = season_halflife_days * DAY_SECONDS
        self.bucket_seconds = bucket_seconds
        self.warmup = warmup
        self.interval_z = interval_z
        # ``observe_one``'s output and its view of it, made once: the kernel overwrites it each
        # call (an array and a view of eleven slices made per event cost more than the kernel).
        self._one_out = out = np.empty((_OUTPUTS, 1))
        self._one_in_ms = out[:_RESIDUAL_Z]
        self._one_cells = _cells_of(out)
        self._one_view = ForecastView(
            out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7], out[8], out[9], out[10]
        )

    def observe(self, batch: EventBatch) -> ForecastView:
        """Forecast each event from its service's past, then learn from it: in order."""
        n = len(batch)
        codes = self.row_codes(batch.services)
        state, seasonal, warmup_values = self.rows
        out = np.empty((_OUTPUTS, n))
        _observe(
            codes,
            batch.timestamps,
            batch.log_latency,
            batch.is_error,
            state,
            seasonal,
            warmup_values,
            out,
            self.halflife,
            self.season_halflife,
            self.bucket_seconds,
            self.interval_z,
            TWO,
        )
        np.expm1(out[:_RESIDUAL_Z], out=out[:_RESIDUAL_Z])  # forecast and interval, in ms
        if n == 1:
            _tails_of_one(_cells_of(out), bool(batch.is_error[0]))
        else:
            _tails(out, batch.is_error)
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        return ForecastView(
            out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7], out[8], out[9], out[10]
        )

    def observe_one(self, batch: EventBatch, is_error: bool) -> ForecastView:
        """``observe`` of a batch of one (the engine's one-event path; ``is_error`` its flag as a
        Python bool): the same kernel on the same row, its row code in the store's reused
        array, and the tails on Python floats (``_tails_of_one``). The view is the store's own,
        valid until its next ``observe_one`` (the engine reads it before)."""
        codes = self.code_of_one(batch.services[0])
        state, seasonal, warmup_values = self.rows
        out, in_ms = self._one_out, self._one_in_ms
        _observe_one(
            codes, batch.timestamps, batch.log_latency, batch.is_error, state, seasonal,
            warmup_values, out, self.halflife, self.season_halflife, self.bucket_seconds,
            self.interval_z, TWO,
        )  # fmt: skip
        np.expm1(in_ms, out=in_ms)  # forecast and interval, in ms
        _tails_of_one(self._one_cells, is_error)
        return self._one_view


def _tails(out: FloatArray, is_error: npt.NDArray[np.bool_]) -> None:
    """The three tail probabilities of a batch, in place, from the kernel's other rows."""
    residual_z = out[_RESIDUAL_Z]
    # ndtr(NaN) is NaN, which np.where discards: no nan_to_num (a slow call) needed.
    out[_LATENCY_RARITY] = np.where(np.isnan(residual_z), 1.0, 2.0 * ndtr(-np.abs(residual_z)))
    likelihood_z = out[_LIKELIHOOD_Z]
    # Two averages judged: the smaller tail times two (Bonferroni).
    out[_LIKELIHOOD_RARITY] = np.where(
        np.isnan(likelihood_z), 1.0, np.minimum(1.0, 2.0 * ndtr(-np.nan_to_num(likelihood_z)))
    )
    out[_ERROR_RARITY] = 1.0
    # The binomial tail is for error events only, and it is computed for them alone: bdtrc
    # costs ~0.2 us a value, and errors are a few percent of a batch. It is elementwise, so
    # each error's value is the one a call on the whole row gives.
    errors = np.flatnonzero(is_error)
    if errors.size:
        bucket_errors = out[_BUCKET_ERRORS_OUT, errors]
        # n must be an integer array: scipy deprecates (and, as an error, fails on) float n.
        bucket_events = out[_BUCKET_EVENTS_OUT, errors].astype(np.int64)
        out[_ERROR_RARITY, errors] = bdtrc(
            np.maximum(bucket_errors - 1.0, 0.0), bucket_events, out[_RATE, errors]
        )


def _tails_of_one(cells: Any, is_error: bool) -> None:
    """``_tails`` for a batch of one: scipy's scalar entry points into the same C functions as
    its ufuncs (same results), at a fraction of a ufunc call's overhead on one value.

    ``cells`` is the output column as a flat memoryview of doubles (``_cells_of``; typed Any,
    as typeshed calls its items ints): item by item, its reads are Python floats and its
    writes raw doubles, at half the cost of numpy's indexing of a 2-D array."""
    residual_z = cells[_RESIDUAL_Z]
    cells[_LATENCY_RARITY] = 1.0 if residual_z != residual_z else 2.0 * ndtr_one(-abs(residual_z))
    likelihood_z = cells[_LIKELIHOOD_Z]
    cells[_LIKELIHOOD_RARITY] = (
        1.0 if likelihood_z != likelihood_z else min(1.0, 2.0 * ndtr_one(-likelihood_z))
    )
    cells[_ERROR_RARITY] = (
        bdtrc_one(
            max(cells[_BUCKET_ERRORS_OUT] - 1.0, 0.0),
            int(cells[_BUCKET_EVENTS_OUT]),
            cells[_RATE],
        )
        if is_error
        else 1.0
    )


def _cells_of(out: FloatArray) -> Any:
    """The flat memoryview ``_tails_of_one`` takes of a C-contiguous (_OUTPUTS, 1) output."""
    return out.data.cast("B").cast("d")
