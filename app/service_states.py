"""The bounded maps from service name to per-service state that every online store builds on:
state objects (``ServiceStates``) or rows of arrays (``ServiceSlots``, ``RowStore``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

StateT = TypeVar("StateT")
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class ServiceIndex(NamedTuple):
    """A batch's services as its distinct services and, for each event, its service's position
    among them: what every store needs to touch each service once rather than once per event."""

    services: Sequence[str]  # the list indexed, held so that no other list takes its identity
    distinct: list[str]  # in order of their first events
    inverse: IntArray  # each event's position in ``distinct``
    first_events: IntArray  # each distinct service's first event
    by_last_event: list[str]  # ``distinct`` in order of their last events


_last_index: ServiceIndex | None = None


def service_index(services: Sequence[str]) -> ServiceIndex:
    """The ``ServiceIndex`` of ``services``. Every store of the engine reads the same batch's
    list of services, so the index of the last list is kept and given again for the same list
    object (a batch's lists are never changed once made): computed once per batch, not once
    per store."""
    global _last_index
    last = _last_index
    if last is not None and last.services is services and last.inverse.size == len(services):
        return last
    positions: dict[str, int] = {}
    inverse = np.array(
        [positions.setdefault(service, len(positions)) for service in services], dtype=np.int64
    )
    # np.unique with return_index sorts stably: each position's first occurrence.
    _, first_events = np.unique(inverse, return_index=True)
    # One event after another leaves the batch's services last, in order of their last
    # events: reversed, the first occurrence of each is its last event.
    by_last_event = list(reversed(dict.fromkeys(reversed(services))))
    index = ServiceIndex(services, list(positions), inverse, first_events, by_last_event)
    _last_index = index
    return index


def pair_index(
    services: Sequence[str], texts: Sequence[str]
) -> tuple[list[tuple[str, str]], IntArray]:
    """The distinct (service, text) pairs of a batch's events in order of their first events,
    and each event's position among them: ``dict.fromkeys(zip(services, texts))`` numbered.

    A tuple's hash is not cached, and hashing and comparing a pair per event, twice, cost ~0.3 ms
    per 1,000 events; here the services come from the batch's ``service_index`` (made once for
    every store) and each text is hashed once (a string caches its hash), and the pairs are
    numbered by numpy on integer keys."""
    if not services:
        return [], np.zeros(0, dtype=np.int64)
    index = service_index(services)
    text_codes = {text: code for code, text in enumerate(dict.fromkeys(texts))}
    distinct_texts = list(text_codes)
    width = len(distinct_texts)
    keys = index.inverse * width + np.array(list(map(text_codes.__getitem__, texts)), np.int64)
    distinct_keys, first_events, inverse = np.unique(keys, return_index=True, return_inverse=True)
    # np.unique numbers the keys in sorted order: renumbered in order of their first events.
    by_first_event = np.argsort(first_events)
    positions = np.empty_like(by_first_event)
    positions[by_first_event] = np.arange(by_first_event.size)
    pairs = [
        (index.distinct[key // width], distinct_texts[key % width])
        for key in distinct_keys[by_first_event].tolist()
    ]
    codes: IntArray = positions[inverse]
    return pairs, codes


class ServiceStates(Generic[StateT]):
    """State objects of at most ``max_services`` services; the least recently seen is evicted.

    Templates, sequences, recalibration and repeats each keep one of these (baselines, windows
    and forecasts keep ``ServiceSlots``, the same bound as rows of arrays), so a fleet of any size
    costs bounded memory. ``evictions`` counts services forgotten to stay
    within the bound (exported by /metrics).
    """

    def __init__(self, new_state: Callable[[], StateT], max_services: int) -> None:
        self.max_services = max_services
        self.evictions = 0
        self._new_state = new_state
        self._services: OrderedDict[str, StateT] = OrderedDict()

    def __len__(self) -> int:
        return len(self._services)

    def __iter__(self) -> Iterator[str]:
        return iter(self._services)

    def __contains__(self, service: object) -> bool:
        return service in self._services

    def get(self, service: str) -> StateT | None:
        """The service's state if it is tracked; reading it does not count as seeing it."""
        return self._services.get(service)

    def state_for(self, service: str) -> StateT:
        """The service's state, created if new, marked as the most recently seen."""
        state = self._services.get(service)
        if state is None:
            state = self._new_state()
            self._services[service] = state
            if len(self._services) > self.max_services:
                self._services.popitem(last=False)
                self.evictions += 1
        else:
            self._services.move_to_end(service)
        return state

    def states_for(self, services: Sequence[str]) -> list[StateT]:
        """``[self.state_for(s) for s in services]``, with the same states and the same order of
        recency after it, at one lookup per distinct service rather than one per event.

        When the batch brings more new services than there is room for, evictions happen between
        its events and depend on their order: that case takes the per-event path."""
        if len(services) == 1:  # the /score path: nothing to share
            return [self.state_for(services[0])]
        states, positions = self.distinct_states_for(services)
        return list(map(states.__getitem__, positions.tolist()))

    def distinct_states_for(self, services: Sequence[str]) -> tuple[list[StateT], IntArray]:
        """``states_for``'s states without repeats, in order of their first events, and each
        event's position among them: what a kernel over a batch takes, without a Python step per
        event. A service evicted and seen again within the batch has two states, as one event at
        a time would give it. The positions may be the batch's ``service_index`` array, shared
        by every store: read them, never write them."""
        known = self._services
        index = service_index(services)
        new = sum(1 for service in index.distinct if service not in known)
        if len(known) + new > self.max_services:
            each = [self.state_for(service) for service in services]
            # Numbered by identity (a state need not be hashable), in order of first occurrence.
            numbers: dict[int, int] = {}
            positions = np.array(
                [numbers.setdefault(id(state), len(numbers)) for state in each], dtype=np.int64
            )
            distinct = dict(zip(map(id, each), each, strict=True))
            return [distinct[key] for key in numbers], positions
        states: list[StateT] = []
        for service in index.distinct:
            state = known.get(service)
            if state is None:
                state = known[service] = self._new_state()
            states.append(state)
        for service in index.by_last_event:
            known.move_to_end(service)
        return states, index.inverse


class ServiceSlots:
    """Row numbers of at most ``max_services`` services in a store's arrays, least recently seen
    evicted first, exactly as ``ServiceStates`` evicts.

    A store keeps each service's state as one row of contiguous arrays, so that a compiled kernel
    can update a whole batch without a Python object per service. The row of an evicted service
    goes to the service that evicted it, so at most ``max_services`` rows are ever in use.
    """

    def __init__(self, max_services: int) -> None:
        if max_services < 1:
            raise ValueError("max_services must be at least 1")
        self.max_services = max_services
        self.evictions = 0
        self._slots: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[str]:
        return iter(self._slots)

    def __contains__(self, service: object) -> bool:
        return service in self._slots

    @property
    def rows_used(self) -> int:
        """Rows a store needs: every slot handed out so far is below this."""
        return len(self._slots)

    def get(self, service: str) -> int | None:
        """The service's row if it is tracked; reading it does not count as seeing it."""
        return self._slots.get(service)

    def slot_for(self, service: str) -> tuple[int, bool]:
        """The service's row, marked as the most recently seen, and whether the row is new to
        it (its state must start afresh: the row may hold an evicted service's state)."""
        slots = self._slots
        slot = slots.get(service)
        if slot is not None:
            slots.move_to_end(service)
            return slot, False
        if len(slots) >= self.max_services:
            _, slot = slots.popitem(last=False)
            self.evictions += 1
        else:
            slot = len(slots)
        slots[service] = slot
        return slot, True

    def slots_for(self, services: Sequence[str]) -> tuple[list[int], list[bool]]:
        """``slot_for`` of each event's service in order: rows, and which events start their
        service afresh. One lookup per distinct service, unless the batch brings more new
        services than there is room for: then evictions happen between its events and depend on
        their order, and that case takes the per-event path."""
        if len(services) == 1:  # the /score path: nothing to share
            slot, fresh = self.slot_for(services[0])
            return [slot], [fresh]
        known = self._slots
        distinct = dict.fromkeys(services)
        new = [service for service in distinct if service not in known]
        if len(known) + len(new) > self.max_services:
            pairs = [self.slot_for(service) for service in services]
            return [slot for slot, _ in pairs], [fresh for _, fresh in pairs]
        for service in new:
            known[service] = len(known)
        # One event after another leaves the batch's services last, in order of their last
        # events: reversed, the first occurrence of each is its last event.
        for service in reversed(dict.fromkeys(reversed(services))):
            known.move_to_end(service)
        slots = [known[service] for service in services]
        if not new:
            return slots, [False] * len(services)
        starting = set(new)
        first_events: list[bool] = []
        for service in services:
            if service in starting:
                starting.discard(service)
                first_events.append(True)
            else:
                first_events.append(False)
        return slots, first_events

    def row_codes(self, services: Sequence[str]) -> IntArray:
        """``slots_for`` as one array a kernel reads: each event's row, or ``~row`` (negative)
        where the event starts its service afresh. One array rather than two: for the batch of
        one, making and passing an array costs more than the kernel's work on it."""
        if len(services) == 1:
            slot, fresh = self.slot_for(services[0])
            codes = np.empty(1, dtype=np.int64)
            codes[0] = ~slot if fresh else slot
            return codes
        # ``slots_for``'s steps, with the batch's service index (shared by the stores) in
        # place of its passes over the events.
        known = self._slots
        index = service_index(services)
        new = [i for i, service in enumerate(index.distinct) if service not in known]
        if len(known) + len(new) > self.max_services:
            slots, first_events = self.slots_for(services)  # evictions between its events
            codes = np.array(slots, dtype=np.int64)
            if any(first_events):
                codes[np.array(first_events, dtype=np.bool_)] ^= -1  # ~row
            return codes
        for i in new:
            known[index.distinct[i]] = len(known)
        for service in index.by_last_event:
            known.move_to_end(service)
        codes = np.array([known[service] for service in index.distinct], dtype=np.int64)
        codes = codes[index.inverse]
        if new:
            codes[index.first_events[new]] ^= -1  # ~row
        return codes


class SlotsContainer:
    """The container protocol of a store whose services are ``ServiceSlots`` (``self.services``):
    shared by ``RowStore`` and the stores that keep their own rows (templates, sequences)."""

    services: ServiceSlots

    @property
    def max_services(self) -> int:
        return self.services.max_services

    @property
    def evictions(self) -> int:
        return self.services.evictions

    def __len__(self) -> int:
        return len(self.services)

    def __iter__(self) -> Iterator[str]:
        return iter(self.services)

    def __contains__(self, service: object) -> bool:
        return service in self.services


ArrayT = TypeVar("ArrayT", IntArray, FloatArray)


def grown_rows(array: ArrayT, needed: int, max_services: int, fill: ArrayT | None = None) -> ArrayT:
    """``array`` with room for ``needed`` rows, its rows kept, new rows zero or ``fill``; the
    array itself when it has room.

    By half again: amortised O(1) copying per service, at most a third of the rows unused (left
    zero, they are pages the system has not handed out yet), and never past ``max_services``."""
    capacity = array.shape[0]
    if needed <= capacity:
        return array
    size = min(max(needed, capacity + capacity // 2, 16), max_services)
    grown = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    grown[:capacity] = array
    if fill is not None:
        grown[capacity:] = fill
    return grown


class RowStore(SlotsContainer):
    """Base of the stores that keep each service's state as one row of a few arrays, indexed by
    its slot (``ServiceSlots``), so that a compiled kernel updates a whole batch in one call.

    Rows grow by half again up to ``max_services``, so memory follows the services actually seen.
    A row is reset by the kernel at the event that gives it to a service (``row_codes``), so a
    row's contents before that are never read."""

    def __init__(self, max_services: int, *row_shapes: tuple[int, ...]) -> None:
        self.services = ServiceSlots(max_services)
        self.rows: list[FloatArray] = [np.zeros((0, *shape)) for shape in row_shapes]
        # The one event's row code, passed to the store's kernel (``code_of_one``): reused, as
        # the kernels only read it during the call (one array made per event cost more).
        self._code_of_one = np.empty(1, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes held for every service's state (the rows allocated, used or not)."""
        return sum(array.nbytes for array in self.rows)

    def row_codes(self, services: Sequence[str]) -> IntArray:
        """``ServiceSlots.row_codes``, with every row it hands out allocated."""
        codes = self.services.row_codes(services)
        self._allocate_rows()
        return codes

    def code_of_one(self, service: str) -> IntArray:
        """``row_codes([service])`` for the one-event paths: the same row handed out, in an
        array the store reuses (valid until its next call)."""
        codes = self._code_of_one
        # ``ServiceSlots.slot_for``'s path for a known service (nearly every event), inline.
        slots = self.services._slots
        slot = slots.get(service)
        if slot is not None:
            slots.move_to_end(service)
            codes[0] = slot
            return codes
        slot, _ = self.services.slot_for(service)  # a new service: a free or evicted row
        if slot >= self.rows[0].shape[0]:
            self._allocate_rows()
        codes[0] = ~slot
        return codes

    def _allocate_rows(self) -> None:
        """Grow the rows to hold every slot handed out so far."""
        needed, limit = self.services.rows_used, self.services.max_services
        if needed > self.rows[0].shape[0]:
            self.rows = [grown_rows(array, needed, limit) for array in self.rows]
