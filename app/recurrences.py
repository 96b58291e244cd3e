"""Recurring alarms: an alarm at a time of day when the service alarmed on each of the days before
ranks as a repeat.

A nightly batch job, a backup or a daily report makes its service slow at the same time every
day; each time, the latency methods see a spike and flag it. The first night it is news, and the
second night could still be a coincidence, but an alarm at the time of day when the service
alarmed on each of the last ``days`` days, and no clearly stronger than those alarms (stronger by
less than ``margin``, the run margin of ``app/repeats.py``), is a known daily event: what an
operator needs ranked first is whatever *else* happens, or a job clearly worse than on the days
before. So the combined score of such a flagged event is lowered to the threshold itself (it
stays flagged, its per-method scores untouched), as ``app/repeats.py`` does for an alarm
repeated within an incident. One earlier day alone is not enough: on the Numenta benchmark a real
anomaly falls at a time of day that alarmed the day before about as often as a daily spike
recurs (docs/evaluation.md, "seasonal repeats"); two days in a row are a pattern.

Time is cut into bins of ``BIN_SECONDS``; an earlier day counts when the service alarmed in a bin
within ``REACH_BINS`` of the same time of day (the same bin number less one day's bins), so the
tolerance is +-30 minutes to the bin. Per service this keeps, for each bin of the day in which it
alarmed, the last ``days + 1`` bin numbers (absolute, so a day boundary needs no care) with the
strongest combined score in each: at most 96 short lists, usually a handful, whatever the
service's rate of events. The event's own timestamp is used (the engine's, for an event without
one), so a replay of old events judges them by when they happened. Each alarm costs
O(days * reach); other events cost nothing.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from app.repeats import alarm_positions
from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]

BIN_SECONDS = 900.0
BINS_PER_DAY = int(86_400 // BIN_SECONDS)
# Bins either side of the same time of day that still count as "the same time": +-30 minutes.
REACH_BINS = 2


class AlarmRecurrences(ServiceStates[dict[int, list[tuple[int, float]]]]):
    def __init__(self, days: int, max_services: int = 100_000, margin: float = 0.0) -> None:
        super().__init__(dict, max_services)
        self.days = days
        self.margin = margin

    def observe(
        self,
        services: list[str],
        times: FloatArray,
        combined: FloatArray,
        ranked: FloatArray,
        threshold: float,
    ) -> FloatArray:
        """``ranked`` with recurring alarms lowered to ``threshold``; then remember the alarms.

        ``combined`` is each event's combined score as the methods gave it, ``ranked`` the same
        after the other ranking rules (``app/repeats.py``), ``times[i]`` event i's timestamp in
        seconds. An alarm recurs when, on each of the ``days`` days before, the service raised
        an alarm near the same time of day whose combined score was at most ``margin`` below
        this one's: a nightly job clearly worse than on the nights before is news. An event below
        the threshold changes nothing."""
        if self.days <= 0:
            return ranked
        scores, alarms = alarm_positions(combined, threshold)
        if not alarms:
            return ranked
        result = ranked.copy()
        stamps = times.tolist()
        keep = self.days + 1
        for i in alarms:
            stamp, score = stamps[i], scores[i]
            if not math.isfinite(stamp):
                continue
            bins = self.state_for(services[i])
            now = int(stamp // BIN_SECONDS)
            if result[i] > threshold and all(
                self._strongest_near(bins, now - day * BINS_PER_DAY) >= score - self.margin
                for day in range(1, keep)
            ):
                result[i] = threshold
            recent = bins.setdefault(now % BINS_PER_DAY, [])
            for j, (number, strongest) in enumerate(recent):
                if number == now:
                    recent[j] = (now, max(strongest, score))
                    break
            else:
                recent.append((now, score))
                if len(recent) > keep:
                    # The oldest day in this bin: too old to be looked at again (the list is in
                    # order of arrival, which is time order unless timestamps go backwards).
                    recent.remove(min(recent))
        return result

    @staticmethod
    def _strongest_near(bins: dict[int, list[tuple[int, float]]], centre: int) -> float:
        """The strongest alarm in the bins within reach of ``centre``; -inf without one."""
        strongest = -math.inf
        for number in range(centre - REACH_BINS, centre + REACH_BINS + 1):
            for seen, score in bins.get(number % BINS_PER_DAY, ()):
                if seen == number and score > strongest:
                    strongest = score
        return strongest
