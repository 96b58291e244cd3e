from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.service_states import ServiceSlots, ServiceStates


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


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=10), max_size=8),
)
def test_slots_for_a_batch_follow_the_states_one_event_at_a_time(
    max_services: int, batches: list[list[str]]
) -> None:
    states: ServiceStates[list[str]] = ServiceStates(list, max_services)
    slots = ServiceSlots(max_services)
    rows: dict[int, list[str]] = {}  # what each row holds, as a store would keep it
    for batch in batches:
        expected = [states.state_for(service) for service in batch]
        for service, state in zip(batch, expected, strict=True):
            state.append(service)
        for service, row, fresh in zip(batch, *slots.slots_for(batch), strict=True):
            if fresh:
                rows[row] = []
            rows[row].append(service)
        # Same services in the same order of recency, same evictions, and each row holds
        # exactly the state its service has one event at a time.
        assert list(slots) == list(states)
        assert slots.evictions == states.evictions
        for service in slots:
            tracked = slots.get(service)
            assert tracked is not None
            assert tracked < max_services
            assert rows[tracked] == states.get(service)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=10), max_size=8),
)
def test_row_codes_are_the_slots_of_one_event_at_a_time(
    max_services: int, batches: list[list[str]]
) -> None:
    # row_codes takes the batch's shared service index; slot_for is the per-event definition.
    # Two stores read each batch's list in turn, the second through the index the first made.
    stores = [ServiceSlots(max_services), ServiceSlots(max_services)]
    one_by_one = ServiceSlots(max_services)
    for batch in batches:
        expected = []
        for service in batch:
            slot, fresh = one_by_one.slot_for(service)
            expected.append(~slot if fresh else slot)
        for store in stores:
            assert store.row_codes(batch).tolist() == expected
            assert list(store) == list(one_by_one)
            assert store.evictions == one_by_one.evictions
