"""A batch request body read column-wise: the fast path in front of ``ScoreBatchRequest``.

pydantic validates a batch event by event (a field validator call per level and timestamp, a
model per event). Here the body is parsed once by orjson and each field is checked for the whole
batch: services and levels against the few distinct values a batch holds, latencies and
timestamps as numpy columns. The fast path accepts only what ``ScoreBatchRequest`` accepts, and
gives the same events; anything it is not sure of (an error, an unusual but valid form such as a
timestamp with a space or 7 fractional digits, attributes) returns None, and pydantic then
validates the body as before, so every error answer is pydantic's, naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.schemas.events import (
    LEVEL_ALIASES,
    MAX_LATENCY_MS,
    MAX_MESSAGE_CHARS,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Level,
)
from app.schemas.scoring import MAX_BATCH_EVENTS

FloatArray = npt.NDArray[np.float64]

_FIELDS = frozenset(("service", "level", "message", "latency_ms", "timestamp", "attributes"))
# ServiceName's pattern; fullmatch, because Python's "$" also matches before a final newline
# where pydantic's (Rust) regex does not.
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
# The one timestamp form read here: date, "T", time, at most 6 fractional digits, and "Z" or an
# offset. Every other RFC 3339 form is left to pydantic.
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(?:Z|([+-])(\d{2}):(\d{2}))?"
)
_MIN_MICROSECONDS = int(MIN_TIMESTAMP.timestamp()) * 1_000_000
_MAX_MICROSECONDS = int(MAX_TIMESTAMP.timestamp()) * 1_000_000
# Distinct services and level spellings are few; these remember the ones already checked.
_KNOWN_SERVICES_MAX = 100_000
_known_services: set[str] = set()
_LEVELS: dict[str, Level] = {}


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Validated events of a batch request, field by field, in request order."""

    services: list[str]
    levels: list[Level]
    messages: list[str]
    latency_ms: FloatArray  # NaN where absent
    timestamps: FloatArray  # seconds since the epoch; NaN where absent (receive time is used)

    def __len__(self) -> int:
        return len(self.services)


def _level(value: object) -> Level | None:
    if type(value) is not str:
        return None
    level = _LEVELS.get(value)
    if level is None:
        level = LEVEL_ALIASES.get(value.strip().upper())
        if level is not None and len(_LEVELS) < 1000:
            _LEVELS[value] = level
    return level


def _service(value: object) -> bool:
    if type(value) is not str:
        return False
    if value in _known_services:
        return True
    if not _SERVICE.fullmatch(value):
        return False
    if len(_known_services) >= _KNOWN_SERVICES_MAX:
        _known_services.clear()
    _known_services.add(value)
    return True


def _timestamps(texts: list[str]) -> FloatArray | None:
    """Seconds since the epoch of RFC 3339 texts in the one form read here, as
    ``datetime.timestamp()`` gives them after pydantic's parse; None if any is not that form or
    out of range."""
    local: list[str] = []
    offsets: list[int] = []
    for text in texts:
        match = _TIMESTAMP.fullmatch(text)
        if match is None:
            return None
        local.append(match[1])
        sign = match[2]
        if sign is None:
            offsets.append(0)
            continue
        hours, minutes = int(match[3]), int(match[4])
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 60 + minutes) * 60_000_000
        offsets.append(offset if sign == "+" else -offset)
    try:
        # numpy reads the date and time exactly, and refuses impossible ones (month 13, Feb 30,
        # second 60): those are pydantic's to answer.
        parsed = np.array(local, dtype="datetime64[us]")
    except ValueError:
        return None
    micros = parsed.astype(np.int64) - np.array(offsets, dtype=np.int64)
    if micros.min() < _MIN_MICROSECONDS or micros.max() >= _MAX_MICROSECONDS:
        return None
    # Exact: microseconds below 2**53 are exact floats, and one correctly rounded division gives
    # what timedelta.total_seconds() (an integer division of the microseconds) gives.
    seconds: FloatArray = micros.astype(np.float64) / 1e6
    return seconds


def read_batch(body: bytes) -> EventColumns | None:
    """The events of a ``ScoreBatchRequest`` body, or None when pydantic must decide."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(parsed) is not dict or len(parsed) != 1:
        return None
    logs = parsed.get("logs")
    if type(logs) is not list or not 1 <= len(logs) <= MAX_BATCH_EVENTS:
        return None
    services: list[str] = []
    levels: list[Level] = []
    messages: list[str] = []
    latencies: list[float] = []
    stamped: list[int] = []
    stamps: list[str] = []
    nan = float("nan")
    for i, event in enumerate(logs):
        if type(event) is not dict or not _FIELDS.issuperset(event):
            return None
        service = event.get("service")
        level = _level(event.get("level"))
        if level is None or not _service(service):
            return None
        message = event.get("message", "")
        if type(message) is not str or len(message) > MAX_MESSAGE_CHARS:
            return None
        latency = event.get("latency_ms")
        if latency is None:
            latency = nan
        elif type(latency) is float or type(latency) is int:
            latency = float(latency)
            if not 0.0 <= latency <= MAX_LATENCY_MS:
                return None
        else:
            return None
        stamp = event.get("timestamp")
        if stamp is not None:
            if type(stamp) is not str:
                return None
            stamped.append(i)
            stamps.append(stamp)
        if "attributes" in event and event["attributes"] != {}:
            return None  # not read by the engine: pydantic checks them
        services.append(service)  # type: ignore[arg-type]  # checked by _service
        levels.append(level)
        messages.append(message)
        latencies.append(latency)
    timestamps = np.full(len(logs), np.nan)
    if stamps:
        seconds = _timestamps(stamps)
        if seconds is None:
            return None
        timestamps[stamped] = seconds
    return EventColumns(services, levels, messages, np.array(latencies), timestamps)


def columns_of(events: Any) -> EventColumns:
    """The same columns from validated ``LogEvent`` objects (tests compare the two paths)."""
    return EventColumns(
        [event.service for event in events],
        [event.level for event in events],
        [event.message for event in events],
        np.array([np.nan if e.latency_ms is None else e.latency_ms for e in events]),
        np.array([np.nan if e.timestamp is None else e.timestamp.timestamp() for e in events]),
    )
