"""The log event: the one input every front end (REST, CLI, Python) accepts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_MESSAGE_CHARS = 8192
MAX_LATENCY_MS = 86_400_000.0  # one day: anything longer is a unit error, not a latency
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_CHARS = 128
MAX_ATTRIBUTE_VALUE_CHARS = 1024
# Event times outside this range are typos or unit errors (milliseconds sent as seconds).
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(2200, 1, 1, tzinfo=UTC)
_SURELY_IN_RANGE_FROM, _SURELY_IN_RANGE_TO = MIN_TIMESTAMP.year + 1, MAX_TIMESTAMP.year - 2

# RFC 3339 date-time (section 5.6, with its allowed space separator); a missing offset is read as
# UTC, as the field's description says.
RFC3339_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?"
)

ServiceName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$"),
]


class Level(StrEnum):
    """Canonical log levels. Aliases (WARNING, FATAL) and any letter case are accepted on input."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


LEVEL_ALIASES: dict[str, Level] = {
    "DEBUG": Level.DEBUG,
    "INFO": Level.INFO,
    "WARN": Level.WARN,
    "WARNING": Level.WARN,
    "ERROR": Level.ERROR,
    "CRITICAL": Level.CRITICAL,
    "FATAL": Level.CRITICAL,
}

# The original design's level_score feature: INFO 0, WARN 1, ERROR 2, DEBUG 0; CRITICAL ranks above.
LEVEL_SCORES: dict[Level, int] = {
    Level.DEBUG: 0,
    Level.INFO: 0,
    Level.WARN: 1,
    Level.ERROR: 2,
    Level.CRITICAL: 3,
}

# Strict numbers and booleans: in lax mode a string too long for the first member would be
# converted instead ("000...0" of 2,000 characters became the integer 0), silently changing data.
AttributeValue = (
    Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE_CHARS)]
    | Annotated[bool, Field(strict=True)]
    | Annotated[int, Field(strict=True)]
    | Annotated[float, Field(allow_inf_nan=False, strict=True)]
)


class LogEvent(BaseModel):
    """One log line of one service."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "service": "checkout-api",
                    "level": "ERROR",
                    "message": "upstream timeout after 2500 ms",
                    "latency_ms": 2500.0,
                    "timestamp": "2026-11-24T10:15:00Z",
                    "attributes": {"region": "eu-west-1", "status": 504},
                }
            ]
        },
    )

    service: ServiceName = Field(description="Service that wrote the line: letters, digits, ._-")
    level: Level = Field(description="DEBUG, INFO, WARN/WARNING, ERROR, CRITICAL/FATAL; any case.")
    message: str = Field(default="", max_length=MAX_MESSAGE_CHARS)
    latency_ms: float | None = Field(
        default=None,
        strict=True,  # a number: not true/false, not "12" (JSON integers are still accepted)
        ge=0.0,
        le=MAX_LATENCY_MS,
        allow_inf_nan=False,
        description="Request latency in milliseconds, when the line has one.",
    )
    timestamp: datetime | None = Field(
        default=None,
        description="Event time (RFC 3339). Receive time when absent; no zone means UTC.",
    )
    attributes: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_KEY_CHARS)],
        AttributeValue,
    ] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)

    @field_validator("level", mode="before")
    @classmethod
    def _normalise_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            canonical = LEVEL_ALIASES.get(value.strip().upper())
            if canonical is None:
                raise ValueError(
                    "level must be one of DEBUG, INFO, WARN, WARNING, ERROR, CRITICAL, FATAL"
                )
            return canonical
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp_is_text(cls, value: Any) -> Any:
        # Bare numbers are ambiguous (seconds? milliseconds?), so only RFC 3339 text is taken;
        # pydantic alone would also read "1700000000" as epoch seconds and "2026-11-24" as midnight.
        if value is None or isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not RFC3339_DATE_TIME.fullmatch(value):
            raise ValueError("timestamp must be an RFC 3339 string such as 2026-11-24T10:15:00Z")
        return value

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # An offset is less than a day, so a year strictly inside the range is in it whatever
        # the offset: the comparisons (each a call to the offset's utcoffset, most of this
        # validator's cost) are left to the years at either end.
        if not _SURELY_IN_RANGE_FROM <= value.year <= _SURELY_IN_RANGE_TO and not (
            MIN_TIMESTAMP <= value < MAX_TIMESTAMP
        ):
            raise ValueError("timestamp must lie between 1970 and 2200")
        return value
