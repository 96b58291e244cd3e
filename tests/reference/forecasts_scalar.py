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
from array import array
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
from scipy.special import bdtrc, ndtr

from app.baselines import CLIPPED_VARIANCE, MIN_LOG_SCALE
from app.events import EventBatch
from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]

DAY_SECONDS = 86_400.0
CLIP_SCALES = 3.0
# The level's memory in events at most, so a busy service's forecast still follows it within
# minutes, not only within the half-life.
MAX_LEVEL_WEIGHT = 2000.0
# Residuals learned after the warm-up before the forecast judges: the spread from the warm-up's
# few events is too rough to put a one-in-a-thousand interval on.
SETTLE_EVENTS = 100
# Weight a slot's own history needs before its seasonal offset is used (else 0, the level alone).
MIN_SLOT_WEIGHT = 3.0
# Pseudo-events of the service's overall error rate mixed into a slot's rate.
SLOT_PRIOR_EVENTS = 50.0
PRIOR_ERRORS = 0.5  # Jeffreys, as app.windows (branch seeds)
PRIOR_EVENTS = 1.0
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


class ServiceForecast:
    __slots__ = (
        "bucket_errors",
        "bucket_events",
        "bucket_id",
        "errors",
        "events",
        "judged",
        "last_time",
        "level",
        "level_weight",
        "lik_mean",
        "lik_n",
        "lik_short",
        "lik_var",
        "rate_time",
        "season",
        "season_time",
        "season_weight",
        "slot_errors",
        "slot_events",
        "slow_mean",
        "slow_short",
        "slow_var",
        "variance",
        "warmup",
    )

    def __init__(self, slots: int) -> None:
        self.level = 0.0
        self.level_weight = 0.0
        self.variance = MIN_LOG_SCALE**2
        self.last_time = -math.inf
        self.warmup: list[float] | None = []
        self.judged = 0
        self.lik_short = 0.0
        self.lik_mean = 0.0
        self.lik_var = 0.0
        self.lik_n = 0.0
        self.slow_short = 0.0
        self.slow_mean = 0.0
        self.slow_var = 0.0
        self.season = array("d", [0.0]) * slots
        self.season_weight = array("d", [0.0]) * slots
        self.season_time = array("d", [0.0]) * slots
        self.slot_events = array("d", [0.0]) * slots
        self.slot_errors = array("d", [0.0]) * slots
        self.events = 0.0
        self.errors = 0.0
        self.rate_time = -math.inf
        self.bucket_id = -(2**62)
        self.bucket_events = 0
        self.bucket_errors = 0


@dataclass(frozen=True, slots=True)
class ForecastView:
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


class ForecastStore(ServiceStates[ServiceForecast]):
    def __init__(
        self,
        slots: int = 48,
        halflife_seconds: float = 3600.0,
        season_halflife_days: float = 7.0,
        bucket_seconds: float = 10.0,
        warmup: int = 20,
        interval_z: float = 3.29,
        max_services: int = 100_000,
    ) -> None:
        super().__init__(partial(ServiceForecast, slots), max_services)
        self.slots = slots
        self.halflife = halflife_seconds
        self.season_halflife = season_halflife_days * DAY_SECONDS
        self.bucket_seconds = bucket_seconds
        self.warmup = warmup
        self.interval_z = interval_z

    def _close_bucket(self, state: ServiceForecast, slot_seconds: float) -> None:
        if state.bucket_events == 0:
            return
        start = state.bucket_id * self.bucket_seconds
        slot = int((start % DAY_SECONDS) // slot_seconds)
        if state.rate_time > -math.inf and start > state.rate_time:
            decay = 2.0 ** (-(start - state.rate_time) / self.season_halflife)
            state.events *= decay
            state.errors *= decay
        state.rate_time = max(state.rate_time, start)
        state.events += state.bucket_events
        state.errors += state.bucket_errors
        state.slot_events[slot] += state.bucket_events
        state.slot_errors[slot] += state.bucket_errors
        if state.slot_events[slot] > MAX_SLOT_EVENTS:
            # Halving keeps a slot's rate current without a clock per slot.
            state.slot_events[slot] *= 0.5
            state.slot_errors[slot] *= 0.5
        state.bucket_events = 0
        state.bucket_errors = 0

    def observe(self, batch: EventBatch) -> ForecastView:
        """Forecast each event from its service's past, then learn from it: in order."""
        n = len(batch)
        forecast = np.full(n, np.nan)
        low = np.full(n, np.nan)
        high = np.full(n, np.nan)
        residual_z = np.full(n, np.nan)
        likelihood_z = np.full(n, np.nan)
        rate = np.zeros(n)
        bucket_errors = np.zeros(n)
        bucket_events = np.zeros(n, dtype=np.int64)
        is_error_mask = np.zeros(n, dtype=np.bool_)
        slot_seconds = DAY_SECONDS / self.slots
        log_latency = batch.log_latency.tolist()
        times = batch.timestamps.tolist()
        errors = batch.is_error.tolist()
        for i, service in enumerate(batch.services):
            state = self.state_for(service)
            now = times[i]
            slot = int((now % DAY_SECONDS) // slot_seconds)
            # -- error rate: forecast for this slot, then count the event into its bucket.
            # Shrunk towards the other slots' rate, weighing no more than their events.
            slot_events = state.slot_events[slot]
            other_events = max(state.events - slot_events, 0.0)
            other_errors = min(max(state.errors - state.slot_errors[slot], 0.0), other_events)
            other = (other_errors + PRIOR_ERRORS) / (other_events + PRIOR_EVENTS)
            prior_weight = min(SLOT_PRIOR_EVENTS, other_events + PRIOR_EVENTS)
            rate[i] = (state.slot_errors[slot] + prior_weight * other) / (
                slot_events + prior_weight
            )
            bucket_id = math.floor(now / self.bucket_seconds)
            if bucket_id > state.bucket_id:
                # The finished bucket joins the history only now: a forecast never learns from
                # the bucket it is judging, so a burst cannot raise its own expected rate.
                self._close_bucket(state, slot_seconds)
                state.bucket_id = bucket_id
            if bucket_id == state.bucket_id:
                state.bucket_events += 1
                state.bucket_errors += int(errors[i])
            bucket_events[i] = state.bucket_events
            bucket_errors[i] = state.bucket_errors
            is_error_mask[i] = errors[i]
            # -- latency.
            value = log_latency[i]
            if value != value:
                continue
            if state.warmup is not None:
                state.warmup.append(value)
                if len(state.warmup) >= self.warmup:
                    values = np.asarray(state.warmup)
                    state.level = float(np.median(values))
                    spread = 1.4826 * float(np.median(np.abs(values - state.level)))
                    state.variance = max(spread, MIN_LOG_SCALE) ** 2
                    state.level_weight = float(values.size)
                    state.last_time = now
                    state.warmup = None
                continue
            scale = max(math.sqrt(state.variance), MIN_LOG_SCALE)
            season = state.season[slot] if state.season_weight[slot] >= MIN_SLOT_WEIGHT else 0.0
            predicted = state.level + season
            z = (value - predicted) / scale
            state.judged += 1
            # Anomaly likelihood: judge this event's short average against the earlier ones,
            # then learn it.
            raw = math.log1p(min(abs(z), LIKELIHOOD_CLIP))
            short = state.lik_short + LIKELIHOOD_SHORT_ALPHA * (raw - state.lik_short)
            slow = state.slow_short + LIKELIHOOD_SLOW_ALPHA * (raw - state.slow_short)
            if state.lik_n >= LIKELIHOOD_MIN_EVENTS:
                spread = max(math.sqrt(state.lik_var), LIKELIHOOD_MIN_SPREAD)
                lik_z = (short - state.lik_mean) / spread
                if raw >= slow:
                    # The slow average remembers a run for tens of events after it ends; it
                    # speaks only for an event at least as surprising as the run so far (one
                    # that keeps it going), so the events after an incident are not flagged.
                    spread = max(math.sqrt(state.slow_var), LIKELIHOOD_MIN_SPREAD)
                    lik_z = max(lik_z, (slow - state.slow_mean) / spread)
                likelihood_z[i] = lik_z
            state.lik_short = short
            state.slow_short = slow
            state.lik_n = min(state.lik_n + 1.0, LIKELIHOOD_LONG_EVENTS)
            delta = short - state.lik_mean
            state.lik_mean += delta / state.lik_n
            state.lik_var += (delta * (short - state.lik_mean) - state.lik_var) / state.lik_n
            delta = slow - state.slow_mean
            state.slow_mean += delta / state.lik_n
            state.slow_var += (delta * (slow - state.slow_mean) - state.slow_var) / state.lik_n
            if state.judged > SETTLE_EVENTS:
                forecast[i] = predicted
                low[i] = predicted - self.interval_z * scale
                high[i] = predicted + self.interval_z * scale
                residual_z[i] = z
            # Learn: clipped residual into the level, the scale and the slot's seasonal offset.
            if now > state.last_time:
                state.level_weight *= 2.0 ** (-(now - state.last_time) / self.halflife)
                state.last_time = now
            state.level_weight = min(state.level_weight + 1.0, MAX_LEVEL_WEIGHT)
            # The level takes the whole residual: with a long memory one wild value barely moves
            # it, while a lasting shift is followed instead of being flagged for a day. The
            # spread learns only clipped residuals, so one wild value cannot widen the interval.
            state.level += (value - predicted) / state.level_weight
            limit = CLIP_SCALES * scale
            clipped = min(max(value - predicted, -limit), limit)
            state.variance += (clipped * clipped / CLIPPED_VARIANCE - state.variance) / min(
                state.level_weight, 1000.0
            )
            stored = state.season[slot]
            deviation = min(max(value - state.level - stored, -limit), limit)
            elapsed = now - state.season_time[slot]
            slot_weight = state.season_weight[slot]
            if slot_weight > 0 and elapsed > 0:
                slot_weight *= 2.0 ** (-elapsed / self.season_halflife)
            slot_weight = min(slot_weight + 1.0, 1000.0)
            state.season_weight[slot] = slot_weight
            state.season_time[slot] = now
            state.season[slot] = stored + deviation / slot_weight
        has_forecast = ~np.isnan(residual_z)
        # ndtr(NaN) is NaN, which np.where discards: no nan_to_num (a slow call) needed.
        latency_rarity = np.where(has_forecast, 2.0 * ndtr(-np.abs(residual_z)), 1.0)
        # Two averages judged: the smaller tail times two (Bonferroni).
        likelihood_rarity = np.where(
            np.isnan(likelihood_z), 1.0, np.minimum(1.0, 2.0 * ndtr(-np.nan_to_num(likelihood_z)))
        )
        error_rarity = (
            np.where(
                is_error_mask,
                bdtrc(np.maximum(bucket_errors - 1.0, 0.0), bucket_events, rate),
                1.0,
            )
            if is_error_mask.any()  # the binomial tail is for error events only
            else np.ones(n)
        )
        return ForecastView(
            latency_forecast_ms=np.expm1(forecast),
            latency_low_ms=np.expm1(np.maximum(low, 0.0)),
            latency_high_ms=np.expm1(high),
            latency_residual_z=residual_z,
            latency_rarity=latency_rarity,
            error_rate_forecast=rate,
            bucket_errors=bucket_errors,
            bucket_events=bucket_events.astype(np.float64),
            error_rarity=error_rarity,
            likelihood_z=likelihood_z,
            likelihood_rarity=likelihood_rarity,
        )
