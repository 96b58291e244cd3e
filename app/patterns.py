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

Cost: O(``ORDERS``) integer dictionary operations per event, one vectorised binomial tail per
batch; memory at most ``MAX_PATTERNS`` counts per order and service.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import bdtrc
from scipy.special.cython_special import bdtrc as bdtrc_one

from app.events import EventBatch
from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]

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
# The pattern of order j: the level after the j levels before it, the low LEVEL_BITS * (j + 1)
# bits of (history << LEVEL_BITS) | level.
_PATTERN_MASKS = [(1 << (LEVEL_BITS * (j + 1))) - 1 for j in range(ORDERS)]


class ServicePatterns:
    __slots__ = (
        "centre",
        "counts",
        "history",
        "learned",
        "novel",
        "recent",
        "total",
        "warmup",
        "width",
    )

    def __init__(self) -> None:
        self.warmup: list[float] | None = []
        self.centre = 0.0
        self.width = 1.0
        # The last ORDERS - 1 levels, LEVEL_BITS each, the newest in the lowest bits.
        self.history = 0
        self.learned = 0  # patterns learned since the quantisation (up to ORDERS - 1 levels)
        self.counts: list[dict[int, int]] = [{} for _ in range(ORDERS)]
        self.novel = [0.0] * ORDERS  # novel patterns among ``total`` (decayed by halving)
        self.total = [0.0] * ORDERS
        self.recent = [0] * ORDERS  # novelty of the last RECENT_EVENTS patterns, one bit each


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class PatternView(NamedTuple):
    rarity: FloatArray  # 1 where the event is not judged
    # The lowest order at which the event's pattern is new (0: a level the service never had);
    # NaN where it is known at every order or not judged.
    novel_order: FloatArray
    recent_novel: FloatArray  # novel patterns among the last RECENT_EVENTS, at that order
    novelty_rate: FloatArray  # the service's usual share of novel patterns at that order


class PatternStore(ServiceStates[ServicePatterns]):
    def __init__(self, max_services: int = 100_000) -> None:
        super().__init__(ServicePatterns, max_services)

    def observe(self, batch: EventBatch) -> PatternView:
        """Judge each event's patterns against its service's past, then learn them: in order."""
        n = len(batch)
        # The binomial tests of the orders at which an event is novel, one entry each: few
        # events are novel, so lists (and one vectorised tail at the end) cost less per event
        # than (event, order) matrices would in a batch of one.
        tested: list[int] = []
        successes: list[int] = []
        trials: list[int] = []
        rates: list[float] = []
        # Columns as Python lists, made one array at the end: four np.full calls cost more than
        # the whole loop for a batch of one.
        nan = math.nan
        novel_order = [nan] * n
        pattern_masks = _PATTERN_MASKS
        log_latency = batch.log_latency.tolist()
        for i, state in enumerate(self.states_for(batch.services)):
            value = log_latency[i]
            if value != value:
                continue
            if state.warmup is not None:
                state.warmup.append(value)
                if len(state.warmup) >= QUANTISE_EVENTS:
                    values = np.asarray(state.warmup)
                    state.centre = float(np.median(values))
                    spread = 1.4826 * float(np.median(np.abs(values - state.centre)))
                    state.width = max(WIDTH_SPREADS * spread, MIN_WIDTH)
                    state.warmup = None
                continue
            # Clamped by comparisons: two builtin calls cost more than the rest of this step.
            level = math.floor((value - state.centre) / state.width)
            if level < -MAX_LEVEL:
                level = -MAX_LEVEL
            elif level > MAX_LEVEL:
                level = MAX_LEVEL
            level += MAX_LEVEL
            history = state.history
            counts = state.counts
            learned = state.learned
            recents = state.recent
            novels = state.novel
            totals = state.total
            # The orders whose context is complete.
            usable = ORDERS if learned >= ORDERS - 1 else learned + 1
            judge = learned >= SETTLE_EVENTS
            first_novel = -1
            # Every order's pattern is the low bits of one integer: the level after the history.
            pattern = (history << LEVEL_BITS) | level
            for j in range(usable):
                key = pattern & pattern_masks[j]
                table = counts[j]
                seen = table.get(key, 0)
                if seen >= NEW_BELOW:
                    # A known pattern (most of them): counted, and a 0 bit in the recent ones.
                    table[key] = seen + 1
                    recents[j] = (recents[j] << 1) & _RECENT_MASK
                else:
                    recent = ((recents[j] << 1) | 1) & _RECENT_MASK
                    if first_novel < 0:
                        first_novel = j
                    if judge:
                        # Good-Turing: the service's past share of new patterns (plus this one,
                        # so that a service which never made one is not certain it cannot).
                        tested.append(i)
                        successes.append(recent.bit_count())
                        trials.append(min(learned + 1, RECENT_EVENTS))
                        rates.append((novels[j] + 1.0) / (totals[j] + 1.0))
                    novels[j] += 1.0  # (only here: a known pattern adds nothing)
                    if len(table) >= MAX_PATTERNS:
                        self._forget_singletons(state, j)
                        table = counts[j]
                    table[key] = seen + 1
                    recents[j] = recent
                total = totals[j] + 1.0
                if total > MAX_RATE_EVENTS:
                    novels[j] *= 0.5
                    total *= 0.5
                totals[j] = total
            if judge and first_novel >= 0:
                novel_order[i] = first_novel
            state.history = pattern & _HISTORY_MASK
            state.learned = learned + 1
        rarity = [1.0] * n
        recent_novel = [nan] * n
        novelty_rate = [nan] * n
        if tested:
            # P(X >= k) = bdtrc(k - 1, m, rate); bdtrc wants an integer count m.
            tails = bdtrc(
                np.asarray(successes, dtype=np.float64) - 1.0,
                np.asarray(trials, dtype=np.int64),
                np.asarray(rates),
            ).tolist()
            # Per event, the order with the smallest tail (the entries come in event order).
            best: dict[int, int] = {}
            for entry, i in enumerate(tested):
                if i not in best or tails[entry] < tails[best[i]]:
                    best[i] = entry
            for i, entry in best.items():
                rarity[i] = min(1.0, ORDERS * tails[entry])
                recent_novel[i] = successes[entry]
                novelty_rate[i] = rates[entry]
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        columns = np.array([rarity, novel_order, recent_novel, novelty_rate], dtype=np.float64)
        return PatternView(columns[0], columns[1], columns[2], columns[3])

    def observe_one(self, service: str, value: float) -> PatternView:
        """``observe`` of a batch of one (the engine's one-event path; ``value`` its log
        latency, NaN if none): the same steps in the same order as one pass of ``observe``'s
        loop (keep the two in step; tests/test_store_equivalence.py compares them), with at most
        one binomial tail (scipy's scalar entry point: the C function its ufunc calls)."""
        state = self.state_for(service)
        nan = math.nan
        columns = None
        if value == value and state.warmup is not None:
            state.warmup.append(value)
            if len(state.warmup) >= QUANTISE_EVENTS:
                values = np.asarray(state.warmup)
                state.centre = float(np.median(values))
                spread = 1.4826 * float(np.median(np.abs(values - state.centre)))
                state.width = max(WIDTH_SPREADS * spread, MIN_WIDTH)
                state.warmup = None
        elif value == value:
            level = math.floor((value - state.centre) / state.width)
            if level < -MAX_LEVEL:
                level = -MAX_LEVEL
            elif level > MAX_LEVEL:
                level = MAX_LEVEL
            level += MAX_LEVEL
            counts = state.counts
            learned = state.learned
            recents = state.recent
            novels = state.novel
            totals = state.total
            usable = ORDERS if learned >= ORDERS - 1 else learned + 1
            judge = learned >= SETTLE_EVENTS
            first_novel = -1
            # The order with the smallest tail so far: (tail, successes, rate).
            best: tuple[float, int, float] | None = None
            pattern = (state.history << LEVEL_BITS) | level
            for j in range(usable):
                key = pattern & _PATTERN_MASKS[j]
                table = counts[j]
                seen = table.get(key, 0)
                if seen >= NEW_BELOW:
                    table[key] = seen + 1
                    recents[j] = (recents[j] << 1) & _RECENT_MASK
                else:
                    recent = ((recents[j] << 1) | 1) & _RECENT_MASK
                    if first_novel < 0:
                        first_novel = j
                    if judge:
                        successes = recent.bit_count()
                        rate = (novels[j] + 1.0) / (totals[j] + 1.0)
                        tail = bdtrc_one(successes - 1.0, min(learned + 1, RECENT_EVENTS), rate)
                        if best is None or tail < best[0]:
                            best = (tail, successes, rate)
                    novels[j] += 1.0
                    if len(table) >= MAX_PATTERNS:
                        self._forget_singletons(state, j)
                        table = counts[j]
                    table[key] = seen + 1
                    recents[j] = recent
                total = totals[j] + 1.0
                if total > MAX_RATE_EVENTS:
                    novels[j] *= 0.5
                    total *= 0.5
                totals[j] = total
            state.history = pattern & _HISTORY_MASK
            state.learned = learned + 1
            if best is not None:
                columns = np.array(
                    (min(1.0, ORDERS * best[0]), first_novel, best[1], best[2]), dtype=np.float64
                )
            elif judge and first_novel >= 0:
                columns = np.array((1.0, first_novel, nan, nan), dtype=np.float64)
        if columns is None:
            columns = np.array((1.0, nan, nan, nan), dtype=np.float64)
        return PatternView(columns[0:1], columns[1:2], columns[2:3], columns[3:4])

    @staticmethod
    def _forget_singletons(state: ServicePatterns, order: int) -> None:
        """Keep the table bounded: patterns seen once go first (they are the ones a noisy
        service makes by the thousand); if that is not enough, every count is halved."""
        table = {key: count for key, count in state.counts[order].items() if count > 1}
        if len(table) >= MAX_PATTERNS // 2:
            table = {key: count // 2 for key, count in table.items() if count > 3}
        state.counts[order] = table
