"""The next-template (sequence) model: order matters, counts alone do not."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import numpy as np

from app import keyed, sequences
from app.compiled import pairwise_sum_python
from app.sequences import MIN_SERVICE_EVENTS, SequenceStore
from app.templates import NO_TEMPLATE, TemplateStore
from tests.test_store_equivalence import state_of


def _ids(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def test_a_step_out_of_a_fixed_order_is_surprising_while_the_order_is_not() -> None:
    store = SequenceStore(top_k=1)
    cycle = [0, 1, 2, 3] * 100  # open, read, write, close, ...
    store.observe(["job"] * len(cycle), _ids(*cycle))
    view = store.observe(["job"] * 4, _ids(0, 1, 3, 2))  # write and close swapped
    assert view.rarity[0] == 1.0
    assert view.rarity[1] == 1.0
    assert view.rarity[2] < 0.01
    assert view.rank[2] > 1


def test_the_same_templates_in_any_order_are_fine_for_a_service_without_order() -> None:
    rng = np.random.default_rng(0)
    store = SequenceStore(top_k=4)
    store.observe(["web"] * 2000, rng.integers(0, 4, 2000).astype(np.int64))
    view = store.observe(["web"] * 200, rng.integers(0, 4, 200).astype(np.int64))
    assert np.all(view.rarity == 1.0)


def test_services_have_separate_models_and_new_ones_are_not_judged() -> None:
    store = SequenceStore(top_k=1)
    store.observe(["a"] * 400, _ids(*([5, 6] * 200)))
    view = store.observe(["b"] * (MIN_SERVICE_EVENTS - 1), _ids(*([6] * (MIN_SERVICE_EVENTS - 1))))
    assert np.all(view.rarity == 1.0)
    assert np.all(view.rank == 0)


def test_events_without_a_message_are_skipped_not_counted() -> None:
    store = SequenceStore(top_k=1)
    store.observe(["a"] * 200, _ids(*([1, 2] * 100)))
    view = store.observe(["a"] * 3, _ids(1, NO_TEMPLATE, 2))
    assert np.all(view.rarity == 1.0)


def test_contexts_per_service_are_bounded() -> None:
    store = SequenceStore(top_k=3, max_contexts=32)
    store.observe(["a"] * 5000, np.arange(5000, dtype=np.int64) % 997)
    state = store.get("a")
    assert state is not None
    assert len(state.contexts) <= 32
    assert len(state.unigram.counts) <= 33


def test_sequences_run_on_mined_templates() -> None:
    templates = TemplateStore()
    lines = ["login user 1", "load profile 1", "render page 1", "logout user 1"] * 60
    view = templates.observe(["ui"] * len(lines), lines)
    store = SequenceStore(top_k=1)
    normal = store.observe(["ui"] * len(lines), view.template_id)
    assert np.all(normal.rarity[MIN_SERVICE_EVENTS:] == 1.0)
    odd = templates.observe(["ui"] * 2, ["logout user 2", "render page 3"])
    assert store.observe(["ui"] * 2, odd.template_id).rarity.min() < 0.01


def test_plain_python_kernels_match_the_compiled_ones() -> None:
    """The kernels' sources run as plain Python (a numpy-only install) give the same views and
    state as the compiled kernels."""
    names = ("_drop_context", "_new_context", "_touch_context", "_count_in_context", "_reset_row")
    plain: dict[str, Any] = {name: getattr(sequences, f"{name}_python") for name in names}
    table: dict[str, Any] = {
        name: getattr(keyed, f"{name}_python") for name in ("probe", "find", "put", "drop")
    }
    table.update(take=keyed.take_python, give=keyed.give_python, rehash=keyed.rehash_python)
    in_sequences: dict[str, Any] = {
        "find": keyed.find_python, "put": keyed.put_python, "drop_key": keyed.drop_python,
        "take": keyed.take_python, "give": keyed.give_python,
        "link_last": keyed.link_last_python, "unlink": keyed.unlink_python,
        "least_counted": keyed.least_counted_python,
        "pairwise_sum": pairwise_sum_python, "_backoff": sequences._backoff_python,
        "_observe": sequences._observe_kernel,
    }  # fmt: skip
    rng = np.random.default_rng(3)
    batches = [
        ([f"s{k}" for k in rng.integers(0, 4, size)], rng.integers(-1, 160, size).astype(np.int64))
        for size in rng.integers(1, 300, 12)
    ]
    compiled, python = SequenceStore(2, 24, 3), SequenceStore(2, 24, 3)
    for services, ids in batches:
        expected = compiled.observe(services, ids)
        with (
            patch.multiple(keyed, **table),
            patch.multiple(sequences, **plain, **in_sequences),
        ):
            got = python.observe(services, ids)
        for a, b in zip(expected, got, strict=True):
            assert a.tobytes() == b.tobytes()
    assert list(compiled) == list(python)
    assert [state_of(compiled.get(s)) for s in compiled] == [
        state_of(python.get(s)) for s in python
    ]
