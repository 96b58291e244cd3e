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
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.schemas.events import (
    LEVEL_ALIASES,
    LEVEL_SCORES,
    MAX_LATENCY_MS,
    MAX_MESSAGE_CHARS,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Level,
)
from app.schemas.scoring import MAX_BATCH_EVENTS

FloatArray = npt.NDArray[np.float64]

_FIELDS = frozenset(("service", "level", "message", "latency_ms", "timestamp", "attributes"))
_NUMBER_TYPES = frozenset((float, int, type(None)))
# An absent "attributes" reads as this (never changed); an empty object equals it.
_NO_ATTRIBUTES: dict[str, Any] = {}
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
    # Each level's LEVEL_SCORES value, found here from the body's few spellings: looking up a
    # Level per event hashes an enum member (a Python-level __hash__), ~0.1 ms per 1,000 events.
    level_scores: FloatArray
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
    """The events of a ``ScoreBatchRequest`` body, or None when pydantic must decide.

    Field by field over the whole batch rather than event by event: one comprehension per field,
    and the checks on each column in C (set, map, join, numpy) or on its few distinct values, so
    the Python work per event is a handful of dict lookups (~0.25 us against ~0.75 for a loop
    that checks each event in turn)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(parsed) is not dict or len(parsed) != 1:
        return None
    logs = parsed.get("logs")
    if type(logs) is not list or not 1 <= len(logs) <= MAX_BATCH_EVENTS:
        return None
    try:
        # Indexing by a key raises TypeError on anything but a dict (what else JSON gives:
        # list, str, number, bool, null) and KeyError on a missing required field.
        services: list[Any] = [event["service"] for event in logs]
        spellings: list[Any] = [event["level"] for event in logs]
        distinct_services = set(services)
        distinct_spellings = set(spellings)  # TypeError if one is a list or an object
    except (KeyError, TypeError):
        return None
    # Every event is a dict here (indexing anything else raised above): one pass over all
    # their keys in C, rather than a set comparison per event (~70 us less per 1,000 events).
    # The set of them (~15 us cheaper than issuperset's pass, per 1,000 events) also tells
    # which optional fields no event has: their columns are then not read event by event.
    fields = set(chain.from_iterable(logs))
    if not fields <= _FIELDS:
        return None  # an unknown field
    # Only strings pass these checks, and a string equals no other JSON value, so what the sets
    # merged (1 and 1.0 and true) cannot hide a value that would fail.
    if not all(map(_service, distinct_services)):
        return None
    known: dict[Any, Level] = {}
    for spelling in distinct_spellings:
        level = _level(spelling)
        if level is None:
            return None
        known[spelling] = level
    levels = list(map(known.__getitem__, spellings))
    messages: list[Any] = [event.get("message", "") for event in logs]
    try:
        # join raises TypeError on any item that is not a string (null, a number, a list).
        "".join(messages)
    except TypeError:
        return None
    if max(map(len, messages)) > MAX_MESSAGE_CHARS:
        return None
    latencies: list[Any] = [event.get("latency_ms") for event in logs]
    if not _NUMBER_TYPES.issuperset(map(type, latencies)):
        return None  # true/false or "12": pydantic's strict float refuses them
    # None becomes NaN; JSON integers become the floats pydantic makes of them (exact over the
    # accepted range, and any value outside it stays outside).
    try:
        latency_ms = np.array(latencies, dtype=np.float64)
    except OverflowError:
        return None
    present = latency_ms[~np.isnan(latency_ms)]
    if present.size and not (present.min() >= 0.0 and present.max() <= MAX_LATENCY_MS):
        return None
    if "attributes" in fields:
        attributes = [event.get("attributes", _NO_ATTRIBUTES) for event in logs]
        if attributes.count(_NO_ATTRIBUTES) != len(attributes):
            return None  # attributes are not read by the engine: pydantic checks them
    timestamps = np.full(len(logs), np.nan)
    stamps: list[Any] = [event.get("timestamp") for event in logs] if "timestamp" in fields else []
    if stamps.count(None) != len(stamps):
        stamped = [i for i, stamp in enumerate(stamps) if stamp is not None]
        texts = [stamps[i] for i in stamped]
        if not {str}.issuperset(map(type, texts)):
            return None
        seconds = _timestamps(texts)
        if seconds is None:
            return None
        timestamps[stamped] = seconds
    score_of = {spelling: LEVEL_SCORES[level] for spelling, level in known.items()}
    level_scores = np.array(list(map(score_of.__getitem__, spellings)), dtype=np.float64)
    return EventColumns(services, levels, level_scores, messages, latency_ms, timestamps)


def columns_of(events: Any) -> EventColumns:
    """The same columns from validated ``LogEvent`` objects (tests compare the two paths)."""
    return EventColumns(
        [event.service for event in events],
        [event.level for event in events],
        np.array([LEVEL_SCORES[event.level] for event in events], dtype=np.float64),
        [event.message for event in events],
        np.array([np.nan if e.latency_ms is None else e.latency_ms for e in events]),
        np.array([np.nan if e.timestamp is None else e.timestamp.timestamp() for e in events]),
    )
