"""Seeding at a model swap runs on the event loop, so it was made array-wise (baselines) and
memoised (templates). These tests hold it to the per-service code it replaced: the same rows, the
same slot order, the same counters, and the same answers from the engine after a swap."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.baselines import BaselineStore, SeedBaseline
from app.engine import ScoringEngine
from app.events import EventBatch, parse_events
from app.local import AnomalyDetector
from app.model import fit_model
from app.model_store import ModelStore
from app.schemas.events import Level
from app.templates import SeedTemplates, TemplateStore
from app.training_data import TrainingData
from bench.common import event_stream


def _per_service_template_seed(
    store: TemplateStore, miner_arrays: dict[str, Any] | None, seeds: list[SeedTemplates]
) -> None:
    """``TemplateStore.seed`` as it was before the memo: one miner lookup per (service, text)."""
    from app.templates import TemplateMiner

    if miner_arrays is not None and len(store.miner) == 0 and store.miner.next_id == 0:
        store.miner = TemplateMiner.from_arrays(
            miner_arrays, "", store.miner.max_templates, store.miner.similarity
        )
    for seed in seeds:
        if seed.service in store:
            continue
        counts: dict[int, int] = {}
        for text, count in seed.counts.items():
            template_id = store.miner.find(text)
            if template_id is None:
                template_id = store.miner.add(text)
            counts[template_id] = counts.get(template_id, 0) + count
        store._seed_service(seed.service, counts)


def _batch(services: list[str], start: float) -> EventBatch:
    n = len(services)
    return EventBatch(
        services=services,
        levels=[Level.INFO] * n,
        level_scores=np.zeros(n),
        latency_ms=10.0 + np.arange(n, dtype=np.float64),
        timestamps=start + np.arange(n, dtype=np.float64),
    )


seeds_strategy = st.lists(
    st.builds(
        SeedBaseline,
        service=st.sampled_from([f"s{k}" for k in range(12)]),
        location=st.floats(-2.0, 8.0),
        scale=st.floats(0.0, 2.0),
        events=st.integers(0, 30_000),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    live=st.lists(st.sampled_from([f"s{k}" for k in range(12)]), max_size=8),
    seeds=seeds_strategy,
    max_services=st.sampled_from([3, 8, 100]),
    warmup=st.sampled_from([1, 5, 20]),
)
def test_baseline_seed_matches_the_per_service_loop(
    live: list[str], seeds: list[SeedBaseline], max_services: int, warmup: int
) -> None:
    stores = [BaselineStore(warmup, 3600.0, max_services) for _ in range(2)]
    batch = _batch(live, 1.7e9)
    for store in stores:
        if live:
            store.observe(batch)
    stores[0].seed(seeds)
    stores[1]._seed_one_by_one(seeds)
    array_wise, one_by_one = stores
    assert list(array_wise.services._slots.items()) == list(one_by_one.services._slots.items())
    used = one_by_one.services.rows_used
    np.testing.assert_array_equal(array_wise.rows[0][:used], one_by_one.rows[0][:used])
    np.testing.assert_array_equal(array_wise.rows[1][:used], one_by_one.rows[1][:used])
    assert array_wise.evictions == one_by_one.evictions
    # And the stores go on alike.
    later = _batch([f"s{k}" for k in range(12)], 1.8e9)
    first, second = array_wise.observe(later), one_by_one.observe(later)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(
        st.sampled_from(
            ["op a done", "op b done", "op <*> done", "user x failed", "user y failed", "z"]
        ),
        min_size=1,
        max_size=6,
    ),
    services=st.lists(st.sampled_from([f"s{k}" for k in range(6)]), min_size=1, max_size=12),
    counts=st.lists(st.integers(1, 5), min_size=12, max_size=12),
    max_templates=st.sampled_from([2, 3, 50]),
)
def test_template_seed_matches_the_per_service_lookups(
    texts: list[str], services: list[str], counts: list[int], max_templates: int
) -> None:
    seeds = [
        SeedTemplates(
            service, {text: counts[(i + j) % 12] for j, text in enumerate(texts[i % 3 :])}
        )
        for i, service in enumerate(services)
    ]
    memoised = TemplateStore(max_templates=max_templates)
    reference = TemplateStore(max_templates=max_templates)
    memoised.seed(None, seeds)
    _per_service_template_seed(reference, None, seeds)
    assert list(memoised) == list(reference)
    for service in reference:
        a, b = memoised.get(service), reference.get(service)
        assert a is not None
        assert b is not None
        assert (list(a.counts.items()), a.messages, a.singletons) == (
            list(b.counts.items()),
            b.messages,
            b.singletons,
        )
    mined = memoised.miner.to_arrays("")
    assert mined.keys() == reference.miner.to_arrays("").keys()
    for name, array in reference.miner.to_arrays("").items():
        np.testing.assert_array_equal(mined[name], array)


def _logs_data(services: int) -> TrainingData:
    rng = np.random.default_rng(3)
    rows = services * 30  # past the engine's warm-up: seeded baselines are ready
    names = [f"svc-{i % services}" for i in range(rows)]
    messages = [f"op{i % 5} request {i} done by worker {i % 3}" for i in range(rows)]
    levels = [Level.ERROR if i % 31 == 0 else Level.INFO for i in range(rows)]
    return TrainingData.from_columns(
        names, levels, rng.lognormal(3.0, 0.5, rows), "logs", messages=messages
    )


@pytest.mark.parametrize("swaps", [1, 2])
def test_answers_after_a_swap_match_the_per_service_seeding(tmp_path: Path, swaps: int) -> None:
    """Score a stream, swap in a trained logs model, score more: the answers are those of the
    per-service seeding, byte for byte (the services of the stream overlap the model's)."""
    store = ModelStore(tmp_path / "store")
    model = store.save(fit_model(_logs_data(60), {"n_estimators": 10}, 20))
    stream = parse_events(event_stream(600, services=80, seed=4))
    # Before the swap 30 of the model's 60 services are live (not seeded); after it, the other
    # 30 are seeded and 30 more are unknown to the model.
    renamed = [
        event.model_copy(update={"service": f"svc-{i % (30 if i < 200 else 90)}"})
        for i, event in enumerate(stream)
    ]

    def run(engine: ScoringEngine) -> list[bytes]:
        answers = engine.score_json(renamed[:200], received_at=1.7e9)
        for _ in range(swaps):
            engine.swap(model)
        return answers + engine.score_json(renamed[200:], received_at=1.7e9)

    # One artifacts directory: both engines start from the same stored bootstrap version.
    fresh = run(AnomalyDetector(artifacts_dir=tmp_path / "a").engine)
    with (
        patch.object(BaselineStore, "seed", BaselineStore._seed_one_by_one),
        patch.object(TemplateStore, "seed", _per_service_template_seed),
    ):
        per_service = run(AnomalyDetector(artifacts_dir=tmp_path / "a").engine)
    assert fresh == per_service
