"""The column-wise reading of a batch body accepts only what ScoreBatchRequest accepts and gives
the same events; everything else is left to pydantic (hypothesis over bodies near the edges)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from app.schemas.columns import EventColumns, columns_of, read_batch
from app.schemas.scoring import ScoreBatchRequest

ADAPTER = TypeAdapter(ScoreBatchRequest)

services = st.one_of(
    st.sampled_from(["api", "a.b-c_1", "x" * 128, "x" * 129, "", "bad name", "api\n", "ü", 5]),
    st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True),
)
levels = st.sampled_from(
    ["INFO", "info", " Warning ", "fatal", "ERROR", "LOUD", "", 3, None, "\tdebug\n"]
)
latencies = st.one_of(
    st.floats(-10.0, 1e8),
    st.integers(-5, 10**9),
    st.sampled_from([0, 0.0, -0.0, 86_400_000, 86_400_000.5, True, "12", None, 2**63 - 1]),
)
stamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-24T10:15:00Z",
            "2026-11-24T10:15:00",
            "2026-11-24T10:15:00.5+02:00",
            "2026-11-24T10:15:00.123456-05:30",
            "2026-11-24T10:15:00.1234567Z",
            "2026-11-24 10:15:00Z",
            "2026-11-24t10:15:00z",
            "2026-02-30T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:15:00+24:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "1970-01-01T01:00:00+01:00",
            "2199-12-31T23:59:59.999999Z",
            "2200-01-01T00:00:00Z",
            "2026-11-24",
            "1700000000",
            1700000000,
            None,
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
)
attributes: st.SearchStrategy[Any] = st.sampled_from([{}, {"a": 1}, {"": 1}, None, [], {"k": [1]}])
messages = st.one_of(st.text(max_size=20), st.sampled_from(["x" * 8192, "x" * 8193, None, 7]))


def _in_range_stamp(moment: datetime, form: int) -> str:
    text = moment.isoformat()
    return [text + "Z", text, text + "+05:45", text + "-11:00", text.replace("T", " ")][form]


# Mostly valid values, so that most bodies are valid and the fast path is exercised; each field
# takes one of the edge values above now and then.
usual: dict[str, st.SearchStrategy[Any]] = {
    "service": st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True),
    "level": st.sampled_from(["INFO", "info", "WARNING", "Error", "CRITICAL", "debug"]),
    "message": st.text(max_size=30),
    "latency_ms": st.one_of(st.none(), st.floats(0.0, 86_400_000.0), st.integers(0, 10**6)),
    "timestamp": st.builds(
        _in_range_stamp,
        st.datetimes(datetime(1970, 1, 2), datetime(2199, 12, 30)),
        st.integers(0, 4),
    ),
    "attributes": st.just({}),
}


@st.composite
def _event(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 200)) == 0:
        return draw(st.sampled_from([[], "event", None, 1]))
    event: dict[str, Any] = {}
    for key, values, absent_often in (
        ("service", services, False),
        ("level", levels, False),
        ("message", messages, True),
        ("latency_ms", latencies, True),
        ("timestamp", stamps, True),
        ("attributes", attributes, True),
    ):
        if draw(st.integers(0, 3 if absent_often else 30)) != 0:
            event[key] = draw(values if draw(st.integers(0, 12)) == 0 else usual[key])
    if draw(st.integers(0, 100)) == 0:
        event["colour"] = "red"
    return event


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    logs = draw(st.lists(_event(), max_size=6))
    body: Any = {"logs": logs}
    shape = draw(st.integers(0, 100))
    if shape == 0:
        body["extra"] = 1
    elif shape == 1:
        body = logs
    return orjson.dumps(body)


def _assert_same(columns: EventColumns, expected: EventColumns) -> None:
    assert columns.services == expected.services
    assert columns.levels == expected.levels
    np.testing.assert_array_equal(columns.level_scores, expected.level_scores, strict=True)
    assert columns.messages == expected.messages
    # Exactly the same floats (NaN where absent), not merely close ones.
    np.testing.assert_array_equal(columns.latency_ms, expected.latency_ms, strict=True)
    np.testing.assert_array_equal(columns.timestamps, expected.timestamps, strict=True)


@settings(max_examples=1500, deadline=None)
@given(_body())
def test_the_fast_path_accepts_only_what_pydantic_accepts_and_reads_the_same_events(
    body: bytes,
) -> None:
    columns = read_batch(body)
    try:
        request = ADAPTER.validate_json(body)
    except ValidationError:
        assert columns is None
        return
    if columns is not None:
        _assert_same(columns, columns_of(request.logs))


@pytest.mark.parametrize(
    "body",
    [
        b'{"logs":[{"service":"a","level":"INFO","latency_ms":NaN}]}',
        b'{"logs":[{"service":"a","level":"INFO","latency_ms":1e400}]}',
        b'{"logs":[{"service":"a","level":"INFO","latency_ms":123456789012345678901234567890}]}',
        b'{"logs":[{"service":"a","level":"INFO","service":"b b"}]}',
        b'{"logs":[{"service":"a","level":"INFO","message":"\\ud800"}]}',
        b'{"logs":[{"service":"a","level":"INFO"}],"logs":[]}',
        b'{"logs":[{"service":"a","level":"INFO"}',
    ],
)
def test_bodies_orjson_reads_differently_are_left_to_pydantic(body: bytes) -> None:
    columns = read_batch(body)
    try:
        request = ADAPTER.validate_json(body)
    except ValidationError:
        assert columns is None
        return
    if columns is not None:
        _assert_same(columns, columns_of(request.logs))


def test_an_ordinary_batch_takes_the_fast_path() -> None:
    body = orjson.dumps(
        {
            "logs": [
                {"service": "api", "level": "warning", "latency_ms": 12, "message": "GET /"},
                {"service": "db", "level": "ERROR", "timestamp": "2026-11-24T10:15:00.25+01:00"},
            ]
        }
    )
    columns = read_batch(body)
    assert columns is not None
    _assert_same(columns, columns_of(ADAPTER.validate_json(body).logs))
