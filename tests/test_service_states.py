from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.service_states import ServiceStates


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=10), max_size=6),
)
def test_states_for_a_batch_match_one_event_at_a_time(
    max_services: int, batches: list[list[str]]
) -> None:
    one_by_one: ServiceStates[list[str]] = ServiceStates(list, max_services)
    batched: ServiceStates[list[str]] = ServiceStates(list, max_services)
    for batch in batches:
        for states in ([one_by_one.state_for(s) for s in batch], batched.states_for(batch)):
            for service, state in zip(batch, states, strict=True):
                state.append(service)  # each event's state is its own service's
        # Same states, same order of recency (which decides the next eviction), same evictions.
        assert list(batched._services.items()) == list(one_by_one._services.items())
        assert batched.evictions == one_by_one.evictions
