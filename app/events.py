"""Events as columns: the shape the scoring path works on (a single event is a batch of one)."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Self

import numpy as np
import numpy.typing as npt

from app.schemas.events import LEVEL_SCORES, Level, LogEvent

FloatArray = npt.NDArray[np.float64]

# A float: numpy compares an array with a Python int several times slower than with a float
# (the same booleans: level scores are small integers, exact in float64).
ERROR_LEVEL_SCORE = float(LEVEL_SCORES[Level.ERROR])


# ``EventBatch.of_one``'s three given numbers written at once (native doubles).
_pack_numbers = struct.Struct("3d").pack_into


class _Columns(NamedTuple):
    services: list[str]
    levels: list[Level]
    level_scores: FloatArray
    latency_ms: FloatArray  # NaN where the event has no latency
    timestamps: FloatArray  # event time, seconds since the epoch
    # Derived once (windows, the sliding window and the explanation all read it), not given.
    is_error: npt.NDArray[np.bool_]
    # log(1 + latency_ms), NaN where missing: baselines, windows and forecasts all work on it.
    log_latency: FloatArray


class EventBatch(_Columns):
    """N validated events, column by column, in arrival order.

    Built from the five given columns; ``is_error`` and ``log_latency`` are derived. A tuple,
    immutable like the frozen dataclass it replaces at a fraction of its construction cost
    (which set each field through object.__setattr__), paid by every /score."""

    __slots__ = ()

    def __new__(
        cls,
        services: list[str],
        levels: list[Level],
        level_scores: FloatArray,
        latency_ms: FloatArray,
        timestamps: FloatArray,
    ) -> Self:
        return tuple.__new__(
            cls,
            (
                services,
                levels,
                level_scores,
                latency_ms,
                timestamps,
                level_scores >= ERROR_LEVEL_SCORE,
                np.log1p(latency_ms),
            ),
        )

    def __len__(self) -> int:
        return len(self.services)

    @classmethod
    def of_one(
        cls, event: LogEvent, received_at: float | None, into: OneEventColumns
    ) -> EventBatch:
        """The batch of ``event`` alone in ``into``'s arrays, valid until its next ``of_one``:
        the columns ``from_events`` of several events gives, bit for bit, made with one struct
        call and one ufunc."""
        level_score = LEVEL_SCORES[event.level]
        timestamp = event.timestamp
        _pack_numbers(
            into.values,  # type: ignore[arg-type]  # numpy's stubs: a buffer only from 3.12
            0,
            level_score,
            math.nan if event.latency_ms is None else event.latency_ms,
            (time.time() if received_at is None else received_at)
            if timestamp is None
            else timestamp.timestamp(),
        )
        latency_ms = into.latency_ms
        np.log1p(latency_ms, out=into.log_latency)
        is_error = into.is_error
        is_error[0] = level_score >= ERROR_LEVEL_SCORE
        return tuple.__new__(
            cls,
            (
                [event.service],
                [event.level],
                into.level_scores,
                latency_ms,
                into.timestamps,
                is_error,
                into.log_latency,
            ),
        )

    @classmethod
    def from_events(
        cls, events: Sequence[LogEvent], received_at: float | None = None
    ) -> EventBatch:
        if len(events) == 1:
            # Its own columns, as the engine's reused ones are written: a handful of numpy
            # calls fewer than the lists and arrays below.
            return cls.of_one(events[0], received_at, OneEventColumns())
        now = time.time() if received_at is None else received_at
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


class OneEventColumns:
    """The columns of a batch of one, made once and rewritten by each ``EventBatch.of_one``: for
    an owner that scores one event at a time and is done with each batch before it makes the next
    (the engine's ``score_one``; nothing it calls keeps a column)."""

    __slots__ = ("is_error", "latency_ms", "level_scores", "log_latency", "timestamps", "values")

    def __init__(self) -> None:
        # Level score, latency, time and log latency, each column a 1-element view.
        self.values = np.empty(4)
        self.level_scores = self.values[0:1]
        self.latency_ms = self.values[1:2]
        self.timestamps = self.values[2:3]
        self.log_latency = self.values[3:4]
        self.is_error = np.empty(1, dtype=np.bool_)


def parse_events(payloads: Sequence[Mapping[str, Any] | LogEvent]) -> list[LogEvent]:
    """Validate plain mappings (Python API, CLI) exactly as the HTTP API does."""
    return [p if isinstance(p, LogEvent) else LogEvent.model_validate(p) for p in payloads]
