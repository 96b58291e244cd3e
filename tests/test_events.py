"""EventBatch and the detectors' NamedTuples: what the frozen dataclasses they replaced kept."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detectors.base import MethodOutput
from app.events import ERROR_LEVEL_SCORE, EventBatch, OneEventColumns
from app.schemas.events import LEVEL_SCORES, Level, LogEvent

LEVELS = list(Level)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(LEVELS),
            st.one_of(st.just(math.nan), st.floats(0.0, 1e12), st.sampled_from([0.0, 5e-324])),
            st.floats(-1e10, 1e10),
        ),
        min_size=0,
        max_size=40,
    )
)
def test_event_batch_derives_its_columns_as_the_dataclass_did(
    rows: list[tuple[Level, float, float]],
) -> None:
    levels = [level for level, _, _ in rows]
    scores = np.array([LEVEL_SCORES[level] for level in levels], dtype=np.float64)
    latency = np.array([value for _, value, _ in rows], dtype=np.float64)
    times = np.array([t for _, _, t in rows], dtype=np.float64)
    services = [f"s{i % 3}" for i in range(len(rows))]
    batch = EventBatch(
        services=services, levels=levels, level_scores=scores, latency_ms=latency, timestamps=times
    )
    assert len(batch) == len(rows)
    assert batch.services is services
    assert batch.levels is levels
    assert batch.level_scores is scores
    assert batch.latency_ms is latency
    assert batch.timestamps is times
    # What the dataclass's __post_init__ computed, bit for bit (an int threshold then).
    expected_error = scores >= LEVEL_SCORES[Level.ERROR]
    assert batch.is_error.dtype == np.bool_
    assert np.array_equal(batch.is_error, expected_error)
    assert batch.log_latency.tobytes() == np.log1p(latency).tobytes()
    assert ERROR_LEVEL_SCORE == LEVEL_SCORES[Level.ERROR]


def test_event_batch_is_immutable_and_positional() -> None:
    one = np.ones(1)
    batch = EventBatch(["a"], [Level.ERROR], one * 2.0, one, one)
    with pytest.raises(AttributeError):
        batch.services = ["b"]  # type: ignore[misc]
    assert batch.is_error.tolist() == [True]
    with pytest.raises(TypeError):
        EventBatch(["a"], [Level.ERROR], one, one)  # type: ignore[call-arg]


def test_method_output_default_metrics_are_shared_read_only() -> None:
    first, second = MethodOutput(np.ones(1)), MethodOutput(np.zeros(1))
    assert dict(first.metrics) == {}
    assert first.metrics is second.metrics
    with pytest.raises(TypeError):
        first.metrics["x"] = np.ones(1)  # type: ignore[index]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(LEVELS),
            st.one_of(st.none(), st.floats(0.0, 86_400_000.0), st.sampled_from([0.0, 5e-324])),
            st.one_of(st.none(), st.integers(0, 10**10)),  # ms after 1970
            st.one_of(st.none(), st.floats(0.0, 1e10), st.integers(0, 10**10)),  # received_at
        ),
        min_size=1,
        max_size=20,
    )
)
def test_a_batch_of_one_in_reused_columns_is_from_events_batch(
    events: list[tuple[Level, float | None, int | None, float | None]],
) -> None:
    """``of_one`` (the engine's ``score_one``), event after event in the same columns, against
    ``from_events``' columns for the same event: every column's dtype, shape and bytes."""
    columns = OneEventColumns()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for k, (level, latency, millis, received_at) in enumerate(events):
        event = LogEvent(
            service=f"s{k % 3}",
            level=level,
            message="m",
            latency_ms=latency,
            timestamp=None if millis is None else epoch + timedelta(milliseconds=millis),
        )
        with patch("app.events.time.time", return_value=1.79e9 + k):  # a missing time's clock
            one = EventBatch.of_one(event, received_at, columns)
            # The event's row of a batch of two (the general path; from_events of one event
            # is of_one itself).
            expected = EventBatch.from_events((event, event), received_at)
        assert one._fields == expected._fields
        assert one.services == expected.services[:1]
        assert one.levels == expected.levels[:1]
        for name in one._fields[2:]:
            got, want = getattr(one, name), getattr(expected, name)[:1]
            assert got.dtype == want.dtype, name
            assert got.shape == want.shape == (1,), name
            assert got.tobytes() == want.tobytes(), name
