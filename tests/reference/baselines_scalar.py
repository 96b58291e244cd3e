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

import numpy as np
import numpy.typing as npt

from app.events import EventBatch
from app.service_states import ServiceStates

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
SHIFT_OVER_BELOW = 3.0


def robust_location_scale(values: FloatArray) -> tuple[float, float]:
    location = float(np.median(values))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(values - location)))
    return location, max(scale, MIN_LOG_SCALE)


class ServiceBaseline:
    __slots__ = (
        "events_seen",
        "judged",
        "last_time",
        "location",
        "recent_shift",
        "scale",
        "warmup_values",
        "weight",
    )

    def __init__(self) -> None:
        self.events_seen = 0
        self.warmup_values: list[float] | None = []
        self.location = 0.0
        self.scale = MIN_LOG_SCALE
        self.weight = 0.0
        self.last_time = -math.inf
        self.recent_shift = 0.0
        self.judged = 0

    @property
    def ready(self) -> bool:
        return self.warmup_values is None

    def learn(self, log_latency: float, event_time: float, warmup: int, halflife: float) -> None:
        if self.warmup_values is not None:
            self.warmup_values.append(log_latency)
            if len(self.warmup_values) >= warmup:
                values = np.asarray(self.warmup_values)
                self.location, self.scale = robust_location_scale(values)
                self.weight = float(values.size)
                self.warmup_values = None
            self.last_time = max(self.last_time, event_time)
            return
        if event_time > self.last_time:
            self.weight *= 2.0 ** (-(event_time - self.last_time) / halflife)
            self.last_time = event_time
        self.weight += 1.0
        limit = CLIP_SCALES * self.scale
        deviation = log_latency - self.location
        clipped = min(max(deviation, -limit), limit)
        self.location += clipped / self.weight
        variance = self.scale * self.scale
        variance += (clipped * clipped / CLIPPED_VARIANCE - variance) / self.weight
        self.scale = max(math.sqrt(variance), MIN_LOG_SCALE)


@dataclass(frozen=True, slots=True)
class BaselineView:
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


class BaselineStore(ServiceStates[ServiceBaseline]):
    """Baselines of at most ``max_services`` services; the least recently seen is evicted."""

    def __init__(self, warmup: int, halflife_seconds: float, max_services: int) -> None:
        super().__init__(ServiceBaseline, max_services)
        self.warmup = warmup
        self.halflife = halflife_seconds

    def seed(self, seeds: list[SeedBaseline]) -> None:
        """Adopt trained baselines for services that have no live baseline yet."""
        for seed in seeds:
            if seed.service in self:
                continue
            baseline = self.state_for(seed.service)
            baseline.events_seen = seed.events
            if seed.events >= self.warmup:
                baseline.warmup_values = None
                baseline.location = seed.location
                baseline.scale = max(seed.scale, MIN_LOG_SCALE)
                # Trained history counts, but no more than a few half-lives of live traffic would.
                baseline.weight = float(min(seed.events, 10_000))

    def observe(self, batch: EventBatch) -> BaselineView:
        """Read each event's baseline, then learn from the event: sequential, in batch order."""
        n = len(batch)
        # One allocation for the three float columns: per-call cost matters for a batch of one.
        latency_z, median, shift = np.full((3, n), np.nan)
        seen = np.zeros(n, dtype=np.int64)
        ready = np.zeros(n, dtype=np.bool_)
        log_latency = batch.log_latency.tolist()
        times = batch.timestamps.tolist()
        for i, baseline in enumerate(self.states_for(batch.services)):
            seen[i] = baseline.events_seen
            baseline.events_seen += 1
            value = log_latency[i]
            if baseline.ready:
                ready[i] = True
                median[i] = math.expm1(baseline.location)
                if value == value:  # not NaN: the event has a latency
                    z = (value - baseline.location) / baseline.scale
                    latency_z[i] = min(max(z, -MAX_ABS_Z), MAX_ABS_Z)
                    clipped = min(max(z, -SHIFT_CLIP), SHIFT_CLIP)
                    recent = baseline.recent_shift
                    if recent > 0.0 and clipped < recent - SHIFT_OVER_BELOW:
                        baseline.recent_shift = 0.0
                    baseline.recent_shift += SHIFT_ALPHA * (clipped - baseline.recent_shift)
                    baseline.judged += 1
                    if baseline.judged >= SHIFT_MIN_EVENTS:
                        shift[i] = baseline.recent_shift / SHIFT_SPREAD
            elif baseline.warmup_values:
                median[i] = math.expm1(float(np.median(baseline.warmup_values)))
            if value == value:
                baseline.learn(value, times[i], self.warmup, self.halflife)
        return BaselineView(latency_z, median, seen, ready, shift)
