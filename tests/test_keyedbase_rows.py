"""``grown_rows`` (how every per-service store grows its rows) and ``SlotsContainer`` (the
container protocol the stores share)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keyed import least_counted, link_last, unlink
from app.sequences import SequenceStore
from app.service_states import ServiceSlots, SlotsContainer, grown_rows
from app.templates import TemplateStore
from app.windows import WindowStore


@given(
    capacity=st.integers(0, 200),
    needed=st.integers(0, 400),
    max_services=st.integers(1, 400),
    filled=st.booleans(),
)
def test_grown_rows_keeps_rows_and_fills_new_ones(
    capacity: int, needed: int, max_services: int, filled: bool
) -> None:
    capacity = min(capacity, max_services)
    needed = min(needed, max_services)
    array = np.arange(capacity * 3, dtype=np.int64).reshape(capacity, 3) + 1
    fill = np.array([7, -1, 9], dtype=np.int64) if filled else None
    grown = grown_rows(array, needed, max_services, fill)
    if needed <= capacity:
        assert grown is array
        return
    # By half again (at least 16), but never past the bound and never short of what is needed.
    assert grown.shape == (min(max(needed, capacity + capacity // 2, 16), max_services), 3)
    assert grown.dtype == array.dtype
    np.testing.assert_array_equal(grown[:capacity], array)
    new_rows = grown[capacity:]
    if fill is None:
        assert not new_rows.any()
    else:
        assert (new_rows == fill).all()


def test_grown_rows_of_floats_stay_floats() -> None:
    array = np.ones((2, 4, 5))
    grown = grown_rows(array, 3, 100)
    assert grown.shape == (16, 4, 5)
    assert grown.dtype == np.float64
    assert grown[:2].all()
    assert not grown[2:].any()


class _Holder(SlotsContainer):
    def __init__(self) -> None:
        self.services = ServiceSlots(2)


def test_slots_container_reports_the_slots() -> None:
    holder = _Holder()
    for service in ["a", "b", "c"]:
        holder.services.slot_for(service)
    assert holder.max_services == 2
    assert len(holder) == 2
    assert list(holder) == ["b", "c"]
    assert "a" not in holder
    assert "c" in holder
    assert holder.evictions == 1


@pytest.mark.parametrize(
    "store",
    [
        TemplateStore(max_services=3),
        SequenceStore(max_services=3),
        WindowStore(60.0, 6, 5, 30.0, max_services=3),
    ],
    ids=["templates", "sequences", "windows"],
)
def test_every_store_is_a_slots_container(store: SlotsContainer) -> None:
    assert isinstance(store, SlotsContainer)
    assert store.max_services == 3
    assert len(store) == 0
    assert store.evictions == 0


def _lists(pool: np.ndarray, owners: np.ndarray) -> list[list[int]]:
    """Each owner's list, walked forwards and checked against the walk backwards."""
    lists = []
    for owner in range(owners.shape[0]):
        forwards, index = [], int(owners[owner, 0])
        while index >= 0:
            forwards.append(index)
            index = int(pool[index, 1])
        backwards, index = [], int(owners[owner, 1])
        while index >= 0:
            backwards.append(index)
            index = int(pool[index, 0])
        assert backwards == forwards[::-1]
        lists.append(forwards)
    return lists


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 9)), max_size=60))
def test_linked_lists_match_python_lists(steps: list[tuple[bool, int, int]]) -> None:
    """Random appends and removals through ``link_last`` / ``unlink`` keep each owner's list
    as a Python list would be, and ``least_counted`` finds the first of the smallest counts."""
    pool = np.full((10, 3), -1, dtype=np.int64)  # prev, next, count
    owners = np.full((3, 2), -1, dtype=np.int64)  # head, tail
    expected: list[list[int]] = [[], [], []]
    owner_of: dict[int, int] = {}
    for append, owner, index in steps:
        if append and index not in owner_of:
            pool[index, 2] = (index * 7) % 4
            link_last(pool, index, 0, 1, owners, owner, 0, 1)
            expected[owner].append(index)
            owner_of[index] = owner
        elif not append and index in owner_of:
            unlink(pool, index, 0, 1, owners, owner_of[index], 0, 1)
            expected[owner_of.pop(index)].remove(index)
        assert _lists(pool, owners) == expected
    for members in expected:
        if members:
            counts = [int(pool[index, 2]) for index in members]
            least = least_counted(pool, members[0], 2, 1)
            assert least == members[counts.index(min(counts))]
