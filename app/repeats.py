"""Repeated alarms: an alarm no stronger than one the service raised just before ranks as a repeat.

An incident rarely makes one anomalous event: a slowdown or a burst makes many, and each is flagged
(``is_anomaly`` is unchanged here). What an operator, an alert rule or a ranking needs first is the
*news*: the event that starts an incident or makes it worse. So the combined score of a flagged
event is lowered to the threshold itself when some earlier event of the same service, among its
last ``horizon`` events, was flagged with a combined score at least as high; the event stays
flagged, and its per-method scores are untouched, so the breakdown still says how unusual it is.
An event that is more anomalous than everything the service flagged within the horizon keeps its
score: a worsening incident is news again.

This is the suppression that the Numenta Anomaly Benchmark's scoring assumes of a detector (only
the first detection in a window earns credit, and every later one outside it costs; Lavin &
Ahmad 2015), and it plays the part of the "anomaly likelihood" filter that keeps an HTM detector
from re-alarming on consecutive records (Ahmad et al. 2017).

Within a run of alarms on consecutive events (one incident under way), a stronger alarm is news
only if it is stronger than the alarm on the event just before by at least ``run_margin`` on the
score scale. The methods that accumulate evidence (the sliding window's mean over its window, the
likelihood's averages) climb by a hair on every event of an incident (0.96, 0.98, 0.99, 0.99...),
and each such step would otherwise count as a worsening; an event that is clearly worse than the
one before it (a step up of at least the margin) is still news. Only the run's previous event is
compared, so an incident that keeps worsening step by step keeps alarming.

The horizon counts the service's own events (its baseline's event counter), not seconds, so a busy
service and a five-minute metric are treated alike. Only flagged events are stored: per service, a
queue of (event number, score) whose scores decrease from front to back (a monotonic queue), so
the strongest recent alarm is at the front; each event costs O(1) amortised.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def alarm_positions(combined: FloatArray, threshold: float) -> tuple[list[float], list[int]]:
    """The combined scores as Python floats and the positions of those at or above
    ``threshold`` (the alarms), which the ranking rules (here and app/recurrences.py) visit."""
    scores = combined.tolist()
    if len(scores) == 1:
        # The batch of one of /score: the test on a Python float, not two numpy calls.
        return scores, [0] if scores[0] >= threshold else []
    return scores, np.flatnonzero(combined >= threshold).tolist()


class AlarmRepeats(ServiceStates[deque[tuple[int, float]]]):
    def __init__(self, horizon: int, max_services: int = 100_000, run_margin: float = 0.0) -> None:
        super().__init__(deque, max_services)
        self.horizon = horizon
        self.run_margin = run_margin

    def observe(
        self,
        services: list[str],
        event_numbers: IntArray,
        combined: FloatArray,
        threshold: float,
    ) -> FloatArray:
        """``combined`` with repeats lowered to ``threshold``; then remember the alarms.

        ``event_numbers[i]`` is event i's position in its service's stream (0, 1, 2, ...).
        """
        if self.horizon <= 0:
            return combined
        scores, alarms = alarm_positions(combined, threshold)
        if not alarms:
            return combined
        result = combined.copy()
        numbers = event_numbers.tolist()
        for i in alarms:
            queue = self.state_for(services[i])
            number, score = numbers[i], scores[i]
            if queue and queue[-1][0] >= number:
                # The service's counter restarted (its baseline was evicted): a new history.
                queue.clear()
            # The queue's last entry is always the service's latest alarm: every alarm is appended
            # after the weaker entries behind it are dropped.
            if queue and queue[-1][0] == number - 1 and score < queue[-1][1] + self.run_margin:
                result[i] = threshold
            while queue and queue[0][0] <= number - self.horizon:
                queue.popleft()
            if queue and queue[0][1] >= score:
                result[i] = threshold
            while queue and queue[-1][1] <= score:
                queue.pop()
            queue.append((number, score))
        return result
