"""Events as columns: the shape the scoring path works on (a single event is a batch of one)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.schemas.events import LEVEL_SCORES, Level, LogEvent

FloatArray = npt.NDArray[np.float64]

ERROR_LEVEL_SCORE = LEVEL_SCORES[Level.ERROR]


@dataclass(frozen=True, slots=True)
class EventBatch:
    """N validated events, column by column, in arrival order."""

    services: list[str]
    levels: list[Level]
    level_scores: FloatArray
    latency_ms: FloatArray  # NaN where the event has no latency
    timestamps: FloatArray  # event time, seconds since the epoch

    # Derived once (windows, the sliding window and the explanation all read it), not stored.
    is_error: npt.NDArray[np.bool_] = field(init=False, repr=False, compare=False)
    # log(1 + latency_ms), NaN where missing: baselines, windows and forecasts all work on it.
    log_latency: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_error", self.level_scores >= ERROR_LEVEL_SCORE)
        object.__setattr__(self, "log_latency", np.log1p(self.latency_ms))

    def __len__(self) -> int:
        return len(self.services)

    @classmethod
    def from_events(
        cls, events: Sequence[LogEvent], received_at: float | None = None
    ) -> EventBatch:
        now = time.time() if received_at is None else received_at
        if len(events) == 1:
            # The batch of one of /score: its three numeric columns as slices of one array
            # (each a contiguous view), one numpy call rather than three; a flat tuple and
            # slices cost half what rows of a 3 x 1 array of nested lists do.
            (event,) = events
            values = np.array(
                (
                    LEVEL_SCORES[event.level],
                    np.nan if event.latency_ms is None else event.latency_ms,
                    now if event.timestamp is None else event.timestamp.timestamp(),
                ),
                dtype=np.float64,
            )
            return cls([event.service], [event.level], values[0:1], values[1:2], values[2:3])
        # Plain lists, then one array each: cheaper than np.fromiter over generators, whose
        # set-up cost dominated for the batch of one that every /score is.
        services = [event.service for event in events]
        levels = [event.level for event in events]
        latency = [np.nan if e.latency_ms is None else e.latency_ms for e in events]
        timestamps = [now if e.timestamp is None else e.timestamp.timestamp() for e in events]
        return cls(
            services=services,
            levels=levels,
            level_scores=np.array([LEVEL_SCORES[level] for level in levels], dtype=np.float64),
            latency_ms=np.array(latency, dtype=np.float64),
            timestamps=np.array(timestamps, dtype=np.float64),
        )


def parse_events(payloads: Sequence[Mapping[str, Any] | LogEvent]) -> list[LogEvent]:
    """Validate plain mappings (Python API, CLI) exactly as the HTTP API does."""
    return [p if isinstance(p, LogEvent) else LogEvent.model_validate(p) for p in payloads]
