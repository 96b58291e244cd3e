"""The bounded map from service name to per-service state that every online store builds on."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

StateT = TypeVar("StateT")


class ServiceStates(Generic[StateT]):
    """State objects of at most ``max_services`` services; the least recently seen is evicted.

    Baselines, windows, templates, sequences, forecasts and recalibration each keep one of these,
    so a fleet of any size costs bounded memory. ``evictions`` counts services forgotten to stay
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
        known = self._services
        distinct = dict.fromkeys(services)
        new = sum(1 for service in distinct if service not in known)
        if len(known) + new > self.max_services:
            return [self.state_for(service) for service in services]
        states: dict[str, StateT] = {}
        for service in distinct:
            state = known.get(service)
            if state is None:
                state = known[service] = self._new_state()
            states[service] = state
        # One event after another leaves the batch's services last, in order of their last
        # events: reversed, the first occurrence of each is its last event.
        for service in reversed(dict.fromkeys(reversed(services))):
            known.move_to_end(service)
        return [states[service] for service in services]
