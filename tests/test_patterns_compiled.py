"""The compiled pattern store (rows, hash tables in an arena) against the per-service objects it
replaced (tests/reference/patterns_scalar.py): the same views bit for bit and the same state,
through warm-up, judging, forgetting at MAX_PATTERNS, halving, eviction and arena compaction."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import patterns
from app.events import EventBatch
from app.patterns import PatternStore, PatternView
from app.schemas.events import Level
from tests.reference import patterns_scalar
from tests.test_store_equivalence import streams

FIELDS = PatternView._fields


def same_view(new: PatternView, old: Any) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(
            getattr(new, name), getattr(old, name), err_msg=name, strict=True
        )


def same_state(new: PatternStore, old: patterns_scalar.PatternStore) -> None:
    assert list(new) == list(old)
    assert new.evictions == old.evictions
    for service in old:
        expected, state = old.get(service), new.get(service)
        assert expected is not None
        assert state is not None
        assert state.centre.hex() == expected.centre.hex()
        assert state.width.hex() == expected.width.hex()
        assert (state.history, state.learned) == (expected.history, expected.learned)
        assert state.warmup == expected.warmup
        assert state.counts == [dict(sorted(table.items())) for table in expected.counts]
        assert state.novel == expected.novel
        assert state.total == expected.total
        assert state.recent == expected.recent


def limits_of(data: st.DataObject) -> dict[str, Any]:
    """Small warm-ups, tables and decay horizons so that short streams reach judging,
    forgetting and halving, and a small arena so that they reach its compaction."""
    return {
        "QUANTISE_EVENTS": data.draw(st.sampled_from([1, 5, 200])),
        "SETTLE_EVENTS": data.draw(st.sampled_from([0, 10, 200])),
        "MAX_PATTERNS": data.draw(st.sampled_from([2, 4, 8192])),
        "MAX_RATE_EVENTS": data.draw(st.sampled_from([8.0, 20_000.0])),
        "_MIN_ARENA": data.draw(st.sampled_from([1, 1024])),
    }


def scalar_limits(limits: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in limits.items() if not name.startswith("_")}


@settings(max_examples=80, deadline=None)
@given(data=st.data(), batches=streams(), max_services=st.integers(1, 8))
def test_batches_match_the_scalar_store(
    data: st.DataObject, batches: list[EventBatch], max_services: int
) -> None:
    limits = limits_of(data)
    with (
        patch.multiple(patterns, **limits),
        patch.multiple(patterns_scalar, **scalar_limits(limits)),
    ):
        new, old = PatternStore(max_services), patterns_scalar.PatternStore(max_services)
        for batch in batches:
            same_view(new.observe(batch), old.observe(batch))
        same_state(new, old)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), batches=streams(), max_services=st.integers(1, 8))
def test_one_event_matches_the_scalar_store(
    data: st.DataObject, batches: list[EventBatch], max_services: int
) -> None:
    limits = limits_of(data)
    with (
        patch.multiple(patterns, **limits),
        patch.multiple(patterns_scalar, **scalar_limits(limits)),
    ):
        new, old = PatternStore(max_services), patterns_scalar.PatternStore(max_services)
        for batch in batches:
            for i in range(len(batch)):
                part = slice(i, i + 1)
                one = EventBatch(
                    batch.services[part],
                    batch.levels[part],
                    batch.level_scores[part],
                    batch.latency_ms[part],
                    batch.timestamps[part],
                )
                same_view(
                    new.observe_one(batch.services[i], float(batch.log_latency[i])),
                    old.observe(one),
                )
        same_state(new, old)


def plain(function: Any) -> Any:
    """The Python source of a compiled kernel (the kernel itself where numba is missing)."""
    return getattr(function, "py_func", function)


KERNELS = ("_position", "_rehash", "_forget_singletons", "_learn_new", "_warm_up", "_compact")


@settings(max_examples=10, deadline=None)
@given(data=st.data(), batches=streams(), max_services=st.integers(1, 4))
def test_kernels_as_plain_python_match_the_compiled_kernels(
    data: st.DataObject, batches: list[EventBatch], max_services: int
) -> None:
    """Without numba the kernels run as written: the same views and state."""
    limits = limits_of(data)
    with patch.multiple(patterns, **limits):
        compiled, python = PatternStore(max_services), PatternStore(max_services)
        kernels = {name: plain(getattr(patterns, name)) for name in KERNELS}
        kernels["_observe"] = patterns._observe_kernel
        kernels["_judge"] = patterns._judge_kernel
        for batch in batches:
            expected = compiled.observe(batch)
            with patch.multiple(patterns, **kernels):
                same_view(python.observe(batch), expected)
        assert [python.get(s) for s in python] == [compiled.get(s) for s in compiled]


def noisy(n: int, seed: int, services: int, prefix: str = "svc-") -> list[EventBatch]:
    """Latencies spread over many levels (tables fill up to MAX_PATTERNS), a few missing."""
    rng = np.random.default_rng(seed)
    names = [f"{prefix}{k}" for k in rng.integers(0, services, n)]
    latency = 20.0 * np.exp(rng.normal(0.0, 2.5, n))
    latency[rng.random(n) < 0.03] = np.nan
    batches = []
    for start in range(0, n, 1000):
        part = slice(start, start + 1000)
        size = len(names[part])
        batches.append(
            EventBatch(
                names[part], [Level.INFO] * size, np.zeros(size), latency[part], np.zeros(size)
            )
        )
    return batches


def table_sizes(store: PatternStore) -> list[int]:
    return [len(table) for s in store for table in store.get(s).counts]  # type: ignore[union-attr]


@pytest.mark.parametrize("max_patterns", [64, patterns.MAX_PATTERNS])
def test_forgetting_at_max_patterns_matches_the_scalar_store(max_patterns: int) -> None:
    limits: dict[str, Any] = {"MAX_PATTERNS": max_patterns}
    new, old = PatternStore(), patterns_scalar.PatternStore()
    forgotten = 0
    with patch.multiple(patterns, **limits), patch.multiple(patterns_scalar, **limits):
        for batch in noisy(60_000, seed=5, services=2):
            before = table_sizes(new)
            same_view(new.observe(batch), old.observe(batch))
            after = table_sizes(new)
            forgotten += sum(a < b for a, b in zip(after, before, strict=False))
            assert max(after) <= max_patterns
    same_state(new, old)
    assert forgotten > 0  # tables reached the bound and were cut back


def test_the_arena_stays_bounded_while_services_come_and_go() -> None:
    """Evicted services' tables are reclaimed when the arena is compacted: memory follows the
    services tracked, not the services ever seen."""
    store = PatternStore(max_services=4)
    with patch.multiple(patterns, QUANTISE_EVENTS=5, SETTLE_EVENTS=5):
        for seed in range(200):
            for batch in noisy(2000, seed, services=1, prefix=f"s{seed}-"):
                store.observe(batch)
    # 4 services x 5 orders, each table at most 4 x its entries (half full, key and count),
    # the arena at most 4 x what it holds (twice that, plus as much again when next compacted).
    assert store._arena.nbytes <= 4 * 4 * 5 * 4 * 2000 * 8
