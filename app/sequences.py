"""Each service's template sequence and a next-template model over it, learned online.

DeepLog (Du et al., CCS 2017) asks, for every log line, whether its template is among the ``k``
most likely next templates given the preceding ones, with an LSTM as the predictor. Here the
predictor is a per-service n-gram model with Witten-Bell backoff (order 2 -> 1 -> 0 -> "a template
this service never produced"), the classic compression/language-model estimator (Witten & Bell,
IEEE Trans. Inf. Theory 1991):

    P(x | ctx) = (c(ctx, x) + D(ctx) * P(x | shorter ctx)) / (N(ctx) + D(ctx))

with ``N`` the events seen after ``ctx`` and ``D`` the distinct templates seen after it. It learns
from every event in O(1), needs no training pass, and its memory is bounded (contexts per service).

An event whose template is in the model's top ``k`` is ordinary (rarity 1, as in DeepLog).
Otherwise its rarity is the model's probability mass of next templates at most as likely as the
one observed: the exact tail probability of "this surprising" under the model.

State is kept in arrays that one compiled pass per batch reads and updates (``_observe_kernel``):
per service a row (its last two templates, its events and its unigram), a pool of contexts and a
pool of counters, each linked in the order the dictionaries of the plain model kept them
(insertion order for counters, least recently used first for contexts), and one open-addressing
table from (owner, key) to a counter or context. The order matters: it breaks ties when the least
frequent unigram counter is dropped, and it is the order the backoff distribution is summed in.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.compiled import compile_kernel, pairwise_sum, unchecked
from app.keyed import (
    KEYS_LIVE,
    find,
    give,
    grown_pool,
    grown_table,
    least_counted,
    link_last,
    new_table,
    put,
    take,
    unlink,
)
from app.keyed import drop as drop_key
from app.service_states import ServiceSlots, SlotsContainer, grown_rows
from app.templates import NO_TEMPLATE

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Transitions a service needs before its sequence is judged.
MIN_SERVICE_EVENTS = 50
_START = -2  # context slot before a service's first message

# A service's row: its previous two templates, events, unigram (total, distinct counters, first
# and last counter) and contexts (how many, least and most recently used).
_PREV_A, _PREV_B, _EVENTS, _U_TOTAL, _U_DISTINCT, _U_HEAD, _U_TAIL = range(7)
_C_COUNT, _C_HEAD, _C_TAIL = range(7, 10)
_ROW_FIELDS = 10
# A context: its key, total and distinct counters, its counters' list, and its neighbours in
# the service's recency list (the free list reuses _X_NEXT).
_X_ROW, _X_A, _X_B, _X_TOTAL, _X_DISTINCT, _X_HEAD, _X_TAIL, _X_PREV, _X_NEXT = range(9)
_CONTEXT_FIELDS = 9
# A counter (of a unigram or of a context): template, count, neighbours in its owner's list.
_E_TEMPLATE, _E_COUNT, _E_PREV, _E_NEXT = range(4)
_ENTRY_FIELDS = 4
# Keys of the table (``app.keyed``): a unigram counter (row, _UNIGRAM, template); a context
# (row, a, b), _SINGLE as ``a`` for the (b,) context; a context's counter (-1 - context,
# template, 0).
_UNIGRAM = -10
_SINGLE = -5
# Pool bookkeeping (``app.keyed``): per pool the slots handed out so far, its free list's head
# and its slots in use; and the keys the table holds.
_CONTEXTS_USED, _CONTEXTS_FREE, _CONTEXTS_LIVE = range(3)
_ENTRIES_USED, _ENTRIES_FREE, _ENTRIES_LIVE = range(3, 6)
_META_FIELDS = 7
# Most an event adds: a unigram counter, two contexts, a counter in each (five keys).
_NEW_CONTEXTS, _NEW_ENTRIES, _NEW_KEYS = 2, 3, 5


class _Counts:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0


class ServiceSequence:
    """A picture of one service's model, read from the arrays (``SequenceStore.get``)."""

    __slots__ = ("contexts", "events", "previous", "unigram")

    def __init__(self) -> None:
        self.previous = (_START, _START)
        self.unigram = _Counts()
        # (a, b) and (b,) contexts, least recently used first.
        self.contexts: OrderedDict[tuple[int, ...], _Counts] = OrderedDict()
        self.events = 0


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class SequenceView(NamedTuple):
    rarity: FloatArray  # 1 where the template is in the top k or the service is too new
    probability: FloatArray  # the model's P(template | previous two); NaN where not judged
    rank: IntArray  # 1 = the most likely next template; 0 where not judged


def _drop_context_python(
    row: int,
    context: int,
    rows: IntArray,
    contexts: IntArray,
    entries: IntArray,
    table: IntArray,
    meta: IntArray,
) -> None:
    """Forget a context: its counters, its key, and its place in the service's recency list."""
    entry = contexts[context, _X_HEAD]
    while entry >= 0:
        following = entries[entry, _E_NEXT]
        drop_key(table, meta, -1 - context, entries[entry, _E_TEMPLATE], 0)
        give(entries, meta, _ENTRIES_USED, _E_NEXT, entry)
        entry = following
    drop_key(table, meta, row, contexts[context, _X_A], contexts[context, _X_B])
    unlink(contexts, context, _X_PREV, _X_NEXT, rows, row, _C_HEAD, _C_TAIL)
    rows[row, _C_COUNT] -= 1
    give(contexts, meta, _CONTEXTS_USED, _X_NEXT, context)


_drop_context = (
    compile_kernel(
        _drop_context_python,
        "void(int64, int64, int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[:, ::1],"
        " int64[::1])",
    )
    or _drop_context_python
)


def _new_context_python(
    row: int,
    a: int,
    b: int,
    rows: IntArray,
    contexts: IntArray,
    table: IntArray,
    meta: IntArray,
) -> int:
    """A new, empty context, the service's most recently used."""
    context = take(contexts, meta, _CONTEXTS_USED, _X_NEXT)
    contexts[context, _X_ROW] = row
    contexts[context, _X_A] = a
    contexts[context, _X_B] = b
    contexts[context, _X_TOTAL] = 0
    contexts[context, _X_DISTINCT] = 0
    contexts[context, _X_HEAD] = -1
    contexts[context, _X_TAIL] = -1
    link_last(contexts, context, _X_PREV, _X_NEXT, rows, row, _C_HEAD, _C_TAIL)
    rows[row, _C_COUNT] += 1
    put(table, meta, row, a, b, context)
    return context


_new_context = (
    compile_kernel(
        _new_context_python,
        "int64(int64, int64, int64, int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[::1])",
    )
    or _new_context_python
)


def _touch_context_python(row: int, context: int, rows: IntArray, contexts: IntArray) -> None:
    """Make a context the service's most recently used."""
    if contexts[context, _X_NEXT] < 0:
        return  # already the last
    unlink(contexts, context, _X_PREV, _X_NEXT, rows, row, _C_HEAD, _C_TAIL)
    link_last(contexts, context, _X_PREV, _X_NEXT, rows, row, _C_HEAD, _C_TAIL)


_touch_context = (
    compile_kernel(_touch_context_python, "void(int64, int64, int64[:, ::1], int64[:, ::1])")
    or _touch_context_python
)


def _count_in_context_python(
    context: int,
    template_id: int,
    contexts: IntArray,
    entries: IntArray,
    table: IntArray,
    meta: IntArray,
) -> None:
    """One more ``template_id`` after a context (a new counter goes last)."""
    entry = find(table, -1 - context, template_id, 0)
    if entry < 0:
        entry = take(entries, meta, _ENTRIES_USED, _E_NEXT)
        entries[entry, _E_TEMPLATE] = template_id
        entries[entry, _E_COUNT] = 0
        link_last(entries, entry, _E_PREV, _E_NEXT, contexts, context, _X_HEAD, _X_TAIL)
        contexts[context, _X_DISTINCT] += 1
        put(table, meta, -1 - context, template_id, 0, entry)
    entries[entry, _E_COUNT] += 1
    contexts[context, _X_TOTAL] += 1


_count_in_context = (
    compile_kernel(
        _count_in_context_python,
        "void(int64, int64, int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[::1])",
    )
    or _count_in_context_python
)


def _reset_row_python(
    row: int,
    rows: IntArray,
    contexts: IntArray,
    entries: IntArray,
    table: IntArray,
    meta: IntArray,
) -> None:
    """Start a row afresh: forget whatever an evicted service left in it."""
    entry = rows[row, _U_HEAD]
    while entry >= 0:
        following = entries[entry, _E_NEXT]
        drop_key(table, meta, row, _UNIGRAM, entries[entry, _E_TEMPLATE])
        give(entries, meta, _ENTRIES_USED, _E_NEXT, entry)
        entry = following
    while rows[row, _C_HEAD] >= 0:
        _drop_context(row, rows[row, _C_HEAD], rows, contexts, entries, table, meta)
    rows[row, _PREV_A] = _START
    rows[row, _PREV_B] = _START
    rows[row, _EVENTS] = 0
    rows[row, _U_TOTAL] = 0
    rows[row, _U_DISTINCT] = 0
    rows[row, _U_HEAD] = -1
    rows[row, _U_TAIL] = -1


_reset_row = (
    compile_kernel(
        _reset_row_python,
        "void(int64, int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[::1])",
    )
    or _reset_row_python
)


def _backoff_python(
    row: int,
    single: int,
    pair: int,
    template_id: int,
    top_k: int,
    rows: IntArray,
    contexts: IntArray,
    entries: IntArray,
    table: IntArray,
    out: FloatArray,
    ranks: IntArray,
    i: int,
) -> None:
    """The full Witten-Bell distribution, for an event the (a, b) context alone does not rank in
    the top k: its probability, rank and, past the top k, the tail mass at most as likely.

    Values in the order the plain model's dictionaries held them: the unigram's templates, then
    the (b,) context's new ones, then the (a, b) context's; each blended as it was, in the same
    operations (``escape * lower`` then ``+ count / denominator``, or ``0.0 +`` for a new one)."""
    total = rows[row, _U_TOTAL]
    distinct = rows[row, _U_DISTINCT]
    escape0 = distinct / (total + distinct)
    kept = 1.0 - escape0
    use_single = single >= 0 and contexts[single, _X_TOTAL] > 0
    use_pair = pair >= 0 and contexts[pair, _X_TOTAL] > 0
    size = distinct
    single_denominator = 0
    single_escape = 0.0
    unseen = escape0
    if use_single:
        single_distinct = contexts[single, _X_DISTINCT]
        single_denominator = contexts[single, _X_TOTAL] + single_distinct
        single_escape = single_distinct / single_denominator
        unseen = single_escape * unseen
        size += single_distinct
    pair_denominator = 0
    pair_escape = 0.0
    if use_pair:
        pair_distinct = contexts[pair, _X_DISTINCT]
        pair_denominator = contexts[pair, _X_TOTAL] + pair_distinct
        pair_escape = pair_distinct / pair_denominator
        unseen = pair_escape * unseen
        size += pair_distinct
    values = np.empty(size, dtype=np.float64)
    n = 0
    p = unseen
    entry = rows[row, _U_HEAD]
    while entry >= 0:
        t = entries[entry, _E_TEMPLATE]
        value = kept * (entries[entry, _E_COUNT] / total)
        if use_single:
            value = single_escape * value
            counter = find(table, -1 - single, t, 0)
            if counter >= 0:
                value = value + entries[counter, _E_COUNT] / single_denominator
        if use_pair:
            value = pair_escape * value
            counter = find(table, -1 - pair, t, 0)
            if counter >= 0:
                value = value + entries[counter, _E_COUNT] / pair_denominator
        values[n] = value
        n += 1
        if t == template_id:
            p = value
        entry = entries[entry, _E_NEXT]
    if use_single:
        entry = contexts[single, _X_HEAD]
        while entry >= 0:
            t = entries[entry, _E_TEMPLATE]
            if find(table, row, _UNIGRAM, t) < 0:
                value = 0.0 + entries[entry, _E_COUNT] / single_denominator
                if use_pair:
                    value = pair_escape * value
                    counter = find(table, -1 - pair, t, 0)
                    if counter >= 0:
                        value = value + entries[counter, _E_COUNT] / pair_denominator
                values[n] = value
                n += 1
                if t == template_id:
                    p = value
            entry = entries[entry, _E_NEXT]
    if use_pair:
        entry = contexts[pair, _X_HEAD]
        while entry >= 0:
            t = entries[entry, _E_TEMPLATE]
            if find(table, row, _UNIGRAM, t) < 0 and not (
                use_single and find(table, -1 - single, t, 0) >= 0
            ):
                value = 0.0 + entries[entry, _E_COUNT] / pair_denominator
                values[n] = value
                n += 1
                if t == template_id:
                    p = value
            entry = entries[entry, _E_NEXT]
    above = 0
    below = 0
    for j in range(n):
        if values[j] > p:
            above += 1
        elif values[j] <= p:
            values[below] = values[j]  # the ones at most as likely, in order, for the tail sum
            below += 1
    rank = 1 + above
    ranks[i] = rank
    out[1, i] = p
    if rank > top_k:
        # Mass of templates at most as likely, plus all never-seen ones.
        mass = pairwise_sum(values, below) + unseen
        out[0, i] = mass if mass < 1.0 else 1.0


_backoff = (
    compile_kernel(
        _backoff_python,
        "void(int64, int64, int64, int64, int64, int64[:, ::1], int64[:, ::1], int64[:, ::1],"
        " int64[:, ::1], float64[:, ::1], int64[::1], int64)",
    )
    or _backoff_python
)


def _observe_kernel(
    codes: IntArray,
    template_ids: IntArray,
    rows: IntArray,
    contexts: IntArray,
    entries: IntArray,
    table: IntArray,
    meta: IntArray,
    out: FloatArray,
    ranks: IntArray,
    top_k: int,
    max_contexts: int,
) -> None:
    """Judge each event's template against its service's model, then learn it: in order.
    Compiled by numba (``app.compiled``); as plain Python the same arithmetic."""
    for i in range(template_ids.shape[0]):
        out[0, i] = 1.0
        out[1, i] = math.nan
        ranks[i] = 0
        template_id = template_ids[i]
        if template_id == NO_TEMPLATE:
            continue
        row = codes[i]
        if row < 0:
            row = ~row  # the row's first event for this service (ServiceSlots.row_codes)
            _reset_row(row, rows, contexts, entries, table, meta)
        a = rows[row, _PREV_A]
        b = rows[row, _PREV_B]
        pair = find(table, row, a, b)
        single = find(table, row, _SINGLE, b)
        if rows[row, _EVENTS] >= MIN_SERVICE_EVENTS:
            count = 0
            if pair >= 0:
                entry = find(table, -1 - pair, template_id, 0)
                if entry >= 0:
                    count = entries[entry, _E_COUNT]
            # Fast path: the order-2 context alone already ranks the template in its top k,
            # that is fewer than k (k >= 1, as settings require) templates are more frequent
            # there: one pass, no sort.
            greater = top_k
            pair_denominator = 0
            if pair >= 0 and count > 0:
                greater = 0
                entry = contexts[pair, _X_HEAD]
                while entry >= 0:
                    if entries[entry, _E_COUNT] > count:
                        greater += 1
                    entry = entries[entry, _E_NEXT]
                pair_denominator = contexts[pair, _X_TOTAL] + contexts[pair, _X_DISTINCT]
            if greater < top_k:
                ranks[i] = 1 + greater
                out[1, i] = count / pair_denominator
            else:
                _backoff(
                    row, single, pair, template_id, top_k, rows, contexts, entries, table, out,
                    ranks, i,
                )  # fmt: skip
        # The unigram learns the template (a new counter goes last); past max_contexts counters
        # the least frequent (the first of them) is dropped.
        entry = find(table, row, _UNIGRAM, template_id)
        if entry < 0:
            entry = take(entries, meta, _ENTRIES_USED, _E_NEXT)
            entries[entry, _E_TEMPLATE] = template_id
            entries[entry, _E_COUNT] = 0
            link_last(entries, entry, _E_PREV, _E_NEXT, rows, row, _U_HEAD, _U_TAIL)
            rows[row, _U_DISTINCT] += 1
            put(table, meta, row, _UNIGRAM, template_id, entry)
        entries[entry, _E_COUNT] += 1
        rows[row, _U_TOTAL] += 1
        if rows[row, _U_DISTINCT] > max_contexts:
            least = least_counted(entries, rows[row, _U_HEAD], _E_COUNT, _E_NEXT)
            rows[row, _U_TOTAL] -= entries[least, _E_COUNT]
            unlink(entries, least, _E_PREV, _E_NEXT, rows, row, _U_HEAD, _U_TAIL)
            rows[row, _U_DISTINCT] -= 1
            drop_key(table, meta, row, _UNIGRAM, entries[least, _E_TEMPLATE])
            give(entries, meta, _ENTRIES_USED, _E_NEXT, least)
        # The (b,) then the (a, b) context learns the template; each is made the most recently
        # used (the least recently used is dropped past max_contexts).
        if single < 0:
            single = _new_context(row, _SINGLE, b, rows, contexts, table, meta)
            if rows[row, _C_COUNT] > max_contexts:
                oldest = rows[row, _C_HEAD]
                _drop_context(row, oldest, rows, contexts, entries, table, meta)
                # Making room for (b,) may have dropped (a, b).
                if oldest == pair:
                    pair = -1
        else:
            _touch_context(row, single, rows, contexts)
        _count_in_context(single, template_id, contexts, entries, table, meta)
        if pair < 0:
            pair = _new_context(row, a, b, rows, contexts, table, meta)
            if rows[row, _C_COUNT] > max_contexts:
                _drop_context(row, rows[row, _C_HEAD], rows, contexts, entries, table, meta)
        else:
            _touch_context(row, pair, rows, contexts)
        _count_in_context(pair, template_id, contexts, entries, table, meta)
        rows[row, _PREV_A] = b
        rows[row, _PREV_B] = template_id
        rows[row, _EVENTS] += 1


_compiled_observe = compile_kernel(
    _observe_kernel,
    "void(int64[::1], int64[::1], int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[:, ::1],"
    " int64[::1], float64[:, ::1], int64[::1], int64, int64)",
)
_observe = _compiled_observe or _observe_kernel
# The one-event path's call: its arguments are the store's own arrays, exactly the
# signature's (``unchecked``).
_observe_one = unchecked(_observe)


_EMPTY_ROW = np.array([_START, _START, 0, 0, 0, -1, -1, 0, -1, -1], dtype=np.int64)


class SequenceStore(SlotsContainer):
    """Next-template models of at most ``max_services`` services (least recently seen evicted)."""

    def __init__(self, top_k: int = 5, max_contexts: int = 4096, max_services: int = 100_000):
        self.top_k = top_k
        self.max_contexts = max_contexts
        self.services = ServiceSlots(max_services)
        self._rows = np.empty((0, _ROW_FIELDS), dtype=np.int64)
        self._contexts = np.zeros((16, _CONTEXT_FIELDS), dtype=np.int64)
        self._entries = np.zeros((16, _ENTRY_FIELDS), dtype=np.int64)
        self._table = new_table(64)
        self._meta = np.zeros(_META_FIELDS, dtype=np.int64)
        self._meta[_CONTEXTS_FREE] = self._meta[_ENTRIES_FREE] = -1
        # The one event's row code and template, passed to the kernel: reused (it only reads
        # them during the call).
        self._code_of_one = np.empty(1, dtype=np.int64)
        self._id_of_one = np.empty(1, dtype=np.int64)
        # Its outputs and their view, made once: the kernel sets them for every event (two
        # arrays and three views made per event cost a sixth of the call).
        self._one_out = np.empty((2, 1))
        self._one_ranks = np.empty(1, dtype=np.int64)
        self._one_view = SequenceView(self._one_out[0], self._one_out[1], self._one_ranks)
        # Events that fit in the pools and the table as they are (each adds at most
        # _NEW_CONTEXTS, _NEW_ENTRIES and _NEW_KEYS): ``_reserve`` is skipped until they are
        # spent, so the batch of one seldom pays for it.
        self._headroom = 0

    def _allocate_rows(self) -> None:
        """Rows for every slot handed out (``grown_rows``)."""
        # Empty lists: a new row's first event resets it by walking them.
        services = self.services
        self._rows = grown_rows(self._rows, services.rows_used, services.max_services, _EMPTY_ROW)

    def _reserve(self, events: int) -> None:
        """Room in the pools and the table for ``events`` more events (each grows by doubling)."""
        if self._headroom >= events:
            self._headroom -= events
            return
        live = [int(v) for v in self._meta[[_CONTEXTS_LIVE, _ENTRIES_LIVE, KEYS_LIVE]]]
        contexts, entries, keys = live
        contexts += _NEW_CONTEXTS * events
        entries += _NEW_ENTRIES * events
        keys += _NEW_KEYS * events
        self._contexts = grown_pool(self._contexts, 2 * contexts)
        self._entries = grown_pool(self._entries, 2 * entries)
        self._table = grown_table(self._table, self._meta, keys)
        # Grown to twice what these events need (the table to at most a quarter full), so the
        # next reserve is some way off; the table stays at most half full until then.
        self._headroom = (
            min(
                (self._contexts.shape[0] - live[0]) // _NEW_CONTEXTS,
                (self._entries.shape[0] - live[1]) // _NEW_ENTRIES,
                (self._table.shape[0] // 2 - live[2]) // _NEW_KEYS,
            )
            - events
        )

    def _run(self, codes: IntArray, template_ids: IntArray) -> SequenceView:
        out = np.empty((2, template_ids.shape[0]))
        ranks = np.empty(template_ids.shape[0], dtype=np.int64)
        _observe(
            codes, template_ids, self._rows, self._contexts, self._entries, self._table,
            self._meta, out, ranks, self.top_k, self.max_contexts,
        )  # fmt: skip
        return SequenceView(out[0], out[1], ranks)

    def observe(self, services: Sequence[str], template_ids: IntArray) -> SequenceView:
        """Judge each event's template against its service's model, then learn it: in order."""
        ids = np.ascontiguousarray(template_ids, dtype=np.int64)
        templated = ids != NO_TEMPLATE
        if templated.all():
            codes = self.services.row_codes(services)
        else:
            # Only the events with a template touch their service (its recency included).
            codes = np.zeros(len(services), dtype=np.int64)
            kept = [service for service, t in zip(services, templated.tolist(), strict=True) if t]
            if kept:
                codes[templated] = self.services.row_codes(kept)
        self._allocate_rows()
        self._reserve(len(services))
        return self._run(codes, ids)

    def observe_one(self, service: str, template_id: int) -> SequenceView:
        """``observe`` of a batch of one (the engine's one-event path): the same kernel, its row
        code and template in the store's reused arrays. The view is the store's own, valid
        until its next ``observe_one`` (the engine reads it before)."""
        codes = self._code_of_one
        ids = self._id_of_one
        ids[0] = template_id
        if template_id != NO_TEMPLATE:
            # ``ServiceSlots.slot_for``'s path for a known service (nearly every event), inline.
            slots = self.services._slots
            slot = slots.get(service)
            if slot is not None:
                slots.move_to_end(service)
                codes[0] = slot
            else:
                slot, _ = self.services.slot_for(service)
                codes[0] = ~slot
                if slot >= self._rows.shape[0]:
                    self._allocate_rows()
            self._reserve(1)
        _observe_one(
            codes, ids, self._rows, self._contexts, self._entries, self._table, self._meta,
            self._one_out, self._one_ranks, self.top_k, self.max_contexts,
        )  # fmt: skip
        return self._one_view

    def get(self, service: str) -> ServiceSequence | None:
        """A picture of the service's model if it is tracked (its counters and contexts in their
        order); reading it does not count as seeing it."""
        row = self.services.get(service)
        if row is None:
            return None
        fields = self._rows[row]
        state = ServiceSequence()
        state.previous = (int(fields[_PREV_A]), int(fields[_PREV_B]))
        state.events = int(fields[_EVENTS])
        state.unigram = self._counts(int(fields[_U_HEAD]), int(fields[_U_TOTAL]))
        context = int(fields[_C_HEAD])
        while context >= 0:
            a, b = int(self._contexts[context, _X_A]), int(self._contexts[context, _X_B])
            key = (b,) if a == _SINGLE else (a, b)
            state.contexts[key] = self._counts(
                int(self._contexts[context, _X_HEAD]), int(self._contexts[context, _X_TOTAL])
            )
            context = int(self._contexts[context, _X_NEXT])
        return state

    def _counts(self, entry: int, total: int) -> _Counts:
        counts = _Counts()
        counts.total = total
        while entry >= 0:
            counts.counts[int(self._entries[entry, _E_TEMPLATE])] = int(
                self._entries[entry, _E_COUNT]
            )
            entry = int(self._entries[entry, _E_NEXT])
        return counts
