"""An open-addressing table from keys of three integers to integers, and pools of rows with a
free list: the containers the compiled kernels of per-service stores (``app.sequences``,
``app.templates``) keep their dictionaries in, as arrays a kernel can read and update.

A table is an ``(2**k, 4)`` int64 array of rows ``(k0, k1, k2, value)``, ``value < 0`` marking
an empty slot; linear probing, deletion by moving back the keys that probed past the hole (no
tombstones). Its owner keeps it at most half full. A pool is a 2-D int64 array whose rows are
handed out by ``take`` and returned by ``give``; ``meta`` holds per pool the rows handed out so
far, the free list's head and the rows in use (three consecutive fields), and the table's keys.
Pool rows are chained into doubly linked lists (``link_last``, ``unlink``) that a row of another
array owns; ``grown_pool`` and ``grown_table`` make room between batches.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.compiled import compile_kernel

IntArray = npt.NDArray[np.int64]

K0, K1, K2, VALUE = range(4)
# The field of ``meta`` counting the table's keys (the pools' fields come before it).
KEYS_LIVE = 6
# Odd multipliers mixing a key's three integers into a table slot (low bits only, so the
# plain-Python kernel, on unbounded integers, hashes exactly as the compiled one).
_MIX0, _MIX1, _MIX2 = 0x1E3779B97F4A7C15, 0x42B2AE3D27D4EB4F, 0x165667B19E3779F9


def new_table(size: int) -> IntArray:
    """An empty table of ``size`` (a power of two) slots."""
    return np.full((size, 4), -1, dtype=np.int64)


def probe_python(table: IntArray, k0: int, k1: int, k2: int) -> int:
    """The table slot holding the key, or the empty slot where it would go (linear probing)."""
    mask = table.shape[0] - 1
    slot: int = ((int(k0) * _MIX0) ^ (int(k1) * _MIX1) ^ (int(k2) * _MIX2)) & mask
    while table[slot, VALUE] >= 0:
        if table[slot, K0] == k0 and table[slot, K1] == k1 and table[slot, K2] == k2:
            return slot
        slot = (slot + 1) & mask
    return slot


probe = compile_kernel(probe_python, "int64(int64[:, ::1], int64, int64, int64)") or probe_python


def find_python(table: IntArray, k0: int, k1: int, k2: int) -> int:
    """The key's value, or -1."""
    return int(table[probe(table, k0, k1, k2), VALUE])


find = compile_kernel(find_python, "int64(int64[:, ::1], int64, int64, int64)") or find_python


def put_python(table: IntArray, meta: IntArray, k0: int, k1: int, k2: int, value: int) -> None:
    """Add a key that is not in the table (the caller keeps the table at most half full)."""
    slot = probe(table, k0, k1, k2)
    table[slot, K0] = k0
    table[slot, K1] = k1
    table[slot, K2] = k2
    table[slot, VALUE] = value
    meta[KEYS_LIVE] += 1


put = (
    compile_kernel(put_python, "void(int64[:, ::1], int64[::1], int64, int64, int64, int64)")
    or put_python
)


def drop_python(table: IntArray, meta: IntArray, k0: int, k1: int, k2: int) -> None:
    """Remove a key in the table, moving back the keys after it that probed past its slot."""
    mask = table.shape[0] - 1
    hole = probe(table, k0, k1, k2)
    meta[KEYS_LIVE] -= 1
    slot = hole
    while True:
        slot = (slot + 1) & mask
        if table[slot, VALUE] < 0:
            table[hole, VALUE] = -1
            return
        home = (
            (int(table[slot, K0]) * _MIX0)
            ^ (int(table[slot, K1]) * _MIX1)
            ^ (int(table[slot, K2]) * _MIX2)
        ) & mask
        # The key stays if its home lies cyclically in (hole, slot]: the hole is not on its path.
        if hole <= slot:
            if hole < home <= slot:
                continue
        elif home > hole or home <= slot:
            continue
        table[hole, K0] = table[slot, K0]
        table[hole, K1] = table[slot, K1]
        table[hole, K2] = table[slot, K2]
        table[hole, VALUE] = table[slot, VALUE]
        hole = slot


drop = (
    compile_kernel(drop_python, "void(int64[:, ::1], int64[::1], int64, int64, int64)")
    or drop_python
)


def take_python(pool: IntArray, meta: IntArray, used: int, next_field: int) -> int:
    """A free slot of a pool (``meta[used]``, ``used + 1``, ``used + 2``: handed out, free list
    head, in use), from its free list first; the caller reserved room."""
    index = meta[used + 1]
    if index >= 0:
        meta[used + 1] = pool[index, next_field]
    else:
        index = meta[used]
        meta[used] += 1
    meta[used + 2] += 1
    return int(index)


take = compile_kernel(take_python, "int64(int64[:, ::1], int64[::1], int64, int64)") or take_python


def give_python(pool: IntArray, meta: IntArray, used: int, next_field: int, index: int) -> None:
    """Return a slot to its pool's free list."""
    pool[index, next_field] = meta[used + 1]
    meta[used + 1] = index
    meta[used + 2] -= 1


give = (
    compile_kernel(give_python, "void(int64[:, ::1], int64[::1], int64, int64, int64)")
    or give_python
)


def rehash_python(old: IntArray, new: IntArray, meta: IntArray) -> None:
    """Put every key of ``old`` into the empty, larger ``new``."""
    meta[KEYS_LIVE] = 0
    for slot in range(old.shape[0]):
        if old[slot, VALUE] >= 0:
            put(new, meta, old[slot, K0], old[slot, K1], old[slot, K2], old[slot, VALUE])


rehash = (
    compile_kernel(rehash_python, "void(int64[:, ::1], int64[:, ::1], int64[::1])") or rehash_python
)


# Doubly linked lists through a pool's rows: a row's ``prev`` and ``next`` fields link it, the
# list's owner (a row of another array) holds its ``head`` and ``tail``; -1 ends a list.
_LINK_SIGNATURE = "void(int64[:, ::1], int64, int64, int64, int64[:, ::1], int64, int64, int64)"


def link_last_python(
    pool: IntArray,
    index: int,
    prev: int,
    next_: int,
    owners: IntArray,
    owner: int,
    head: int,
    tail: int,
) -> None:
    """Put the pool's row ``index`` last in the list of ``owners[owner]``."""
    last = owners[owner, tail]
    pool[index, prev] = last
    pool[index, next_] = -1
    if last >= 0:
        pool[last, next_] = index
    else:
        owners[owner, head] = index
    owners[owner, tail] = index


link_last = compile_kernel(link_last_python, _LINK_SIGNATURE) or link_last_python


def unlink_python(
    pool: IntArray,
    index: int,
    prev: int,
    next_: int,
    owners: IntArray,
    owner: int,
    head: int,
    tail: int,
) -> None:
    """Take the pool's row ``index`` out of the list of ``owners[owner]`` (its own links are
    left as they were)."""
    before, after = pool[index, prev], pool[index, next_]
    if before >= 0:
        pool[before, next_] = after
    else:
        owners[owner, head] = after
    if after >= 0:
        pool[after, prev] = before
    else:
        owners[owner, tail] = before


unlink = compile_kernel(unlink_python, _LINK_SIGNATURE) or unlink_python


def least_counted_python(pool: IntArray, first: int, count: int, next_: int) -> int:
    """The row of the smallest ``count`` field in the list from ``first`` (the earliest of
    equals)."""
    least = first
    index = pool[first, next_]
    while index >= 0:
        if pool[index, count] < pool[least, count]:
            least = index
        index = pool[index, next_]
    return int(least)


least_counted = (
    compile_kernel(least_counted_python, "int64(int64[:, ::1], int64, int64, int64)")
    or least_counted_python
)


def grown_table(table: IntArray, meta: IntArray, keys: int) -> IntArray:
    """``table``, or when ``keys`` would fill more than a quarter of it, a table of doubled size
    holding them all at most a quarter full, its keys rehashed (``meta`` counts them anew)."""
    size = table.shape[0]
    if 4 * keys <= size:
        return table
    while 4 * keys > size:
        size *= 2
    grown = new_table(size)
    rehash(table, grown, meta)
    return grown


def grown_pool(pool: IntArray, needed: int) -> IntArray:
    """``pool`` with at least ``needed`` rows (its size doubled as often as needed), contents
    kept, new rows zero."""
    size = pool.shape[0]
    if needed <= size:
        return pool
    while size < needed:
        size *= 2
    grown = np.zeros((size, pool.shape[1]), dtype=np.int64)
    grown[: pool.shape[0]] = pool
    return grown
