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

import ctypes
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import cython_special

from app.compiled import TWO, compile_kernel, unchecked
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
from app.service_states import ServiceSlots, SlotsContainer, grown_rows, pair_index

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


class ServiceTemplates:
    """A picture of one service's template counters and surge state, read from the store's
    arrays (``TemplateStore.get``)."""

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


# A service's row: its messages, templates seen once, templates introduced, surge clock (events
# and the event its counters were last rescaled at), its counters (how many, first and last).
_MESSAGES, _SINGLETONS, _INTRODUCED, _SURGE_EVENTS, _SURGE_REF = range(5)
_DISTINCT, _HEAD, _TAIL = range(5, 8)
# Its decayed count of all recent messages, a float kept in the row's int64 storage (the kernel
# reads the rows through a float64 view too: one array argument fewer per call).
_SURGE_TOTAL = 8
_ROW_FIELDS = 9
# A counter, one per (service, template), linked in the order the service first counted its
# template (the plain store's dict order, which breaks ties when the least frequent is
# dropped): template, messages, surges got over, surging now (0/1), neighbours, and its decayed
# recent count (0.0 where the plain store held no entry). Keyed in the table
# (``app.keyed``) as (row, template, 0).
_TEMPLATE, _COUNT, _EPISODES, _SURGING, _PREV, _NEXT = range(6)
_BURST = 6  # a float, as _SURGE_TOTAL
_COUNTER_FIELDS = 7
_COUNTERS_USED, _COUNTERS_FREE, _COUNTERS_LIVE = range(3)
_META_FIELDS = 7
# An event's inputs to the kernel (rows of one array): row code, template, whether the miner
# made it, the miner's singletons and messages before the event, the template's messages before
# it, and the system tail (``TemplateMiner.tail_messages``) where the kernel asked for it.
_CODE, _ID, _CREATED, _PRIOR_SINGLETONS, _PRIOR_MESSAGES, _PRIOR_COUNT, _TAIL_IN = range(7)
_EVENT_FIELDS = 7
# ``observe_one``'s event written into its column (native int64s, in field order).
_pack_event = struct.Struct(f"={_EVENT_FIELDS}q").pack_into
_NO_TAIL = -1
_EMPTY_ROW = np.array([0, 0, 0, 0, 0, 0, -1, -1, 0], dtype=np.int64)  # 0 is 0.0's bits


def _gammainc_python(x: float, a: float, dispatch: int) -> float:
    """The regularised lower gamma P(x, a) the surge test takes its Poisson tail from (scipy's
    scalar entry point; ``dispatch``, the C function's flag for overridden cpdef methods, is
    there to take the compiled call's arguments)."""
    return float(cython_special.gammainc(x, a))


def _gammainc_for_kernels() -> Any:
    """``_gammainc_python`` as the compiled kernel calls it: the very C function scipy's scalar
    entry point runs (the same double, bit for bit), declared to numba by a symbol name so that
    the kernel can still be cached (a ctypes pointer would make it uncacheable)."""
    try:
        import llvmlite.binding  # type: ignore[import-untyped]
        from numba import types
    except ImportError:  # pragma: no cover - numba is a dependency; this keeps numpy-only installs
        return _gammainc_python
    capsule = cython_special.__pyx_capi__["gammainc"]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    llvmlite.binding.add_symbol("insighthub_gammainc", get_pointer(capsule, get_name(capsule)))
    return types.ExternalFunction(
        "insighthub_gammainc", types.float64(types.float64, types.float64, types.intc)
    )


_gammainc = _gammainc_for_kernels()


def _reset_row_python(
    row: int, rows: IntArray, counters: IntArray, table: IntArray, meta: IntArray
) -> None:
    """Start a row afresh: forget whatever an evicted service left in it."""
    counter = rows[row, _HEAD]
    while counter >= 0:
        following = counters[counter, _NEXT]
        drop_key(table, meta, row, counters[counter, _TEMPLATE], 0)
        give(counters, meta, _COUNTERS_USED, _NEXT, counter)
        counter = following
    for field in range(_ROW_FIELDS):
        rows[row, field] = _EMPTY_ROW[field]


_reset_row = (
    compile_kernel(
        _reset_row_python, "void(int64, int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[::1])"
    )
    or _reset_row_python
)


def _observe_kernel(
    events: IntArray,
    levels: FloatArray,
    rows: IntArray,
    counters: IntArray,
    table: IntArray,
    meta: IntArray,
    ints: IntArray,
    floats: FloatArray,
    start: int,
    min_level: float,
    halflife: float,
    max_templates: int,
    two: float,
) -> int:
    """Judge each event's template against its service's counters, then count it: in order,
    from ``start``. Returns the number of events done: short of all of them at an event whose
    system tail it needs (``events[_TAIL_IN]``), which the caller fills before calling again
    from there. Compiled by numba (``app.compiled``); as plain Python the same arithmetic."""
    n = events.shape[1]
    row_floats = rows.view(np.float64)
    counter_floats = counters.view(np.float64)
    for i in range(start, n):
        template_id = events[_ID, i]
        ints[0, i] = template_id
        ints[1, i] = 0
        ints[2, i] = 0
        floats[0, i] = 1.0
        floats[1, i] = 1.0
        floats[2, i] = 1.0
        floats[3, i] = 1.0
        floats[4, i] = 0.0
        floats[5, i] = 0.0
        if template_id == NO_TEMPLATE:
            continue
        row = events[_CODE, i]
        if row < 0:
            row = ~row  # the row's first event for this service (ServiceSlots.row_codes)
            _reset_row(row, rows, counters, table, meta)
            events[_CODE, i] = row  # reset once, should the caller resume at this event
        n_messages = rows[row, _MESSAGES]
        counter = find(table, row, template_id, 0)
        count = counters[counter, _COUNT] if counter >= 0 else 0
        judged = n_messages >= MIN_SERVICE_MESSAGES
        created = events[_CREATED, i] != 0
        prior_messages = events[_PRIOR_MESSAGES, i]
        if judged and count == 0:
            # New to this service: how rare is the template in the whole system? (See
            # ``TemplateStore.observe``.)
            prior = 0 if created else events[_PRIOR_COUNT, i]
            if prior <= RARE_SHARE * prior_messages:
                tail = 0
                if prior:
                    tail = events[_TAIL_IN, i]
                    if tail == _NO_TAIL:
                        return i
                system = (events[_PRIOR_SINGLETONS, i] + 1.0 + tail) / (prior_messages + 2.0)
                floats[1, i] = (rows[row, _INTRODUCED] + SYSTEM_PRIOR_MESSAGES * system) / (
                    n_messages + SYSTEM_PRIOR_MESSAGES
                )
            floats[0, i] = (rows[row, _SINGLETONS] + 1.0) / (n_messages + 2.0)
        elif judged and count < RARE_SHARE * n_messages:
            at_most = 0
            other = rows[row, _HEAD]
            while other >= 0:
                if counters[other, _COUNT] <= count:
                    at_most += counters[other, _COUNT]
                other = counters[other, _NEXT]
            floats[2, i] = at_most / n_messages
        ints[1, i] = n_messages
        ints[2, i] = count
        # Surge: counts decaying with the service's own messages, kept scaled by 2**exponent.
        rows[row, _SURGE_EVENTS] += 1
        exponent = (rows[row, _SURGE_EVENTS] - rows[row, _SURGE_REF]) / halflife
        if exponent > RESCALE_EXPONENT:
            factor = two**-exponent
            other = rows[row, _HEAD]
            while other >= 0:
                scaled_down = counter_floats[other, _BURST] * factor
                counter_floats[other, _BURST] = scaled_down if scaled_down > 1e-3 else 0.0
                other = counters[other, _NEXT]
            row_floats[row, _SURGE_TOTAL] *= factor
            rows[row, _SURGE_REF] = rows[row, _SURGE_EVENTS]
            exponent = 0.0
        unit = two**exponent
        scaled_before = counter_floats[counter, _BURST] if counter >= 0 else 0.0
        surge_total_before = row_floats[row, _SURGE_TOTAL]
        scaled = scaled_before + unit
        row_floats[row, _SURGE_TOTAL] = surge_total_before + unit
        surging = counters[counter, _SURGING] if counter >= 0 else 0
        episodes = counters[counter, _EPISODES] if counter >= 0 else 0
        if judged and levels[i] >= min_level:
            before = scaled_before / unit
            older_total = n_messages - surge_total_before / unit
            if older_total < 0.0:
                older_total = 0.0
            recent = scaled / unit
            excess = count - before
            if 0.0 > excess:
                excess = 0.0
            share = (excess + 0.5) / (older_total + 1.0)
            if 1.0 < share:
                share = 1.0
            expected = share * row_floats[row, _SURGE_TOTAL] / unit
            floats[4, i] = recent
            floats[5, i] = expected
            poisson = _gammainc(recent, expected, 0)
            if surging and before < SURGE_OVER_COUNT:
                surging = 0
                episodes += 1
            if poisson < SURGE_EPISODE_RARITY:
                surging = 1
            surge = poisson
            if episodes:
                habit = episodes / n_messages
                if habit > surge:
                    surge = habit
            floats[3, i] = surge
        # Learn.
        # Templates a service brings in while warming up are its vocabulary, not a habit.
        if created and judged:
            rows[row, _INTRODUCED] += 1
        if count == 0:
            if rows[row, _DISTINCT] >= max_templates:
                least = least_counted(counters, rows[row, _HEAD], _COUNT, _NEXT)
                rows[row, _MESSAGES] -= counters[least, _COUNT]
                unlink(counters, least, _PREV, _NEXT, rows, row, _HEAD, _TAIL)
                rows[row, _DISTINCT] -= 1
                drop_key(table, meta, row, counters[least, _TEMPLATE], 0)
                give(counters, meta, _COUNTERS_USED, _NEXT, least)
            rows[row, _SINGLETONS] += 1
            counter = take(counters, meta, _COUNTERS_USED, _NEXT)
            counters[counter, _TEMPLATE] = template_id
            link_last(counters, counter, _PREV, _NEXT, rows, row, _HEAD, _TAIL)
            rows[row, _DISTINCT] += 1
            put(table, meta, row, template_id, 0, counter)
        elif count == 1:
            rows[row, _SINGLETONS] -= 1
        counters[counter, _COUNT] = count + 1
        counters[counter, _SURGING] = surging
        counters[counter, _EPISODES] = episodes
        counter_floats[counter, _BURST] = scaled
        rows[row, _MESSAGES] += 1
    return int(n)


_compiled_observe = compile_kernel(
    _observe_kernel,
    "int64(int64[:, ::1], float64[::1], int64[:, ::1], int64[:, ::1], int64[:, ::1], int64[::1],"
    " int64[:, ::1], float64[:, ::1], int64, float64, float64, int64, float64)",
)
_observe = _compiled_observe or _observe_kernel
# The one-event path's call: its arguments are the store's own arrays, exactly the
# signature's (``unchecked``).
_observe_one = unchecked(_observe)


class TemplateStore(SlotsContainer):
    """The engine's online template state: one miner shared by all services, counters per service.

    Services are bounded like baselines (least recently seen evicted); each service keeps at most
    ``max_templates`` counters, dropping its least frequent when full. The counters are arrays
    (see ``_observe_kernel``) that one compiled pass per batch reads and updates; the miner stays
    in Python (it works on strings).
    """

    def __init__(
        self,
        max_templates: int = 5000,
        similarity: float = 0.5,
        surge_halflife_messages: float = 50.0,
        max_services: int = 100_000,
        surge_min_level_score: float = SURGE_MIN_LEVEL_SCORE,
    ) -> None:
        self.miner = TemplateMiner(max_templates, similarity)
        self.max_templates = max_templates
        self.surge_halflife_messages = surge_halflife_messages
        self.surge_min_level_score = surge_min_level_score
        # (service, message) -> its tokens with the service's name masked: most messages repeat
        # verbatim, and splitting and masking them is about half of the miner's cost per event.
        # A pure function of its key, so the cache changes no result; cleared when full.
        self._tokens: dict[tuple[str, str], tuple[str, ...]] = {}
        self.services = ServiceSlots(max_services)
        self._rows = np.empty((0, _ROW_FIELDS), dtype=np.int64)
        self._counters = np.zeros((16, _COUNTER_FIELDS), dtype=np.int64)
        self._table = new_table(64)
        self._meta = np.zeros(_META_FIELDS, dtype=np.int64)
        self._meta[_COUNTERS_FREE] = -1
        # Events that fit in the counters and the table as they are (each adds at most one of
        # each): ``_reserve`` is skipped until they are spent.
        self._headroom = 0
        # The one event's inputs to the kernel (``observe_one``): reused.
        self._one_events = np.empty((_EVENT_FIELDS, 1), dtype=np.int64)
        # The same memory as a flat buffer, written by one ``struct`` call: numpy's assignment
        # of a tuple to a column converts it element by element at four times the cost.
        self._one_events_buffer = self._one_events.data.cast("B")
        self._one_level = np.empty(1, dtype=np.float64)
        # Its outputs and their view, made once: the kernel overwrites every field each call
        # (two arrays and nine row views made per event were a quarter of the call's cost).
        self._one_ints = np.empty((3, 1), dtype=np.int64)
        self._one_floats = np.empty((6, 1), dtype=np.float64)
        self._one_view = TemplateView(*self._one_ints, *self._one_floats)

    def _allocate_rows(self) -> None:
        """Rows for every slot handed out (``grown_rows``)."""
        # Empty lists: a new row's first event resets it by walking them.
        services = self.services
        self._rows = grown_rows(self._rows, services.rows_used, services.max_services, _EMPTY_ROW)

    def _reserve(self, events: int) -> None:
        """Room in the counters and the table for ``events`` more events (doubling)."""
        if self._headroom >= events:
            self._headroom -= events
            return
        live = int(self._meta[_COUNTERS_LIVE]) + events
        keys = int(self._meta[KEYS_LIVE]) + events
        self._counters = grown_pool(self._counters, 2 * live)
        self._table = grown_table(self._table, self._meta, keys)
        # The table stays at most half full until the next reserve.
        self._headroom = (
            min(
                self._counters.shape[0] - int(self._meta[_COUNTERS_LIVE]),
                self._table.shape[0] // 2 - int(self._meta[KEYS_LIVE]),
            )
            - events
        )

    def _row_for(self, service: str) -> int:
        """``ServiceSlots.slot_for`` as the kernel reads it: the row, or ``~row`` if new."""
        slot, fresh = self.services.slot_for(service)
        if fresh:
            self._allocate_rows()
            return ~slot
        return slot

    def _run(
        self,
        events: IntArray,
        levels: FloatArray,
        tail_at: Callable[[int], int],
    ) -> TemplateView:
        """The kernel over the batch, filling in each system tail it stops for."""
        n = events.shape[1]
        self._reserve(n)
        ints = np.empty((3, n), dtype=np.int64)
        floats = np.empty((6, n), dtype=np.float64)
        done = 0
        while True:
            done = _observe(
                events, levels, self._rows, self._counters, self._table, self._meta, ints, floats,
                done, self.surge_min_level_score, self.surge_halflife_messages, self.max_templates,
                TWO,
            )  # fmt: skip
            if done == n:
                break
            events[_TAIL_IN, done] = tail_at(done)
        # Rows by index: iterating a 2-D array makes each row view at twice the cost.
        return TemplateView(
            ints[0], ints[1], ints[2], floats[0], floats[1], floats[2], floats[3], floats[4],
            floats[5],
        )  # fmt: skip

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
            counts: dict[int, int] = {}
            for text, count in seed.counts.items():
                template_id = found.get(text)
                if template_id is None:
                    template_id = self.miner.find(text)
                    if template_id is None:
                        template_id = self.miner.add(text)
                        found.clear()
                    else:
                        found[text] = template_id
                counts[template_id] = counts.get(template_id, 0) + count
            self._seed_service(seed.service, counts)

    def _seed_service(self, service: str, counts: dict[int, int]) -> None:
        """Track a new service (the most recently seen) with ``counts`` as its counters, in
        their order, and nothing else learned."""
        code = self._row_for(service)
        row = ~code if code < 0 else code
        _reset_row(row, self._rows, self._counters, self._table, self._meta)
        self._headroom = 0  # counters are added here, not by the kernel
        self._reserve(len(counts))
        self._headroom = 0
        rows, counters = self._rows, self._counters
        previous = -1
        for template_id, count in counts.items():
            counter = take(counters, self._meta, _COUNTERS_USED, _NEXT)
            counters[counter] = (template_id, count, 0, 0, previous, -1, 0)  # 0: 0.0's bits
            if previous >= 0:
                counters[previous, _NEXT] = counter
            else:
                rows[row, _HEAD] = counter
            previous = counter
            put(self._table, self._meta, row, template_id, 0, counter)
        rows[row, _TAIL] = previous
        rows[row, _DISTINCT] = len(counts)
        rows[row, _MESSAGES] = sum(counts.values())
        rows[row, _SINGLETONS] = sum(1 for c in counts.values() if c == 1)

    def _tokens_of(self, service: str, message: str) -> tuple[str, ...]:
        token_cache = self._tokens
        key = (service, message)
        tokens = token_cache.get(key)
        if tokens is None:
            if len(token_cache) >= TOKEN_CACHE_SIZE:
                token_cache.clear()
            tokens = token_cache[key] = tokens_of(without_service_name(service, message))
        return tokens

    def observe(
        self,
        services: Sequence[str],
        messages: Sequence[str],
        level_scores: Sequence[float] | None = None,
    ) -> TemplateView:
        """Read each event's template statistics, then learn from it: sequential, in order.

        ``level_scores`` (``app.schemas.events.LEVEL_SCORES``) limit the surge test to events at
        ``surge_min_level_score`` or above; without them every event's surge is judged.

        The miner runs first over the batch (in Python: it works on strings), recording for
        each event what the counters' judgement reads of it; then the kernel judges and counts.
        The one thing it reads that depends on the miner's state at the event, the system tail
        (``TemplateMiner.tail_messages``, for a template new to a judged service), it asks for
        by stopping there: the tail is then worked out from the miner's state after the batch,
        with the batch's later events taken back."""
        n = len(services)
        levels = np.full(n, self.surge_min_level_score) if level_scores is None else level_scores
        # Each event as its distinct (service, message): tokens (a pure function of it, cached)
        # and, for texts the miner resolved before, templates are looked up once per text.
        distinct, codes = pair_index(services, messages)
        tokens_of_code = [self._tokens_of(*pair) if pair[1] else () for pair in distinct]
        miner = self.miner
        resolved = miner._cache
        templates_by_id = miner._templates
        events = np.zeros((_EVENT_FIELDS, n), dtype=np.int64)
        events[_TAIL_IN] = _NO_TAIL
        # Per templated event, the miner's template it evicted: (id, messages) at eviction.
        evicted: dict[int, tuple[int, int]] = {}
        known = [
            resolved.get(tokens, NO_TEMPLATE) if tokens else NO_TEMPLATE
            for tokens in tokens_of_code
        ]
        if all(
            template_id in templates_by_id
            for template_id, tokens in zip(known, tokens_of_code, strict=True)
            if tokens
        ):
            self._mine_known(events, codes, known, tokens_of_code)
        else:
            tokens = [tokens_of_code[code] for code in codes.tolist()]
            events[_ID] = self._mine(tokens, events, evicted)
        templated = events[_ID] != NO_TEMPLATE
        if templated.all():
            events[_CODE] = self.services.row_codes(services)
        else:
            kept = [service for service, t in zip(services, templated.tolist(), strict=True) if t]
            if kept:
                events[_CODE, templated] = self.services.row_codes(kept)
        self._allocate_rows()

        def tail_at(i: int) -> int:
            return self._tail_at(i, events, evicted)

        return self._run(events, np.ascontiguousarray(levels, dtype=np.float64), tail_at)

    def _mine_known(
        self,
        events: IntArray,
        codes: IntArray,
        known: list[int],
        tokens_of_code: list[tuple[str, ...]],
    ) -> None:
        """The miner's steps for a batch whose every text it has resolved before (most batches):
        what one ``observe_tokens`` per event would record and leave, in one compiled pass.
        Each event adds a message and one to its template's count (a template at one leaves the
        singletons), and makes its text and its template the most recently used: one move after
        another leaves the touched keys last, in the order of their last touches.

        ``codes``: each event's distinct (service, message); ``known``: their templates."""
        miner = self.miner
        templates_by_id = miner._templates
        index: dict[int, int] = {}
        template_of_code = [
            index.setdefault(t, len(index)) if t != NO_TEMPLATE else -1 for t in known
        ]
        events[_ID] = np.array(known, dtype=np.int64)[codes]
        if not index:
            return
        templates = [templates_by_id[t] for t in index]
        counts = np.array([template.count for template in templates], dtype=np.int64)
        last_of_template = np.empty(len(templates), dtype=np.int64)
        last_of_code = np.empty(len(known), dtype=np.int64)
        miner.messages, miner.singletons = _known_columns(
            codes, np.array(template_of_code, dtype=np.int64), counts, miner.messages,
            miner.singletons, events, last_of_template, last_of_code,
        )  # fmt: skip
        for template, after in zip(templates, counts.tolist(), strict=True):
            template.count = after
        for k in np.argsort(last_of_template).tolist():
            templates_by_id.move_to_end(templates[k].template_id)
        last_of_tokens: dict[tuple[str, ...], int] = {}
        for code, last in enumerate(last_of_code.tolist()):
            if last >= 0:
                tokens = tokens_of_code[code]
                if last > last_of_tokens.get(tokens, -1):
                    last_of_tokens[tokens] = last
        resolved = miner._cache
        for tokens in sorted(last_of_tokens, key=last_of_tokens.__getitem__):
            resolved.move_to_end(tokens)

    def _mine(
        self,
        all_tokens: list[tuple[str, ...]],
        events: IntArray,
        evicted: dict[int, tuple[int, int]],
    ) -> list[int]:
        """The miner over the batch, one event after another (texts it has not resolved yet:
        new templates, merges, evictions): each event's id and what the counters read of it."""
        miner = self.miner
        resolved = miner._cache
        templates_by_id = miner._templates
        ids = [NO_TEMPLATE] * len(all_tokens)
        created = [0] * len(all_tokens)
        prior_singletons = [0] * len(all_tokens)
        prior_messages = [0] * len(all_tokens)
        prior_counts = [0] * len(all_tokens)
        for i, tokens in enumerate(all_tokens):
            if not tokens:
                continue
            prior_singletons[i], prior_messages[i] = miner.singletons, miner.messages
            # ``observe_tokens``'s path for a repeated text, without its two calls, with the
            # same effects in the same order.
            cached = resolved.get(tokens)
            template = templates_by_id.get(cached) if cached is not None else None
            if template is not None:
                miner.messages += 1
                resolved.move_to_end(tokens)
                if template.count == 1:
                    miner.singletons -= 1
                template.count += 1
                template_id = template.template_id
                templates_by_id.move_to_end(template_id)
            else:
                # A new template evicts the least recently matched one when the miner is full.
                oldest = None
                if len(templates_by_id) >= miner.max_templates and templates_by_id:
                    first = next(iter(templates_by_id.values()))
                    oldest = (first.template_id, first.count)
                evictions = miner.evictions
                template_id, made = miner.observe_tokens(tokens)
                if miner.evictions != evictions and oldest is not None:
                    evicted[i] = oldest
                created[i] = made
            ids[i] = template_id
            prior_counts[i] = miner.count(template_id) - 1
        events[_CREATED] = created
        events[_PRIOR_SINGLETONS] = prior_singletons
        events[_PRIOR_MESSAGES] = prior_messages
        events[_PRIOR_COUNT] = prior_counts
        return ids

    def _tail_at(self, i: int, events: IntArray, evicted: dict[int, tuple[int, int]]) -> int:
        """``miner.tail_messages`` as it was right after event ``i`` was mined: the miner's
        counts now, with the batch's events after ``i`` taken back (last first: an event's
        evictions put back, then its template made or counted taken away)."""
        counts = {t: template.count for t, template in self.miner._templates.items()}
        ids = events[_ID].tolist()
        made = events[_CREATED].tolist()
        for j in range(len(ids) - 1, i, -1):
            template_id = ids[j]
            if template_id == NO_TEMPLATE:
                continue
            if j in evicted:
                old_id, old_count = evicted[j]
                counts[old_id] = old_count
            if made[j]:
                del counts[template_id]
            else:
                counts[template_id] -= 1
        template_id = ids[i]
        prior = int(events[_PRIOR_COUNT, i])
        return prior + sum(c for t, c in counts.items() if c <= prior and t != template_id)

    def observe_one(self, service: str, message: str, level_score: float) -> TemplateView:
        """``observe`` of a batch of one (the engine's one-event path): ``_mine``'s steps for
        the one event on Python values, then the same kernel on the store's reused input
        arrays (it only reads them during the call). The view of an event with a template is
        the store's own, valid until its next ``observe_one`` (the engine reads it before)."""
        if not message:
            return _no_template_view()
        tokens = self._tokens_of(service, message)
        if not tokens:
            return _no_template_view()
        miner = self.miner
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
            prior_count = template.count - 1
        else:
            template_id, created = miner.observe_tokens(tokens)
            prior_count = miner.count(template_id) - 1
        # ``ServiceSlots.slot_for``'s path for a known service (nearly every event), inline.
        slots = self.services._slots
        slot = slots.get(service)
        if slot is not None:
            slots.move_to_end(service)
            code = slot
        else:
            code = self._row_for(service)
        events = self._one_events
        _pack_event(
            self._one_events_buffer, 0, code, template_id, created, prior_singletons,
            prior_messages, prior_count, _NO_TAIL,
        )  # fmt: skip
        levels = self._one_level
        levels[0] = level_score
        if self._headroom >= 1:
            self._headroom -= 1
        else:
            self._reserve(1)
        while not _observe_one(
            events, levels, self._rows, self._counters, self._table, self._meta, self._one_ints,
            self._one_floats, 0, self.surge_min_level_score, self.surge_halflife_messages,
            self.max_templates, TWO,
        ):  # fmt: skip
            # The miner is as the event left it.
            events[_TAIL_IN, 0] = miner.tail_messages(template_id, prior_count)
        return self._one_view

    def get(self, service: str) -> ServiceTemplates | None:
        """A picture of the service's counters and surge state if it is tracked (counters in
        their order); reading it does not count as seeing it."""
        row = self.services.get(service)
        if row is None:
            return None
        fields = [int(v) for v in self._rows[row]]
        state = ServiceTemplates()
        state.messages = fields[_MESSAGES]
        state.singletons = fields[_SINGLETONS]
        state.introduced = fields[_INTRODUCED]
        state.surge_events = fields[_SURGE_EVENTS]
        state.surge_ref_events = fields[_SURGE_REF]
        state.surge_total = float(self._rows.view(np.float64)[row, _SURGE_TOTAL])
        counter = fields[_HEAD]
        while counter >= 0:
            template_id, count, episodes, surging, _, following = (
                int(v) for v in self._counters[counter, :_BURST]
            )
            state.counts[template_id] = count
            burst = float(self._counters.view(np.float64)[counter, _BURST])
            if burst != 0.0:
                state.burst[template_id] = burst
            if episodes:
                state.episodes[template_id] = episodes
            if surging:
                state.surging.add(template_id)
            counter = following
        return state

    def service_counts(self, service: str) -> dict[int, int]:
        state = self.get(service)
        return dict(state.counts) if state is not None else {}


def _known_columns_python(
    codes: IntArray,
    template_of_code: IntArray,
    counts: IntArray,
    messages: int,
    singletons: int,
    events: IntArray,
    last_of_template: IntArray,
    last_of_code: IntArray,
) -> tuple[int, int]:
    """For each templated event of a batch of known texts: the miner's messages and singletons
    before it, and its template's count before it, into ``events``; ``counts`` (the templates'
    counts, by ``template_of_code``'s index) left as after the batch; the last event of each
    template and of each distinct text (-1 for a text without a template). Returns the
    miner's messages and singletons after the batch."""
    last_of_template[:] = -1
    last_of_code[:] = -1
    for i in range(codes.shape[0]):
        template = template_of_code[codes[i]]
        if template < 0:
            continue
        count = counts[template]
        events[_PRIOR_MESSAGES, i] = messages
        events[_PRIOR_SINGLETONS, i] = singletons
        events[_PRIOR_COUNT, i] = count
        messages += 1
        if count == 1:
            singletons -= 1
        counts[template] = count + 1
        last_of_template[template] = i
        last_of_code[codes[i]] = i
    return messages, singletons


_known_columns = (
    compile_kernel(
        _known_columns_python,
        "UniTuple(int64, 2)(int64[::1], int64[::1], int64[::1], int64, int64, int64[:, ::1],"
        " int64[::1], int64[::1])",
    )
    or _known_columns_python
)


def _no_template_view() -> TemplateView:
    """The view of one event without a template (no message, or one with no tokens): fresh
    arrays each time, as the batch path's (a caller may keep or change them)."""
    ints = np.array((NO_TEMPLATE, 0, 0), dtype=np.int64)
    floats = np.array((1.0, 1.0, 1.0, 1.0, 0.0, 0.0), dtype=np.float64)
    return TemplateView(
        ints[0:1], ints[1:2], ints[2:3], floats[0:1], floats[1:2], floats[2:3], floats[3:4],
        floats[4:5], floats[5:6],
    )  # fmt: skip
