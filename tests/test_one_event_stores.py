"""Each store's one-event path (``observe_one``, what ``ScoringEngine.observe`` takes for a batch of
one) against its batch path on the same event: the same views bit for bit, and the same state
left behind (every later answer depends on it), on streams with new services, warm-ups,
evictions, missing latencies, every level and odd messages; then whole answers, model swap
included, against an engine whose stores answer one event through their batch paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import patterns
from app.baselines import BaselineStore, SeedBaseline
from app.engine import ScoringEngine
from app.events import EventBatch
from app.forecasts import ForecastStore
from app.model import fit_model, model_from_arrays
from app.patterns import PatternStore
from app.records import RecordStore
from app.schemas.events import Level, LogEvent
from app.sequences import SequenceStore
from app.templates import TemplateStore
from app.training_data import TrainingData
from app.windows import WindowStore
from tests.conftest import make_settings
from tests.helpers import bootstrap_data_model
from tests.test_store_equivalence import messages_of, state_of, streams


def same_view(one: Any, batch: Any) -> None:
    """Field by field: dtype, shape and bytes (NaN payloads included)."""
    assert type(one) is type(batch)
    for name, a, b in zip(batch._fields, one, batch, strict=True):
        assert a.dtype == b.dtype, name
        assert a.shape == b.shape == (1,), name
        assert a.tobytes() == b.tobytes(), name


def ones(batches: list[EventBatch]) -> Iterator[tuple[EventBatch, int, int]]:
    """Each event of the stream as a batch of one (as EventBatch.from_events makes it), with
    its batch's and its own index."""
    for b, batch in enumerate(batches):
        for i in range(len(batch)):
            values = np.array(
                (batch.level_scores[i], batch.latency_ms[i], batch.timestamps[i]), np.float64
            )
            one = EventBatch(
                batch.services[i : i + 1], batch.levels[i : i + 1], values[0:1], values[1:2],
                values[2:3],
            )  # fmt: skip
            yield one, b, i


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    batches=streams(),
    max_services=st.integers(1, 8),
    warmup=st.sampled_from([1, 3, 20]),
    seeded=st.lists(st.tuples(st.sampled_from(["s0", "s3", "t"]), st.integers(0, 40)), max_size=3),
)
def test_row_stores_one_event_path_is_the_batch_path(
    data: st.DataObject,
    batches: list[EventBatch],
    max_services: int,
    warmup: int,
    seeded: list[tuple[str, int]],
) -> None:
    n_buckets = data.draw(st.sampled_from([1, 5, 60]))
    min_records = data.draw(st.sampled_from([0, 3, 1000]))

    def make() -> list[Any]:
        baselines = BaselineStore(warmup, 600.0, max_services)
        # Seeded rows (a model swap) make the baselines' slots differ from the other stores'.
        baselines.seed([SeedBaseline(service, 3.0, 0.2, events) for service, events in seeded])
        return [
            baselines,
            WindowStore(300.0, n_buckets, 2, 600.0, max_services),
            ForecastStore(7, 600.0, 0.5, 10.0, warmup, max_services=max_services),
            RecordStore(max_services, min_events=min_records),
        ]

    fast, slow = make(), make()
    for one, _, _ in ones(batches):
        error = bool(one.is_error[0])
        same_view(fast[0].observe_one(one), slow[0].observe(one))
        same_view(fast[1].observe_one(one), slow[1].observe(one))
        same_view(fast[2].observe_one(one, error), slow[2].observe(one))
        same_view(fast[3].observe_one(one), slow[3].observe(one))
    for a, b in zip(fast, slow, strict=True):
        assert list(a) == list(b)
        assert a.evictions == b.evictions
        assert state_of(a.rows) == state_of(b.rows)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    batches=streams(),
    max_services=st.integers(1, 8),
    max_templates=st.sampled_from([10, 5000]),
    halflife=st.sampled_from([0.5, 50.0]),  # 0.5 rescales the surge counters often
    max_contexts=st.sampled_from([4, 64]),
    top_k=st.sampled_from([1, 3]),
    min_level=st.sampled_from([0.0, 1.0]),
)
def test_object_stores_one_event_path_is_the_batch_path(
    data: st.DataObject,
    batches: list[EventBatch],
    max_services: int,
    max_templates: int,
    halflife: float,
    max_contexts: int,
    top_k: int,
    min_level: float,
) -> None:
    messages = data.draw(messages_of(batches))
    # Small warm-ups, tables and decay horizons so that short streams reach the patterns'
    # judging (with its binomial tails), forgetting and halving.
    limits: dict[str, Any] = {
        "QUANTISE_EVENTS": data.draw(st.sampled_from([1, 5, 200])),
        "SETTLE_EVENTS": data.draw(st.sampled_from([0, 10])),
        "MAX_PATTERNS": data.draw(st.sampled_from([4, 8192])),
        "MAX_RATE_EVENTS": data.draw(st.sampled_from([8.0, 20_000.0])),
    }

    def make() -> tuple[TemplateStore, SequenceStore, PatternStore]:
        return (
            TemplateStore(max_templates, 0.5, halflife, max_services, min_level),
            SequenceStore(top_k, max_contexts, max_services),
            PatternStore(max_services),
        )

    fast, slow = make(), make()
    with patch.multiple(patterns, **limits):
        for one, b, i in ones(batches):
            message, service = messages[b][i], one.services[0]
            level, latency = one.level_scores.item(), one.log_latency.item()
            templates = fast[0].observe_one(service, message, level)
            same_view(templates, slow[0].observe(one.services, [message], [level]))
            template_id = templates.template_id.item()
            same_view(
                fast[1].observe_one(service, template_id),
                slow[1].observe(one.services, templates.template_id.copy()),
            )
            same_view(fast[2].observe_one(service, latency), slow[2].observe(one))
    pairs: list[tuple[Any, Any]] = list(zip(fast, slow, strict=True))
    for new, old in pairs:
        assert list(new) == list(old)
        assert new.evictions == old.evictions
        assert [state_of(new.get(s)) for s in new] == [state_of(old.get(s)) for s in old]
    assert state_of(fast[0].miner) == state_of(slow[0].miner)
    assert state_of(fast[0]._tokens) == state_of(slow[0]._tokens)


def _events(n: int, seed: int) -> list[LogEvent]:
    """Varied single events: many services (new ones all along), every level, missing latency
    and timestamps, odd messages (empty, blank, the service's name, free text, long)."""
    rng = np.random.default_rng(seed)
    levels = list(Level)
    words = ["GET", "POST", "/api/items", "timeout", "upstream", "user", "retry", "db", "ok"]
    events = []
    for k in range(n):
        service = f"svc-{int(rng.zipf(1.6)) % 40}"
        kind = rng.random()
        if kind < 0.04:
            message = "" if kind < 0.02 else "   "
        elif kind < 0.1:
            message = f"{service} " + " ".join(rng.choice(words, rng.integers(1, 70)))
        else:
            message = f"{rng.choice(words)} {rng.choice(words)} {rng.integers(0, 300)}"
        latency = None if rng.random() < 0.08 else float(rng.lognormal(3.0, 1.0))
        # Missing timestamps take the receive time the test passes.
        clock = f"2026-11-24T10:{k // 600 % 60:02d}:{k // 10 % 60:02d}Z"
        timestamp = None if rng.random() < 0.03 else clock
        events.append(
            LogEvent.model_validate(
                {
                    "service": service,
                    "level": levels[int(rng.choice(len(levels), p=[0.1, 0.6, 0.15, 0.12, 0.03]))],
                    "message": message,
                    "latency_ms": latency,
                    "timestamp": timestamp,
                }
            )
        )
    return events


@pytest.mark.parametrize("max_services", [5, 100_000])
def test_answers_through_the_one_event_paths_are_the_batch_paths(
    tmp_path: Path, max_services: int
) -> None:
    """Two engines, one scoring through the stores' one-event paths and the other through their
    batch paths (each ``observe_one`` replaced by ``observe``): the same answers, event by event,
    across a model swap."""
    settings_ = make_settings(
        tmp_path, max_services=max_services, template_max=10, sequence_max_contexts=16
    )
    model = bootstrap_data_model("t-1", 20)
    fast, slow = ScoringEngine(settings_, model), ScoringEngine(settings_, model)
    stores = slow
    stores.baselines.observe_one = stores.baselines.observe  # type: ignore[method-assign]
    stores.windows.observe_one = stores.windows.observe  # type: ignore[method-assign]
    stores.records.observe_one = stores.records.observe  # type: ignore[method-assign]
    stores.forecasts.observe_one = (  # type: ignore[method-assign]
        lambda batch, is_error: stores.forecasts.observe(batch)
    )
    stores.templates.observe_one = (  # type: ignore[method-assign]
        lambda service, message, level_score: stores.templates.observe(
            [service], [message], [level_score]
        )
    )
    stores.sequences.observe_one = (  # type: ignore[method-assign]
        lambda service, template_id: stores.sequences.observe(
            [service], np.array([template_id], dtype=np.int64)
        )
    )

    # The patterns read only the service and the log latency (given here as the Python float
    # the engine passes, its bits kept).
    def patterns_of_one(service: str, value: float) -> Any:
        zero = np.zeros(1)
        columns = ([service], [Level.INFO], zero, zero, zero, zero > 0, np.array([value]))
        return stores.patterns.observe(tuple.__new__(EventBatch, columns))

    stores.patterns.observe_one = patterns_of_one  # type: ignore[method-assign]
    events = _events(1500, seed=max_services)
    # A logs model that knows some of the stream's services (and a few it has not seen yet):
    # the swap seeds their baselines and template counts.
    rows = 24 * 12
    names = [f"svc-{k % 12 * 4}" for k in range(rows)]
    training = TrainingData.from_columns(
        names,
        [Level.ERROR if k % 31 == 0 else Level.INFO for k in range(rows)],
        np.random.default_rng(3).lognormal(3.0, 0.5, rows),
        "logs",
        messages=[f"GET db {k % 5}" if k % 3 else "retry upstream timeout" for k in range(rows)],
    )
    refit = fit_model(training, {"n_estimators": 15}, 20)
    swapped = model_from_arrays("t-2", refit.arrays, refit.description)
    for k, event in enumerate(events):
        if k == 900:
            fast.swap(swapped)
            slow.swap(swapped)
        now = 1.79e9 + k
        assert orjson.dumps(fast.score_one(event, now)) == orjson.dumps(slow.score_one(event, now))
