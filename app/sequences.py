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
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from app.service_states import ServiceStates
from app.templates import NO_TEMPLATE

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Transitions a service needs before its sequence is judged.
MIN_SERVICE_EVENTS = 50
_START = -2  # context slot before a service's first message


class _Counts:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, template_id: int) -> None:
        self.counts[template_id] = self.counts.get(template_id, 0) + 1
        self.total += 1


class ServiceSequence:
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


def _blend(
    counts: _Counts | None, lower: dict[int, float], lower_unseen: float
) -> tuple[dict[int, float], float]:
    """One Witten-Bell step: the distribution given a context from the one given a shorter one."""
    if counts is None or counts.total == 0:
        return lower, lower_unseen
    distinct = len(counts.counts)
    denominator = counts.total + distinct
    escape = distinct / denominator
    blended = {t: escape * p for t, p in lower.items()}
    for t, c in counts.counts.items():
        blended[t] = blended.get(t, 0.0) + c / denominator
    return blended, escape * lower_unseen


class SequenceStore(ServiceStates[ServiceSequence]):
    """Next-template models of at most ``max_services`` services (least recently seen evicted)."""

    def __init__(self, top_k: int = 5, max_contexts: int = 4096, max_services: int = 100_000):
        super().__init__(ServiceSequence, max_services)
        self.top_k = top_k
        self.max_contexts = max_contexts

    def _context(self, state: ServiceSequence, key: tuple[int, ...]) -> _Counts:
        counts = state.contexts.get(key)
        if counts is None:
            counts = _Counts()
            state.contexts[key] = counts
            if len(state.contexts) > self.max_contexts:
                state.contexts.popitem(last=False)
        else:
            state.contexts.move_to_end(key)
        return counts

    def observe(self, services: Sequence[str], template_ids: IntArray) -> SequenceView:
        """Judge each event's template against its service's model, then learn it: in order."""
        n = len(services)
        # Columns as Python lists, made arrays once at the end: a numpy item assignment costs
        # several times a list's.
        rarity = [1.0] * n
        probability = [math.nan] * n
        rank = [0] * n
        k = self.top_k
        max_contexts = self.max_contexts
        ids = template_ids.tolist()
        # The states of the events that have a template, in order: the others touch none.
        templated: Sequence[str]
        if n == 1:  # the /score path: nothing to filter
            templated = services if ids[0] != NO_TEMPLATE else []
        else:
            templated = [
                service for service, t in zip(services, ids, strict=True) if t != NO_TEMPLATE
            ]
        states = iter(self.states_for(templated))
        for i, template_id in enumerate(ids):
            if template_id == NO_TEMPLATE:
                continue
            state = next(states)
            # The (a, b) context's key is the state's own tuple: no new one per event.
            pair_key = state.previous
            b = pair_key[1]
            contexts = state.contexts
            single_key = (b,)
            pair = contexts.get(pair_key)
            single = contexts.get(single_key)
            if state.events >= MIN_SERVICE_EVENTS:
                count = pair.counts.get(template_id, 0) if pair is not None else 0
                # Fast path: the order-2 context alone already ranks the template in its top k,
                # that is fewer than k (k >= 1, as settings require) templates are more frequent
                # there: one pass, no sort.
                greater = k
                pair_denominator = 0
                if pair is not None and count > 0:
                    greater = 0
                    for c in pair.counts.values():
                        if c > count:
                            greater += 1
                    pair_denominator = pair.total + len(pair.counts)
                if greater < k:
                    rank[i] = 1 + greater
                    probability[i] = count / pair_denominator
                else:
                    unigram = state.unigram
                    base = {t: c / unigram.total for t, c in unigram.counts.items()}
                    # Unseen mass at order 0: Witten-Bell escape of the service's unigram.
                    escape0 = len(unigram.counts) / (unigram.total + len(unigram.counts))
                    base = {t: (1.0 - escape0) * p for t, p in base.items()}
                    dist, unseen = _blend(single, base, escape0)
                    dist, unseen = _blend(pair, dist, unseen)
                    p = dist.get(template_id, unseen)
                    values = np.fromiter(dist.values(), np.float64, len(dist))
                    rank[i] = 1 + int(np.count_nonzero(values > p))
                    probability[i] = p
                    if rank[i] > k:
                        # Mass of templates at most as likely, plus all never-seen ones.
                        rarity[i] = min(1.0, float(values[values <= p].sum()) + unseen)
            unigram = state.unigram
            unigram_counts = unigram.counts
            unigram_counts[template_id] = unigram_counts.get(template_id, 0) + 1
            unigram.total += 1
            if len(unigram_counts) > max_contexts:
                least = min(unigram_counts, key=unigram_counts.__getitem__)
                unigram.total -= unigram_counts.pop(least)
            # The (b,) then the (a, b) context learns the template; each is made the most
            # recently used (the least recently used is dropped past max_contexts). Written out
            # twice: a loop over the two would build its tuples on every event.
            if single is None:
                single = contexts[single_key] = _Counts()
                if len(contexts) > max_contexts:
                    contexts.popitem(last=False)
                    # Making room for (b,) may have dropped (a, b).
                    if pair is not None and pair_key not in contexts:
                        pair = None
            else:
                contexts.move_to_end(single_key)
            single_counts = single.counts
            single_counts[template_id] = single_counts.get(template_id, 0) + 1
            single.total += 1
            if pair is None:
                pair = contexts[pair_key] = _Counts()
                if len(contexts) > max_contexts:
                    contexts.popitem(last=False)
            else:
                contexts.move_to_end(pair_key)
            pair_counts = pair.counts
            pair_counts[template_id] = pair_counts.get(template_id, 0) + 1
            pair.total += 1
            state.previous = (b, template_id)
            state.events += 1
        # Both float columns as rows of one array: one numpy call fewer, paid by every /score.
        floats = np.array([rarity, probability], dtype=np.float64)
        return SequenceView(floats[0], floats[1], np.array(rank, dtype=np.int64))

    def observe_one(self, service: str, template_id: int) -> SequenceView:
        """``observe`` of a batch of one (the engine's one-event path), on Python values: the
        same steps in the same order as one pass of ``observe``'s loop (keep the two in step;
        tests/test_store_equivalence.py compares them), its columns made as one array each."""
        rarity = 1.0
        probability = math.nan
        rank = 0
        if template_id != NO_TEMPLATE:
            k = self.top_k
            max_contexts = self.max_contexts
            state = self.state_for(service)
            pair_key = state.previous
            b = pair_key[1]
            contexts = state.contexts
            single_key = (b,)
            pair = contexts.get(pair_key)
            single = contexts.get(single_key)
            if state.events >= MIN_SERVICE_EVENTS:
                count = pair.counts.get(template_id, 0) if pair is not None else 0
                greater = k
                pair_denominator = 0
                if pair is not None and count > 0:
                    greater = 0
                    for c in pair.counts.values():
                        if c > count:
                            greater += 1
                    pair_denominator = pair.total + len(pair.counts)
                if greater < k:
                    rank = 1 + greater
                    probability = count / pair_denominator
                else:
                    unigram = state.unigram
                    base = {t: c / unigram.total for t, c in unigram.counts.items()}
                    escape0 = len(unigram.counts) / (unigram.total + len(unigram.counts))
                    base = {t: (1.0 - escape0) * p for t, p in base.items()}
                    dist, unseen = _blend(single, base, escape0)
                    dist, unseen = _blend(pair, dist, unseen)
                    p = dist.get(template_id, unseen)
                    values = np.fromiter(dist.values(), np.float64, len(dist))
                    rank = 1 + int(np.count_nonzero(values > p))
                    probability = p
                    if rank > k:
                        rarity = min(1.0, float(values[values <= p].sum()) + unseen)
            unigram = state.unigram
            unigram_counts = unigram.counts
            unigram_counts[template_id] = unigram_counts.get(template_id, 0) + 1
            unigram.total += 1
            if len(unigram_counts) > max_contexts:
                least = min(unigram_counts, key=unigram_counts.__getitem__)
                unigram.total -= unigram_counts.pop(least)
            if single is None:
                single = contexts[single_key] = _Counts()
                if len(contexts) > max_contexts:
                    contexts.popitem(last=False)
                    if pair is not None and pair_key not in contexts:
                        pair = None
            else:
                contexts.move_to_end(single_key)
            single_counts = single.counts
            single_counts[template_id] = single_counts.get(template_id, 0) + 1
            single.total += 1
            if pair is None:
                pair = contexts[pair_key] = _Counts()
                if len(contexts) > max_contexts:
                    contexts.popitem(last=False)
            else:
                contexts.move_to_end(pair_key)
            pair_counts = pair.counts
            pair_counts[template_id] = pair_counts.get(template_id, 0) + 1
            pair.total += 1
            state.previous = (b, template_id)
            state.events += 1
        floats = np.array((rarity, probability), dtype=np.float64)
        ranks = np.empty(1, dtype=np.int64)
        ranks[0] = rank
        return SequenceView(floats[0:1], floats[1:2], ranks)
