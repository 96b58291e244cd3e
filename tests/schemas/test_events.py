"""LogEvent validation over a large input space (hypothesis): any JSON-ish payload is either a
valid event that keeps every documented bound, or a ValidationError; over HTTP, never a 500."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.schemas.events import (
    MAX_ATTRIBUTES,
    MAX_LATENCY_MS,
    MAX_MESSAGE_CHARS,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    Level,
    LogEvent,
)
from tests.conftest import copy_artifacts, make_settings, start_app

SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
levels = st.one_of(
    st.sampled_from(["INFO", "warning", "Fatal", "error", "DEBUG", "critical", "WARN", "notice"]),
    json_values,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-24T10:15:00Z", "2026-11-24", "1700000000", "3000-01-01T00:00:00Z"]),
    json_values,
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "service": st.one_of(st.from_regex(SERVICE, fullmatch=True), json_values),
        "level": levels,
        "message": st.one_of(st.text(max_size=50), json_values),
        "latency_ms": st.one_of(st.floats(min_value=-10, max_value=1e13), json_values),
        "timestamp": timestamps,
        "attributes": st.one_of(
            st.dictionaries(st.text(max_size=10), json_scalars, max_size=5), json_values
        ),
        "extra": json_values,
    },
)


def check_valid(event: LogEvent) -> None:
    assert SERVICE.fullmatch(event.service)
    assert isinstance(event.level, Level)
    assert len(event.message) <= MAX_MESSAGE_CHARS
    if event.latency_ms is not None:
        assert math.isfinite(event.latency_ms)
        assert 0.0 <= event.latency_ms <= MAX_LATENCY_MS
    if event.timestamp is not None:
        assert event.timestamp.tzinfo is not None
        assert MIN_TIMESTAMP <= event.timestamp < MAX_TIMESTAMP
    assert len(event.attributes) <= MAX_ATTRIBUTES
    for key, value in event.attributes.items():
        assert key
        assert isinstance(value, str | int | float | bool)
        if isinstance(value, float):
            assert math.isfinite(value)


@settings(max_examples=150, deadline=None)
@given(payloads)
def test_any_payload_is_a_valid_event_or_a_validation_error(payload: dict[str, Any]) -> None:
    try:
        event = LogEvent.model_validate(payload)
    except ValidationError as exc:
        failure: ValidationError | None = exc
    else:
        failure = None
        assert "extra" not in payload
        check_valid(event)
    if failure is not None:
        assert failure.errors()  # each error names its field; nothing else may be raised


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(
    tmp_path_factory: pytest.TempPathFactory, bootstrapped_artifacts: Path
) -> AsyncIterator[httpx.AsyncClient]:
    root = tmp_path_factory.mktemp("hypothesis-http")
    copy_artifacts(bootstrapped_artifacts, root / "artifacts")
    async for running in start_app(make_settings(root)):
        yield running.client


@pytest.mark.asyncio(loop_scope="module")
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=payloads, batch=st.booleans())
async def test_no_payload_makes_the_api_fail(
    http: httpx.AsyncClient, payload: dict[str, Any], batch: bool
) -> None:
    # json.dumps writes NaN and Infinity literals, as a careless client would.
    body = json.dumps({"logs": [payload]} if batch else payload, allow_nan=True)
    response = await http.post(
        "/score/batch" if batch else "/score",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code in {200, 422}, response.text
    if response.status_code == 422:
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["errors"]
        prefix = ["body", "logs", 0] if batch else ["body"]
        assert all(error["loc"][: len(prefix)] == prefix for error in problem["errors"])
    else:
        result = response.json()["results"][0] if batch else response.json()
        assert 0.0 <= result["anomaly_score"] <= 1.0


@settings(max_examples=300, deadline=None)
@given(
    year=st.sampled_from([1969, 1970, 1971, 1972, 2197, 2198, 2199, 2200]),
    month=st.sampled_from([1, 12]),
    day=st.sampled_from([1, 31]),
    clock=st.sampled_from(["00:00:00", "00:30:00", "23:30:00", "23:59:59.999999"]),
    offset=st.sampled_from(["", "Z", "+00:00", "+23:59", "-23:59", "+12:00", "-01:00"]),
)
def test_timestamps_at_the_range_ends_are_judged_exactly(
    year: int, month: int, day: int, clock: str, offset: str
) -> None:
    """Timestamps near either end of the range, with offsets that move them across it: only
    the years at the ends are compared in full (the validator's shortcut), so these pin that
    every other year is inside whatever the offset."""
    text = f"{year:04d}-{month:02d}-{day:02d}T{clock}{offset}"
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    inside = MIN_TIMESTAMP <= parsed < MAX_TIMESTAMP
    try:
        event = LogEvent.model_validate({"service": "s", "level": "INFO", "timestamp": text})
    except ValidationError:
        assert not inside
    else:
        assert inside
        assert event.timestamp == parsed
