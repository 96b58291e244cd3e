"""Log message templates, mined online, and each service's template statistics.

Mining follows Drain (He et al., "Drain: An Online Log Parsing Approach with Fixed Depth Tree",
ICWS 2017), reduced to what scoring needs:

* a message is split on whitespace (at most ``MAX_TOKENS`` tokens) and every token that holds a
  digit is masked to ``<*>`` (ids, counts, addresses, durations are parameters, not structure);
* candidate templates are those with the same token count and the same first token;
* the most similar candidate (share of positions with the same literal token) is taken when the
  share reaches ``similarity``; differing positions then become ``<*>``; otherwise a new template
  is made.

Why not the ``drain3`` package: its last release is from 2022, its persistence pickles state
through ``jsonpickle`` (our artifacts must not execute code when loaded), and its memory bound
evicts by cache order without a stable, exportable id space. The algorithm above is small enough to
own, and its state is plain arrays and strings.

Template ids are integers handed out in order and never reused, so an id means one template for as
long as the engine runs and in every artifact that stores it. Memory is bounded: at most
``max_templates`` templates (the least recently seen is evicted) and, per service, at most
``max_templates`` template counters.

The per-service statistics answer four questions for every event, each as a tail probability
(``rarity``) under the service's own history, or the whole system's:

* **never seen**: the Good-Turing estimate of the probability that a service's next message has a
  template it never produced, ``(n1 + 1) / (n + 2)`` with ``n1`` templates seen exactly once among
  ``n`` messages;
* **rare in the system**, for a template never seen in the service: the same estimate over every
  service's messages if the miner never saw the template, plus the share of all messages whose
  templates are at most as frequent if it did. A service with a few hundred lines cannot call a new
  template rarer than 1 in a few hundred on its own, but the system's history can;
* **rare**: the share of the service's messages whose templates are at most as frequent as this
  one, ``sum(c_t for c_t <= c) / n``: the exact tail probability of "this uncommon" under the
  empirical distribution;
* **surge** (warnings and errors only, ``SURGE_MIN_LEVEL_SCORE``): the number of this template's
  messages among the service's last few dozen messages (a half-life in messages, not seconds, so
  quiet and busy services are judged alike) against what its long-run share of the service's
  recent traffic predicts, a Poisson upper tail; for a template that has surged ``k`` times
  before (and got over it), at least ``k / n``: a habitually bursty template is judged by its
  habit.

A message's own service name is masked before mining (``without_service_name``), so one wording
logged by several services is one template.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special.cython_special import gammainc as gammainc_one

from app.service_states import ServiceStates

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

WILDCARD = "<*>"
MAX_TOKENS = 64
NO_TEMPLATE = -1  # the event had no message
TOKEN_CACHE_SIZE = 8192  # distinct (service, message) pairs whose tokens are kept
# The rare-template tail is only computed for templates below this share of a service's messages:
# above it the event is plainly common and the per-event sum over counters would be wasted.
RARE_SHARE = 0.05
# Messages a service needs before novelty and rarity are judged at all.
MIN_SERVICE_MESSAGES = 20
# The surge test judges warnings and errors only. Lines come in runs (one request, job or crash
# writes many lines of one template), so at INFO/DEBUG a template's recent count is far more
# bursty than the Poisson test assumes: on Loghub's BGL sample, judging every level, 491 of the
# engine's 556 false alarms were surges of INFO templates (core dumps being written,
# alignment-exception counters) in normal operation. A
# surge of a failing template (WARN and above) is what an incident looks like; traffic volume is
# the sliding window's and the forecast's to judge. INSIGHTHUB_TEMPLATE_SURGE_MIN_LEVEL sets it.
SURGE_MIN_LEVEL_SCORE = 1  # LEVEL_SCORES[Level.WARN]
# A surge rarer than this opens a surge episode of the template; it is over once the template's
# recent (decayed) count has fallen below SURGE_OVER_COUNT. Completed episodes are its habit.
SURGE_EPISODE_RARITY = 1e-4
SURGE_OVER_COUNT = 1.0
# Weight, in a service's own messages, of the system-wide novelty rate as the prior of the
# service's: about 1/q (q = the default target false-alarm rate, 0.001), the history a service needs
# before its own messages alone could call anything that rare.
SYSTEM_PRIOR_MESSAGES = 1000.0
# Scaled surge counters are renormalised before 2**exponent leaves float range comfortably.
RESCALE_EXPONENT = 200.0


def without_service_name(service: str, message: str) -> str:
    """``message`` with its own service's name, as a whole word, masked: ``auth: upstream 503``
    and ``checkout: upstream 503`` are one template logged by two services. Without this a
    service's first error, worded like every other service's, was a template "never seen in any
    service" (the miner splits on the first token)."""
    if len(service) < 3 or service not in message:
        return message
    return re.sub(rf"(?<![\w.-]){re.escape(service)}(?![\w.-])", WILDCARD, message)


def tokens_of(message: str) -> tuple[str, ...]:
    return tuple(
        WILDCARD if any(ch.isdigit() for ch in token) else token
        for token in message.split(maxsplit=MAX_TOKENS)[:MAX_TOKENS]
    )


class _Template:
    __slots__ = ("count", "template_id", "tokens")

    def __init__(self, template_id: int, tokens: list[str], count: int) -> None:
        self.template_id = template_id
        self.tokens = tokens
        self.count = count

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


class TemplateMiner:
    """Drain-style online template miner with stable ids and a bounded number of templates."""

    def __init__(self, max_templates: int = 5000, similarity: float = 0.5) -> None:
        self.max_templates = max_templates
        self.similarity = similarity
        self.next_id = 0
        self.evictions = 0
        # System-wide Good-Turing counts: messages mined and templates holding exactly one.
        self.messages = 0
        self.singletons = 0
        # Least recently matched first: eviction takes from the front.
        self._templates: OrderedDict[int, _Template] = OrderedDict()
        self._groups: dict[tuple[int, str], list[int]] = {}
        # Exact token sequences already resolved: most lines repeat a few shapes verbatim.
        self._cache: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._templates)

    def count(self, template_id: int) -> int:
        template = self._templates.get(template_id)
        return template.count if template is not None else 0

    def text(self, template_id: int) -> str | None:
        template = self._templates.get(template_id)
        return template.text if template is not None else None

    def add(self, message: str) -> int:
        """The id of ``message``'s template, learning from it (a new template or a merge)."""
        return self.observe(message)[0]

    def novelty(self) -> float:
        """Good-Turing probability that the next message, from any service, has a template never
        mined before: ``(n1 + 1) / (n + 2)`` over every message mined so far."""
        return (self.singletons + 1.0) / (self.messages + 2.0)

    def tail_messages(self, template_id: int, prior_count: int) -> int:
        """Messages whose templates had at most ``prior_count`` messages, counting
        ``template_id`` (which has just gained one) at ``prior_count``. O(templates)."""
        total = prior_count
        for template in self._templates.values():
            if template.count <= prior_count and template.template_id != template_id:
                total += template.count
        return total

    def observe(self, message: str) -> tuple[int, bool]:
        """Like ``add``, and whether the message made a new template (new to every service)."""
        return self.observe_tokens(tokens_of(message))

    def observe_tokens(self, tokens: tuple[str, ...]) -> tuple[int, bool]:
        """``observe`` of a message already split by ``tokens_of``."""
        if not tokens:
            return NO_TEMPLATE, False
        self.messages += 1
        cached = self._cache.get(tokens)
        if cached is not None and cached in self._templates:
            self._cache.move_to_end(tokens)
            template = self._templates[cached]
            self._count(template)
            self._templates.move_to_end(cached)
            return cached, False
        key = (len(tokens), tokens[0])
        group = self._groups.setdefault(key, [])
        best: _Template | None = None
        best_share = -1.0
        for template_id in group:
            candidate = self._templates[template_id]
            same = sum(
                1 for a, b in zip(candidate.tokens, tokens, strict=True) if a == b != WILDCARD
            )
            wildcards = candidate.tokens.count(WILDCARD)
            share = (same + wildcards) / len(tokens) if same else 0.0
            if share > best_share:
                best, best_share = candidate, share
        created = False
        if best is not None and best_share >= self.similarity:
            best.tokens = [
                a if a == b else WILDCARD for a, b in zip(best.tokens, tokens, strict=True)
            ]
            self._count(best)
            self._templates.move_to_end(best.template_id)
            chosen = best.template_id
        else:
            chosen = self._create(list(tokens), 1, key)
            created = True
        self._cache[tokens] = chosen
        while len(self._cache) > 4 * self.max_templates:
            self._cache.popitem(last=False)
        return chosen, created

    def _count(self, template: _Template) -> None:
        if template.count == 1:
            self.singletons -= 1
        template.count += 1

    def _create(self, tokens: list[str], count: int, key: tuple[int, str]) -> int:
        template_id = self.next_id
        self.next_id += 1
        self._templates[template_id] = _Template(template_id, tokens, count)
        self._groups.setdefault(key, []).append(template_id)
        self.singletons += count == 1
        while len(self._templates) > self.max_templates:
            evicted_id, evicted = self._templates.popitem(last=False)
            group_key = (len(evicted.tokens), evicted.tokens[0])
            self._groups[group_key].remove(evicted_id)
            if not self._groups[group_key]:
                del self._groups[group_key]
            self.singletons -= evicted.count == 1
            self.evictions += 1
        return template_id

    def find(self, text: str) -> int | None:
        """The id of the template whose text is exactly ``text``, if any."""
        tokens = text.split()
        if not tokens:
            return None
        for template_id in self._groups.get((len(tokens), tokens[0]), []):
            if self._templates[template_id].tokens == tokens:
                return template_id
        return None

    def adopt(self, template_id: int, text: str, count: int) -> None:
        """Take a stored template under its stored id (used when the miner starts empty)."""
        tokens = text.split()
        if not tokens or template_id in self._templates:
            raise ValueError("a stored template is empty or its id is taken")
        self._templates[template_id] = _Template(template_id, tokens, count)
        self._groups.setdefault((len(tokens), tokens[0]), []).append(template_id)
        self.next_id = max(self.next_id, template_id + 1)
        self.messages += count
        self.singletons += count == 1

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        templates = list(self._templates.values())
        return {
            f"{prefix}ids": np.array([t.template_id for t in templates], dtype=np.int64),
            f"{prefix}text": np.array([t.text for t in templates], dtype=np.str_),
            f"{prefix}counts": np.array([t.count for t in templates], dtype=np.int64),
            f"{prefix}next_id": np.array([self.next_id], dtype=np.int64),
        }

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, npt.NDArray[Any]],
        prefix: str,
        max_templates: int = 5000,
        similarity: float = 0.5,
    ) -> TemplateMiner:
        ids = np.asarray(arrays[f"{prefix}ids"], dtype=np.int64)
        texts = arrays[f"{prefix}text"]
        counts = np.asarray(arrays[f"{prefix}counts"], dtype=np.int64)
        if not ids.shape == texts.shape == counts.shape or ids.ndim != 1:
            raise ValueError("template arrays disagree in length")
        if ids.size and (ids.min() < 0 or np.unique(ids).size != ids.size or counts.min() < 0):
            raise ValueError("template ids are negative or repeated")
        miner = cls(max_templates, similarity)
        for template_id, text, count in zip(
            ids.tolist(), texts.tolist(), counts.tolist(), strict=True
        ):
            miner.adopt(int(template_id), str(text), int(count))
        miner.next_id = max(miner.next_id, int(arrays[f"{prefix}next_id"][0]))
        while len(miner._templates) > max_templates:
            evicted_id, evicted = miner._templates.popitem(last=False)
            miner._groups[(len(evicted.tokens), evicted.tokens[0])].remove(evicted_id)
            miner.singletons -= evicted.count == 1
        return miner


class ServiceTemplates:
    """One service's template counters and recent surge state."""

    __slots__ = (
        "burst",
        "counts",
        "episodes",
        "introduced",
        "messages",
        "singletons",
        "surge_events",
        "surge_ref_events",
        "surge_total",
        "surging",
    )

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.messages = 0
        self.singletons = 0
        # Templates this service, past its warm-up, was the first in the system to log.
        self.introduced = 0
        # Event-time decayed counts over the last few seconds: per template, and of all messages.
        self.burst: dict[int, float] = {}
        self.surge_total = 0.0
        self.surge_events = 0
        self.surge_ref_events = 0
        # Per template: surges it has had and got over, and whether one is under way now.
        self.episodes: dict[int, int] = {}
        self.surging: set[int] = set()


# Immutable like a frozen dataclass at a sixth of its construction cost (which sets each field
# through object.__setattr__), paid by every call, the batch of one included.
class TemplateView(NamedTuple):
    """Each event's template and how usual it was for its service, read before learning it."""

    template_id: IntArray  # NO_TEMPLATE where the event had no message
    service_messages: IntArray  # the service's templated messages before this one
    template_count: IntArray  # this template's messages in the service before this one
    novelty_rarity: FloatArray  # 1 unless the template is new to the service
    # 1 unless the template is new to the service: then the share of the system's messages
    # whose templates are new or at most as frequent (Good-Turing mass for the new ones)
    system_rarity: FloatArray
    rarity_of_rare: FloatArray  # share of the service's messages at most this frequent
    surge_rarity: FloatArray  # Poisson tail of this template's recent count
    surge_count: FloatArray  # this template's recent (decayed) count, this event included
    surge_expected: FloatArray  # what its long-run share predicts for that count


@dataclass(frozen=True, slots=True)
class SeedTemplates:
    """Per-service template counts learned by training, used for services not seen live."""

    service: str
    counts: dict[str, int]  # template text -> messages


class TemplateStore(ServiceStates[ServiceTemplates]):
    """The engine's online template state: one miner shared by all services, counters per service.

    Services are bounded like baselines (least recently seen evicted); each service keeps at most
    ``max_templates`` counters, dropping its least frequent when full.
    """

    def __init__(
        self,
        max_templates: int = 5000,
        similarity: float = 0.5,
        surge_halflife_messages: float = 50.0,
        max_services: int = 100_000,
        surge_min_level_score: float = SURGE_MIN_LEVEL_SCORE,
    ) -> None:
        super().__init__(ServiceTemplates, max_services)
        self.miner = TemplateMiner(max_templates, similarity)
        self.max_templates = max_templates
        self.surge_halflife_messages = surge_halflife_messages
        self.surge_min_level_score = surge_min_level_score
        # (service, message) -> its tokens with the service's name masked: most messages repeat
        # verbatim, and splitting and masking them is about half of the miner's cost per event.
        # A pure function of its key, so the cache changes no result; cleared when full.
        self._tokens: dict[tuple[str, str], tuple[str, ...]] = {}

    def seed(
        self, miner_arrays: dict[str, npt.NDArray[Any]] | None, seeds: list[SeedTemplates]
    ) -> None:
        """Adopt a trained model's templates and per-service counts where nothing live exists."""
        if miner_arrays is not None and len(self.miner) == 0 and self.miner.next_id == 0:
            self.miner = TemplateMiner.from_arrays(
                miner_arrays, "", self.miner.max_templates, self.miner.similarity
            )
        # Services share most of their templates: each text is looked up once, not once per
        # service (this runs on the event loop at a swap). ``add`` can merge or evict templates,
        # after which a remembered lookup may be stale, so the memo is emptied at every add.
        found: dict[str, int] = {}
        for seed in seeds:
            if seed.service in self:
                continue
            state = self.state_for(seed.service)
            for text, count in seed.counts.items():
                template_id = found.get(text)
                if template_id is None:
                    template_id = self.miner.find(text)
                    if template_id is None:
                        template_id = self.miner.add(text)
                        found.clear()
                    else:
                        found[text] = template_id
                state.counts[template_id] = state.counts.get(template_id, 0) + count
                state.messages += count
            state.singletons = sum(1 for c in state.counts.values() if c == 1)

    def observe(
        self,
        services: Sequence[str],
        messages: Sequence[str],
        level_scores: Sequence[float] | None = None,
    ) -> TemplateView:
        """Read each event's template statistics, then learn from it: sequential, in order.

        ``level_scores`` (``app.schemas.events.LEVEL_SCORES``) limit the surge test to events at
        ``surge_min_level_score`` or above; without them every event's surge is judged."""
        n = len(services)
        min_level = self.surge_min_level_score
        levels = [min_level] * n if level_scores is None else level_scores
        miner = self.miner
        token_cache = self._tokens
        # Tokens first (a pure function of the event, cached): they say which events have a
        # template, so the states of those events are looked up once per service.
        all_tokens: list[tuple[str, ...]] = []
        for service, message in zip(services, messages, strict=True):
            if not message:
                all_tokens.append(())
                continue
            key = (service, message)
            tokens = token_cache.get(key)
            if tokens is None:
                if len(token_cache) >= TOKEN_CACHE_SIZE:
                    token_cache.clear()
                tokens = token_cache[key] = tokens_of(without_service_name(service, message))
            all_tokens.append(tokens)
        templated: Sequence[str]
        if n == 1:  # the /score path: nothing to filter
            templated = services if all_tokens[0] else []
        else:
            templated = [
                service for service, tokens in zip(services, all_tokens, strict=True) if tokens
            ]
        states = iter(self.states_for(templated))
        # Columns as Python lists, made arrays once at the end: a numpy item assignment costs
        # several times a list's.
        ids = [NO_TEMPLATE] * n
        seen = [0] * n
        counts = [0] * n
        novelty = [1.0] * n
        system_rarity = [1.0] * n
        rare = [1.0] * n
        surge = [1.0] * n
        surge_count = [0.0] * n
        surge_expected = [0.0] * n
        surge_halflife = self.surge_halflife_messages
        # The miner's exact-tokens cache, read here: ``observe_tokens``'s path for a repeated
        # message (most of them) without its two calls, with the same effects in the same order.
        resolved = miner._cache
        templates_by_id = miner._templates
        for i, tokens in enumerate(all_tokens):
            if not tokens:
                continue
            prior_singletons, prior_messages = miner.singletons, miner.messages
            cached = resolved.get(tokens)
            template = templates_by_id.get(cached) if cached is not None else None
            if template is not None:
                miner.messages = prior_messages + 1
                resolved.move_to_end(tokens)
                if template.count == 1:
                    miner.singletons = prior_singletons - 1
                template.count += 1
                template_id, created = template.template_id, False
                templates_by_id.move_to_end(template_id)
            else:
                template_id, created = miner.observe_tokens(tokens)
            ids[i] = template_id
            state = next(states)
            n_messages = state.messages
            state_counts = state.counts
            count = state_counts.get(template_id, 0)
            seen[i] = n_messages
            counts[i] = count
            judged = n_messages >= MIN_SERVICE_MESSAGES
            if judged and count == 0:
                novelty[i] = (state.singletons + 1.0) / (n_messages + 2.0)
                # New to this service: how rare is the template in the whole system? Never mined
                # (Good-Turing) or at most this frequent anywhere is a rarer class whose rate the
                # whole system's history estimates, which is what lets a young service call a
                # new template rarer than 1 in its own few hundred lines.
                # The system's rate is only a prior: shrunk towards the service's own rate of
                # templates new to the system, with the weight of SYSTEM_PRIOR_MESSAGES, so a
                # service that keeps logging new templates (free text, unmasked names) is judged
                # by its own habit, not by the quiet majority's.
                prior = 0 if created else miner.count(template_id) - 1
                if prior <= RARE_SHARE * prior_messages:
                    tail = miner.tail_messages(template_id, prior) if prior else 0
                    system = (prior_singletons + 1.0 + tail) / (prior_messages + 2.0)
                    system_rarity[i] = (state.introduced + SYSTEM_PRIOR_MESSAGES * system) / (
                        n_messages + SYSTEM_PRIOR_MESSAGES
                    )
            elif judged and count < RARE_SHARE * n_messages:
                at_most = sum(c for c in state_counts.values() if c <= count)
                rare[i] = at_most / n_messages
            # Surge: recent counts decay with the service's own messages (a half-life in
            # messages, not seconds), so "recent" is the last few dozen lines of a quiet service
            # and the last second or two of a busy one. Counts are kept scaled by 2**exponent so
            # decaying them all is one multiplication, not a pass over every counter.
            state.surge_events += 1
            exponent = (state.surge_events - state.surge_ref_events) / surge_halflife
            if exponent > RESCALE_EXPONENT:
                factor = 2.0**-exponent
                state.burst = {k: v * factor for k, v in state.burst.items() if v * factor > 1e-3}
                state.surge_total *= factor
                state.surge_ref_events = state.surge_events
                exponent = 0.0
            unit = 2.0**exponent
            burst = state.burst
            scaled_before = burst.get(template_id, 0.0)
            surge_total_before = state.surge_total
            scaled = scaled_before + unit
            burst[template_id] = scaled
            state.surge_total = surge_total_before + unit
            if judged and levels[i] >= min_level:
                # Only the events whose surge is judged need these (most are below the level).
                before = scaled_before / unit
                older_total = n_messages - surge_total_before / unit
                if older_total < 0.0:
                    older_total = 0.0
                recent = scaled / unit
                # The template's share in the service's *older* history (its recent messages
                # taken out), so that a surge does not raise its own expectation.
                share = (max(count - before, 0.0) + 0.5) / (older_total + 1.0)
                expected = min(share, 1.0) * state.surge_total / unit
                surge_count[i] = recent
                surge_expected[i] = expected
                # P(N >= k) for N ~ Poisson(expected) is the regularised lower gamma P(k, expected)
                # (scipy's scalar entry point: the C function its ufunc calls, without the
                # ufunc's overhead on one value).
                poisson = gammainc_one(recent, expected)
                # A template's habit: one that has surged k times and got over it (its recent
                # count decayed below one) starts another surge about k times in the service's n
                # lines, however un-Poisson the burst; the first surge is judged by Poisson alone.
                if template_id in state.surging and before < SURGE_OVER_COUNT:
                    state.surging.discard(template_id)
                    state.episodes[template_id] = state.episodes.get(template_id, 0) + 1
                if poisson < SURGE_EPISODE_RARITY:
                    state.surging.add(template_id)
                habit = state.episodes.get(template_id, 0)
                surge[i] = max(poisson, habit / n_messages) if habit else poisson
            # Learn.
            # Templates a service brings in while warming up are its vocabulary, not a habit.
            state.introduced += created and judged
            if count == 0:
                if len(state_counts) >= self.max_templates:
                    least = min(state_counts, key=state_counts.__getitem__)
                    state.messages -= state_counts.pop(least)
                    state.burst.pop(least, None)
                    state.episodes.pop(least, None)
                    state.surging.discard(least)
                state.singletons += 1
            elif count == 1:
                state.singletons -= 1
            state_counts[template_id] = count + 1
            state.messages += 1
        int_columns = np.array([ids, seen, counts], dtype=np.int64)
        float_columns = np.array(
            [novelty, system_rarity, rare, surge, surge_count, surge_expected], dtype=np.float64
        )
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        ints, floats = int_columns, float_columns
        return TemplateView(
            ints[0],
            ints[1],
            ints[2],
            floats[0],
            floats[1],
            floats[2],
            floats[3],
            floats[4],
            floats[5],
        )

    def observe_one(self, service: str, message: str, level_score: float) -> TemplateView:
        """``observe`` of a batch of one (the engine's one-event path), on Python values: the same
        steps in the same order as one pass of ``observe``'s loop (keep the two in step; the
        differential tests in tests/test_store_equivalence.py compare them), without its
        per-batch lists, and its columns made as one array each and sliced."""
        if not message:
            return _no_template_view()
        miner = self.miner
        token_cache = self._tokens
        key = (service, message)
        tokens = token_cache.get(key)
        if tokens is None:
            if len(token_cache) >= TOKEN_CACHE_SIZE:
                token_cache.clear()
            tokens = token_cache[key] = tokens_of(without_service_name(service, message))
        if not tokens:
            return _no_template_view()
        state = self.state_for(service)
        prior_singletons, prior_messages = miner.singletons, miner.messages
        resolved = miner._cache
        cached = resolved.get(tokens)
        template = miner._templates.get(cached) if cached is not None else None
        if template is not None:
            miner.messages = prior_messages + 1
            resolved.move_to_end(tokens)
            if template.count == 1:
                miner.singletons = prior_singletons - 1
            template.count += 1
            template_id, created = template.template_id, False
            miner._templates.move_to_end(template_id)
        else:
            template_id, created = miner.observe_tokens(tokens)
        n_messages = state.messages
        state_counts = state.counts
        count = state_counts.get(template_id, 0)
        novelty = system_rarity = rare = surge = 1.0
        surge_count = surge_expected = 0.0
        judged = n_messages >= MIN_SERVICE_MESSAGES
        if judged and count == 0:
            novelty = (state.singletons + 1.0) / (n_messages + 2.0)
            prior = 0 if created else miner.count(template_id) - 1
            if prior <= RARE_SHARE * prior_messages:
                tail = miner.tail_messages(template_id, prior) if prior else 0
                system = (prior_singletons + 1.0 + tail) / (prior_messages + 2.0)
                system_rarity = (state.introduced + SYSTEM_PRIOR_MESSAGES * system) / (
                    n_messages + SYSTEM_PRIOR_MESSAGES
                )
        elif judged and count < RARE_SHARE * n_messages:
            at_most = sum(c for c in state_counts.values() if c <= count)
            rare = at_most / n_messages
        state.surge_events += 1
        exponent = (state.surge_events - state.surge_ref_events) / self.surge_halflife_messages
        if exponent > RESCALE_EXPONENT:
            factor = 2.0**-exponent
            state.burst = {k: v * factor for k, v in state.burst.items() if v * factor > 1e-3}
            state.surge_total *= factor
            state.surge_ref_events = state.surge_events
            exponent = 0.0
        unit = 2.0**exponent
        burst = state.burst
        scaled_before = burst.get(template_id, 0.0)
        surge_total_before = state.surge_total
        scaled = scaled_before + unit
        burst[template_id] = scaled
        state.surge_total = surge_total_before + unit
        if judged and level_score >= self.surge_min_level_score:
            before = scaled_before / unit
            older_total = n_messages - surge_total_before / unit
            if older_total < 0.0:
                older_total = 0.0
            recent = scaled / unit
            share = (max(count - before, 0.0) + 0.5) / (older_total + 1.0)
            expected = min(share, 1.0) * state.surge_total / unit
            surge_count = recent
            surge_expected = expected
            poisson = gammainc_one(recent, expected)
            if template_id in state.surging and before < SURGE_OVER_COUNT:
                state.surging.discard(template_id)
                state.episodes[template_id] = state.episodes.get(template_id, 0) + 1
            if poisson < SURGE_EPISODE_RARITY:
                state.surging.add(template_id)
            habit = state.episodes.get(template_id, 0)
            surge = max(poisson, habit / n_messages) if habit else poisson
        state.introduced += created and judged
        if count == 0:
            if len(state_counts) >= self.max_templates:
                least = min(state_counts, key=state_counts.__getitem__)
                state.messages -= state_counts.pop(least)
                state.burst.pop(least, None)
                state.episodes.pop(least, None)
                state.surging.discard(least)
            state.singletons += 1
        elif count == 1:
            state.singletons -= 1
        state_counts[template_id] = count + 1
        state.messages += 1
        ints = np.array((template_id, n_messages, count), dtype=np.int64)
        floats = np.array(
            (novelty, system_rarity, rare, surge, surge_count, surge_expected), dtype=np.float64
        )
        # Slices of one array per dtype: a third of the cost of the batch path's nested lists.
        return TemplateView(
            ints[0:1],
            ints[1:2],
            ints[2:3],
            floats[0:1],
            floats[1:2],
            floats[2:3],
            floats[3:4],
            floats[4:5],
            floats[5:6],
        )

    def service_counts(self, service: str) -> dict[int, int]:
        state = self.get(service)
        return dict(state.counts) if state is not None else {}


def _no_template_view() -> TemplateView:
    """The view of one event without a template (no message, or one with no tokens): fresh
    arrays each time, as the batch path's (a caller may keep or change them)."""
    ints = np.array((NO_TEMPLATE, 0, 0), dtype=np.int64)
    floats = np.array((1.0, 1.0, 1.0, 1.0, 0.0, 0.0), dtype=np.float64)
    return TemplateView(
        ints[0:1], ints[1:2], ints[2:3], floats[0:1], floats[1:2], floats[2:3], floats[3:4],
        floats[4:5], floats[5:6],
    )  # fmt: skip
