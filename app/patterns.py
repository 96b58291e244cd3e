"""Per-service patterns of latency levels, learned online: is the recent run of patterns new?

The contextual idea of the Contextual Anomaly Detector (CAD OSE, Smirnov, Numenta Anomaly
Benchmark 2016: a stream of quantised values, "contexts" of the recent values, and an anomaly when
the current context was never seen) and of relative-entropy detection (Wang et al. 2011: a
window's distribution against the ones seen before), implemented here as counting, not as
either's algorithm:

- Each latency is quantised to a *level*, ``floor((log(1 + ms) - centre) / width)``, clamped to
  ``+-MAX_LEVEL``, with the centre (median) and the width (``WIDTH_SPREADS`` robust spreads) of
  the service's first ``QUANTISE_EVENTS`` latencies. Fixed from then on: a level means the same
  latency band for the service's whole life, so a learned pattern stays learned.
- The pattern of order ``j`` (0 to ``ORDERS - 1``) of an event is its level after the ``j``
  levels before it. Each order keeps a count of every pattern seen; a pattern seen fewer than
  ``NEW_BELOW`` (3) times is *new* (``novel`` in the code; new at order ``j`` implies new at
  every higher order). Not only the never-seen ones: a shape the service has shown once or twice
  in thousands of events is nearly as much news, and a change that repeats an old incident's
  shape is still seen.
- A single new pattern is not news: a service whose latencies are noisy makes new ones all the
  time, and one that has run for n events cannot call anything rarer than about 1/n. A *run* of
  them is: for each order, the share of novel patterns over the service's past (``rate``, the
  Good-Turing estimate of the chance that the next pattern is new) against the novel patterns
  among the last ``RECENT_EVENTS`` (``recent``) gives the binomial upper tail
  ``P(X >= recent | RECENT_EVENTS, rate)``; the rarity is the smallest over the orders at which
  the event is novel, times ``ORDERS`` (Bonferroni). An event whose pattern is known at every
  order is not judged (rarity 1): the method speaks for the events that carry the change.

What it sees that the forecast does not: a change of *shape* where no single value is extreme for
its time of day (a weekday that runs like a Sunday, a service that starts oscillating between
two familiar levels, a slow climb to levels it never reached). It does not see a familiar level
held for longer than ever: a few events into it every pattern is known again, so that is left
to the forecast and the likelihood. The per-service online recalibration
(``detectors.calibration``) then learns how often such runs really occur: the binomial tail
assumes independent patterns, and real novelty comes in bursts.

Cost: O(``ORDERS``) hash-table probes per event in one compiled pass over the batch, one
vectorised binomial tail per batch; memory at most ``MAX_PATTERNS`` counts per order and service.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import bdtrc
from scipy.special.cython_special import bdtrc as bdtrc_one

from app.compiled import compile_kernel, unchecked
from app.events import EventBatch
from app.service_states import RowStore

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Latencies that fix a service's quantisation (its centre and level width).
QUANTISE_EVENTS = 200
# Patterns learned after the quantisation before the method judges: the novelty rate needs a past.
SETTLE_EVENTS = 200
# Level width in robust spreads (1.4826 MAD of log latency): about eight levels across the
# service's usual range, coarse enough that noise alone does not make every pattern new.
WIDTH_SPREADS = 0.5
MIN_WIDTH = 0.01
MAX_LEVEL = 15  # levels are clamped to +-15 widths: 31 symbols, 5 bits each
LEVEL_BITS = 5
ORDERS = 5  # patterns of the level alone up to the level after the 4 before it
RECENT_EVENTS = 16
# A pattern seen fewer times than this counts as new (see the module docstring). Measured on
# NAB (docs/evaluation.md): 1 (never seen) 62.6, 2 62.9, 3 63.9, 5 63.8, 10 62.7.
NEW_BELOW = 3
# Novelty counts are halved beyond this many patterns, so the rate follows a changing service.
MAX_RATE_EVENTS = 20_000.0
# Bound on the patterns kept per order and service; beyond it those seen once are forgotten.
MAX_PATTERNS = 8192

_RECENT_MASK = (1 << RECENT_EVENTS) - 1
_HISTORY_MASK = (1 << (LEVEL_BITS * (ORDERS - 1))) - 1  # the last ORDERS - 1 levels
# The pattern of order j is the level after the j levels before it: the low LEVEL_BITS * (j + 1)
# bits of (history << LEVEL_BITS) | level.

# Each service is one row of scalars (``RowStore``), exact integers kept as floats (all below
# 2**53), whose hash tables of pattern counts and warm-up latencies are regions of two arenas
# (an int64 and a float64 array shared by every service), so that a compiled kernel updates a
# whole batch without a Python object per service, and is called with arrays only (numba's
# typed lists, the other way to hold a table per service, cost ~1.5 us each to pass in: more
# than the one-event path's whole kernel).
(
    _CENTRE,
    _WIDTH,
    _HISTORY,  # the last ORDERS - 1 levels, LEVEL_BITS each, the newest in the lowest bits
    _LEARNED,  # patterns learned since the quantisation (up to ORDERS - 1 levels)
    _WARMED,  # warm-up latencies gathered so far; -1 once the levels are fixed
    _WARM_AT,  # where the warm-up latencies are in the float arena, and room for how many
    _WARM_ROOM,
) = range(7)
_SIZES = 7  # ORDERS entries each from here: patterns in each order's table
_AT = _SIZES + ORDERS  # where each order's table is in the int arena
_CAPACITY = _AT + ORDERS  # each table's capacity (0: none yet)
_NOVEL = _CAPACITY + ORDERS  # novel patterns among ``total`` (decayed by halving)
_TOTAL = _NOVEL + ORDERS
_RECENT = _TOTAL + ORDERS  # novelty of the last RECENT_EVENTS patterns, one bit each
_SCALARS = _RECENT + ORDERS
# The arenas' bookkeeping (one small int64 array): how much of each is handed out (regions are
# handed out at the end and never reused: a grown, forgotten or evicted table's old region is
# reclaimed when the arena is compacted, when it is full), and, when the kernel stops because
# one is full, how much the next event may need. And the number of binomial tests.
_TABLES_USED, _VALUES_USED, _TABLES_NEEDED, _VALUES_NEEDED, _TESTED = range(5)
_META = 5
# Rows of the kernel's list of binomial tests (one column per order at which an event is novel
# while it is judged), and of the view's columns.
_TEST_EVENT, _TEST_SUCCESSES, _TEST_TRIALS, _TEST_RATE = range(4)
_RARITY, _NOVEL_ORDER, _RECENT_NOVEL, _NOVELTY_RATE = range(4)
# Hash tables: open addressing with linear probing, (key, count) pairs side by side, capacity a
# power of two at most half full.
_NO_KEY = -1
_MIN_CAPACITY = 8
_MIN_WARM_ROOM = 8  # warm-up latencies: room for 8, doubled up to QUANTISE_EVENTS
# Fibonacci hashing: the product's middle bits depend on every bit of a pattern (below 2**25,
# so the product stays below 2**57), the older levels included.
_HASH_MULTIPLIER = 2654435761
_HASH_SHIFT = 16
_MIN_ARENA = 1024


def _position(arena: IntArray, at: int, capacity: int, key: int) -> int:
    """Where ``key`` is in the table at ``at``, or the empty place it would go to."""
    mask = capacity - 1
    place = ((key * _HASH_MULTIPLIER) >> _HASH_SHIFT) & mask
    while True:
        stored = arena[at + 2 * place]
        if stored == key or stored == _NO_KEY:
            return place
        place = (place + 1) & mask


def _rehash(
    arena: IntArray,
    meta: IntArray,
    at: int,
    capacity: int,
    new_capacity: int,
    keep_above: int,
    divisor: int,
) -> int:
    """A table of ``new_capacity``, handed out at the arena's end, with the entries of the
    table at ``at`` counted above ``keep_above``, their counts divided (floor) by ``divisor``;
    returns where it is."""
    fresh = meta[_TABLES_USED]
    meta[_TABLES_USED] = fresh + 2 * new_capacity
    arena[fresh : fresh + 2 * new_capacity] = _NO_KEY
    for place in range(capacity):
        key = arena[at + 2 * place]
        count = arena[at + 2 * place + 1]
        if key != _NO_KEY and count > keep_above:
            into = fresh + 2 * _position(arena, fresh, new_capacity, key)
            arena[into] = key
            arena[into + 1] = count // divisor
    return int(fresh)


def _forget_singletons(
    arena: IntArray, meta: IntArray, row: FloatArray, order: int, max_patterns: int
) -> None:
    """Keep the table bounded: patterns seen once go first (they are the ones a noisy service
    makes by the thousand); if that is not enough, every count is halved (and those that halve
    to 1 go too). Which entries remain does not depend on the table's layout."""
    at = int(row[_AT + order])
    capacity = int(row[_CAPACITY + order])
    kept = 0
    for place in range(capacity):
        if arena[at + 2 * place] != _NO_KEY and arena[at + 2 * place + 1] > 1:
            kept += 1
    keep_above = 1
    divisor = 1
    if kept >= max_patterns // 2:
        keep_above = 3
        divisor = 2
        kept = 0
        for place in range(capacity):
            if arena[at + 2 * place] != _NO_KEY and arena[at + 2 * place + 1] > 3:
                kept += 1
    new_capacity = _MIN_CAPACITY
    while 2 * (kept + 1) > new_capacity:
        new_capacity *= 2
    row[_AT + order] = _rehash(arena, meta, at, capacity, new_capacity, keep_above, divisor)
    row[_CAPACITY + order] = new_capacity
    row[_SIZES + order] = kept


def _learn_new(
    arena: IntArray, meta: IntArray, row: FloatArray, order: int, key: int, count: int
) -> None:
    """``table[key] = count`` for a key that may be absent (a novel pattern), the table grown
    (or made) when it would be more than half full."""
    capacity = int(row[_CAPACITY + order])
    if capacity == 0:
        at = meta[_TABLES_USED]
        meta[_TABLES_USED] = at + 2 * _MIN_CAPACITY
        arena[at : at + 2 * _MIN_CAPACITY] = _NO_KEY
        capacity = _MIN_CAPACITY
        row[_AT + order] = at
        row[_CAPACITY + order] = capacity
    at = int(row[_AT + order])
    place = at + 2 * _position(arena, at, capacity, key)
    if arena[place] != key:
        size = int(row[_SIZES + order]) + 1
        if 2 * size > capacity:
            at = _rehash(arena, meta, at, capacity, 2 * capacity, 0, 1)
            capacity *= 2
            row[_AT + order] = at
            row[_CAPACITY + order] = capacity
            place = at + 2 * _position(arena, at, capacity, key)
        row[_SIZES + order] = size
        arena[place] = key
    arena[place + 1] = count


def _warm_up(
    row: FloatArray, values: FloatArray, meta: IntArray, value: float, quantise: int
) -> None:
    """Gather a warm-up latency; the ``quantise``-th fixes the levels (and lets the latencies
    go)."""
    gathered = int(row[_WARMED])
    at = int(row[_WARM_AT])
    if gathered == row[_WARM_ROOM]:
        room = min(max(2 * gathered, _MIN_WARM_ROOM), max(quantise, gathered + 1))
        moved = meta[_VALUES_USED]
        meta[_VALUES_USED] = moved + room
        values[moved : moved + gathered] = values[at : at + gathered]
        at = moved
        row[_WARM_AT] = at
        row[_WARM_ROOM] = room
    values[at + gathered] = value
    gathered += 1
    row[_WARMED] = gathered
    if gathered >= quantise:
        sample = values[at : at + gathered]
        centre = np.median(sample)
        spread = 1.4826 * np.median(np.abs(sample - centre))
        width = WIDTH_SPREADS * spread
        row[_CENTRE] = centre
        row[_WIDTH] = MIN_WIDTH if MIN_WIDTH > width else width  # max(width, MIN_WIDTH)
        row[_WARMED] = -1.0
        row[_WARM_ROOM] = 0.0


def _observe_kernel(
    start: int,
    codes: IntArray,
    log_latency: FloatArray,
    state: FloatArray,
    arena: IntArray,
    values: FloatArray,
    meta: IntArray,
    columns: FloatArray,
    tests: FloatArray,
    quantise: int,
    settle: int,
    max_patterns: int,
    max_rate_events: float,
) -> int:
    """Judge each event's patterns against its service's past, then learn them, in order, from
    event ``start``: ``columns`` gets the view's columns but the binomial tails (rarity 1 and no
    tail for now), ``tests`` one column per binomial test to make (event, successes, trials,
    rate), in event order (``meta[_TESTED]`` of them). Returns the number of events done: all
    of them, or those before the first for which an arena may be too small (``meta`` then says
    how much it needs; the caller makes room and calls again from there).

    Compiled by numba (see ``app.compiled``); as plain Python it is the same arithmetic in the
    same order as the per-service objects it replaced. ``quantise``, ``settle``,
    ``max_patterns`` and ``max_rate_events`` are the module's limits, passed so that the
    compiled kernel follows them when they change (tests shrink them)."""
    tested = meta[_TESTED]
    for i in range(start, codes.shape[0]):
        columns[_RARITY, i] = 1.0
        columns[_NOVEL_ORDER, i] = math.nan
        columns[_RECENT_NOVEL, i] = math.nan
        columns[_NOVELTY_RATE, i] = math.nan
        s = codes[i]
        row = state[~s] if s < 0 else state[s]
        if s < 0:  # the row's first event for this service (ServiceSlots.row_codes)
            # A new service's patterns: warming up, nothing learned (its regions left behind).
            row[:] = 0.0
            row[_WIDTH] = 1.0
        value = log_latency[i]
        if value != value:
            continue
        if row[_WARMED] >= 0.0:
            if row[_WARMED] == row[_WARM_ROOM]:
                needed = max(2 * int(row[_WARM_ROOM]), _MIN_WARM_ROOM, quantise)
                if meta[_VALUES_USED] + needed > values.shape[0]:
                    meta[_VALUES_NEEDED] = needed
                    meta[_TESTED] = tested
                    return i
            _warm_up(row, values, meta, value, quantise)
            continue
        # Room for the worst case: every order's table made, grown or rebuilt.
        needed = 0
        for j in range(ORDERS):
            needed += 4 * int(row[_CAPACITY + j]) + 2 * _MIN_CAPACITY
        if meta[_TABLES_USED] + needed > arena.shape[0]:
            meta[_TABLES_NEEDED] = needed
            meta[_TESTED] = tested
            return i
        # Clamped before the conversion to an integer, which an out-of-range float would wrap.
        scaled = math.floor((value - row[_CENTRE]) / row[_WIDTH])
        if scaled < -MAX_LEVEL:
            scaled = -MAX_LEVEL
        elif scaled > MAX_LEVEL:
            scaled = MAX_LEVEL
        level = int(scaled) + MAX_LEVEL
        learned = int(row[_LEARNED])
        # The orders whose context is complete.
        usable = ORDERS if learned >= ORDERS - 1 else learned + 1
        judge = learned >= settle
        first_novel = -1
        # Every order's pattern is the low bits of one integer: the level after the history.
        pattern = (int(row[_HISTORY]) << LEVEL_BITS) | level
        for j in range(usable):
            key = pattern & ((1 << (LEVEL_BITS * (j + 1))) - 1)
            capacity = int(row[_CAPACITY + j])
            seen = 0
            place = 0
            if capacity > 0:
                at = int(row[_AT + j])
                place = at + 2 * _position(arena, at, capacity, key)
                if arena[place] == key:
                    seen = arena[place + 1]
            recent = int(row[_RECENT + j]) << 1
            if seen >= NEW_BELOW:
                # A known pattern (most of them): counted, and a 0 bit in the recent ones.
                arena[place + 1] = seen + 1
                row[_RECENT + j] = recent & _RECENT_MASK
            else:
                recent = (recent | 1) & _RECENT_MASK
                if first_novel < 0:
                    first_novel = j
                if judge:
                    # Good-Turing: the service's past share of new patterns (plus this one, so
                    # that a service which never made one is not certain it cannot).
                    successes = 0
                    bits = recent
                    while bits:
                        successes += bits & 1
                        bits >>= 1
                    tests[_TEST_EVENT, tested] = i
                    tests[_TEST_SUCCESSES, tested] = successes
                    tests[_TEST_TRIALS, tested] = min(learned + 1, RECENT_EVENTS)
                    tests[_TEST_RATE, tested] = (row[_NOVEL + j] + 1.0) / (row[_TOTAL + j] + 1.0)
                    tested += 1
                row[_NOVEL + j] += 1.0  # (only here: a known pattern adds nothing)
                if row[_SIZES + j] >= max_patterns:
                    _forget_singletons(arena, meta, row, j, max_patterns)
                _learn_new(arena, meta, row, j, key, seen + 1)
                row[_RECENT + j] = recent
            total = row[_TOTAL + j] + 1.0
            if total > max_rate_events:
                row[_NOVEL + j] *= 0.5
                total *= 0.5
            row[_TOTAL + j] = total
        if judge and first_novel >= 0:
            columns[_NOVEL_ORDER, i] = first_novel
        row[_HISTORY] = pattern & _HISTORY_MASK
        row[_LEARNED] = learned + 1
    meta[_TESTED] = tested
    return int(codes.shape[0])


def _compact_kernel(
    state: FloatArray,
    rows: int,
    arena: IntArray,
    values: FloatArray,
    new_arena: IntArray,
    new_values: FloatArray,
    meta: IntArray,
) -> None:
    """Copy the regions the first ``rows`` rows hold into new arenas, side by side (a row given
    to a new service later in the batch still holds its old service's: copied, then let go at
    its reset)."""
    used = 0
    for s in range(rows):
        row = state[s]
        for j in range(ORDERS):
            size = 2 * int(row[_CAPACITY + j])
            if size > 0:
                at = int(row[_AT + j])
                new_arena[used : used + size] = arena[at : at + size]
                row[_AT + j] = used
                used += size
    meta[_TABLES_USED] = used
    used = 0
    for s in range(rows):
        row = state[s]
        room = int(row[_WARM_ROOM])
        if room > 0:
            at = int(row[_WARM_AT])
            new_values[used : used + room] = values[at : at + room]
            row[_WARM_AT] = used
            used += room
    meta[_VALUES_USED] = used


def _judge_kernel(tests: FloatArray, tails: FloatArray, columns: FloatArray) -> None:
    """Per tested event, the order with the smallest tail (the first of equal ones; the tests
    come in event order): its rarity, Bonferroni-corrected, its successes and its rate."""
    best = 0
    for entry in range(1, tails.shape[0] + 1):
        if entry < tails.shape[0] and tests[_TEST_EVENT, entry] == tests[_TEST_EVENT, best]:
            if tails[entry] < tails[best]:
                best = entry
            continue
        i = int(tests[_TEST_EVENT, best])
        rarity = ORDERS * tails[best]
        columns[_RARITY, i] = rarity if rarity < 1.0 else 1.0  # min(1.0, rarity)
        columns[_RECENT_NOVEL, i] = tests[_TEST_SUCCESSES, best]
        columns[_NOVELTY_RATE, i] = tests[_TEST_RATE, best]
        best = entry


_position = compile_kernel(_position, "int64(int64[::1], int64, int64, int64)") or _position
_rehash = (
    compile_kernel(_rehash, "int64(int64[::1], int64[::1], int64, int64, int64, int64, int64)")
    or _rehash
)
_forget_singletons = (
    compile_kernel(_forget_singletons, "void(int64[::1], int64[::1], float64[::1], int64, int64)")
    or _forget_singletons
)
_learn_new = (
    compile_kernel(_learn_new, "void(int64[::1], int64[::1], float64[::1], int64, int64, int64)")
    or _learn_new
)
_warm_up = (
    compile_kernel(_warm_up, "void(float64[::1], float64[::1], int64[::1], float64, int64)")
    or _warm_up
)
_observe = (
    compile_kernel(
        _observe_kernel,
        "int64(int64, int64[::1], float64[::1], float64[:, ::1], int64[::1], float64[::1],"
        " int64[::1], float64[:, ::1], float64[:, ::1], int64, int64, int64, float64)",
    )
    or _observe_kernel
)
# The one-event path's call: its arguments are the store's own arrays, exactly the
# signature's (``unchecked``).
_observe_one = unchecked(_observe)
_compact = (
    compile_kernel(
        _compact_kernel,
        "void(float64[:, ::1], int64, int64[::1], float64[::1], int64[::1], float64[::1],"
        " int64[::1])",
    )
    or _compact_kernel
)
_judge = (
    compile_kernel(_judge_kernel, "void(float64[:, ::1], float64[::1], float64[:, ::1])")
    or _judge_kernel
)


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class PatternView(NamedTuple):
    rarity: FloatArray  # 1 where the event is not judged
    # The lowest order at which the event's pattern is new (0: a level the service never had);
    # NaN where it is known at every order or not judged.
    novel_order: FloatArray
    recent_novel: FloatArray  # novel patterns among the last RECENT_EVENTS, at that order
    novelty_rate: FloatArray  # the service's usual share of novel patterns at that order


class ServicePatterns(NamedTuple):
    """A copy of one service's state (``PatternStore.get``): for tests and inspection."""

    centre: float
    width: float
    history: int
    learned: int
    warmup: list[float] | None  # the warm-up latencies; None once the levels are fixed
    counts: list[dict[int, int]]  # per order, each pattern's count, by pattern
    novel: list[float]
    total: list[float]
    recent: list[int]


class PatternStore(RowStore):
    """Patterns of at most ``max_services`` services; the least recently seen is evicted."""

    def __init__(self, max_services: int = 100_000) -> None:
        super().__init__(max_services, (_SCALARS,))
        self._arena = np.empty(_MIN_ARENA, dtype=np.int64)
        self._values = np.empty(_MIN_ARENA)
        self._meta = np.zeros(_META, dtype=np.int64)
        # The one event's latency and the kernel's tests for it (``observe_one``): reused, as
        # the kernel only uses them during the call.
        self._value_of_one = np.empty(1)
        self._tests_of_one = np.empty((4, ORDERS))
        # Its columns and their view, made once: the kernel sets every column of the event
        # (an array and four row views made per event cost a sixth of the call).
        self._one_columns = np.empty((4, 1))
        self._one_view = PatternView(*self._one_columns)

    def observe(self, batch: EventBatch) -> PatternView:
        """Judge each event's patterns against its service's past, then learn them: in order."""
        n = len(batch)
        codes = self.row_codes(batch.services)
        log_latency = batch.log_latency
        if not log_latency.flags.c_contiguous:  # a column of a wider array (score_columns)
            log_latency = np.ascontiguousarray(log_latency)
        columns = np.empty((4, n))
        tests = np.empty((4, n * ORDERS))
        tested = self._observe(codes, log_latency, columns, tests)
        if tested:
            tests = np.ascontiguousarray(tests[:, :tested])
            # P(X >= k) = bdtrc(k - 1, m, rate); bdtrc wants an integer count m.
            tails = bdtrc(
                tests[_TEST_SUCCESSES] - 1.0,
                tests[_TEST_TRIALS].astype(np.int64),
                tests[_TEST_RATE],
            )
            _judge(tests, tails, columns)
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        return PatternView(columns[0], columns[1], columns[2], columns[3])

    def observe_one(self, service: str, value: float) -> PatternView:
        """``observe`` of a batch of one (the engine's one-event path; ``value`` its log
        latency, NaN if none): the same kernel on the same row, with at most ORDERS binomial
        tails from scipy's scalar entry point (the C function its ufunc calls). The view is the
        store's own, valid until its next ``observe_one`` (the engine reads it before)."""
        codes = self.code_of_one(service)
        self._value_of_one[0] = value
        columns = self._one_columns
        tests = self._tests_of_one
        tested = self._observe(codes, self._value_of_one, columns, tests, _observe_one)
        if tested:
            best_tail = math.inf
            best = 0
            for entry in range(tested):
                tail = bdtrc_one(
                    tests[_TEST_SUCCESSES, entry] - 1.0,
                    int(tests[_TEST_TRIALS, entry]),
                    tests[_TEST_RATE, entry],
                )
                if entry == 0 or tail < best_tail:
                    best_tail, best = tail, entry
            columns[_RARITY, 0] = min(1.0, ORDERS * best_tail)
            columns[_RECENT_NOVEL, 0] = tests[_TEST_SUCCESSES, best]
            columns[_NOVELTY_RATE, 0] = tests[_TEST_RATE, best]
        return self._one_view

    def get(self, service: str) -> ServicePatterns | None:
        """A copy of the service's state if it is tracked; reading it does not count as seeing
        it."""
        slot = self.services.get(service)
        if slot is None:
            return None
        row = self.rows[0][slot]
        counts = []
        for order in range(ORDERS):
            at = int(row[_AT + order])
            table = self._arena[at : at + 2 * int(row[_CAPACITY + order])].reshape(-1, 2)
            counts.append(dict(sorted(table[table[:, 0] != _NO_KEY].tolist())))
        gathered = int(row[_WARMED])
        at = int(row[_WARM_AT])
        return ServicePatterns(
            centre=float(row[_CENTRE]),
            width=float(row[_WIDTH]),
            history=int(row[_HISTORY]),
            learned=int(row[_LEARNED]),
            warmup=self._values[at : at + gathered].tolist() if gathered >= 0 else None,
            counts=counts,
            novel=row[_NOVEL : _NOVEL + ORDERS].tolist(),
            total=row[_TOTAL : _TOTAL + ORDERS].tolist(),
            recent=[int(bits) for bits in row[_RECENT : _RECENT + ORDERS]],
        )

    @property
    def nbytes(self) -> int:
        """Bytes held for every service's state: rows and arenas."""
        return super().nbytes + self._arena.nbytes + self._values.nbytes

    def _observe(
        self,
        codes: IntArray,
        log_latency: FloatArray,
        columns: FloatArray,
        tests: FloatArray,
        kernel: Callable[..., int] | None = None,
    ) -> int:
        """Run the kernel (``_observe`` unless given) over the events, making room in the
        arenas whenever it stops for want of it; returns the number of binomial tests it
        listed."""
        meta = self._meta
        meta[_TESTED] = 0
        done = 0
        while True:
            # The limits are read at each call: tests shrink them to reach forgetting and halving.
            done = (kernel or _observe)(
                done, codes, log_latency, self.rows[0], self._arena, self._values, meta,
                columns, tests, QUANTISE_EVENTS, SETTLE_EVENTS, MAX_PATTERNS, MAX_RATE_EVENTS,
            )  # fmt: skip
            if done == len(codes):
                return int(meta[_TESTED])
            self._make_room()

    def _make_room(self) -> None:
        """Compact both arenas into new ones half as large again as what they hold, plus what
        the next event may need: whatever is left behind is reclaimed, and an entry is copied
        O(1) times on average (a compaction comes after at least half of what was copied has
        been handed out anew). Half, not twice: tables are up to half empty already, and the
        arena then holds less than the dictionaries it replaced (~70 KB rather than ~87 KB per
        service after 600 latencies)."""
        meta = self._meta
        state = self.rows[0]
        rows = self.services.rows_used
        tables = int(2 * state[:rows, _CAPACITY : _CAPACITY + ORDERS].sum())
        values = int(state[:rows, _WARM_ROOM].sum())
        arena = np.empty(
            max(tables + tables // 2 + int(meta[_TABLES_NEEDED]), _MIN_ARENA), np.int64
        )
        warmups = np.empty(max(values + values // 2 + int(meta[_VALUES_NEEDED]), _MIN_ARENA))
        _compact(state, rows, self._arena, self._values, arena, warmups, meta)
        self._arena, self._values = arena, warmups
        meta[_TABLES_NEEDED] = meta[_VALUES_NEEDED] = 0
