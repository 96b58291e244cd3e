"""Batch-path steps written for speed, against the straightforward code they replace: the same
values (bit for bit where they are floats), on inputs hypothesis draws."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import bdtrc, ndtr

from app import forecasts
from app.service_states import ServiceStates, pair_index, service_index


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d-1", "e.2"]), min_size=0, max_size=40),
    st.data(),
)
def test_pair_index_numbers_pairs_as_a_dict_of_tuples_does(
    services: list[str], data: st.DataObject
) -> None:
    texts = data.draw(
        st.lists(
            st.sampled_from(["", "x", "GET /a 200", "é ✓", "a"]),
            min_size=len(services),
            max_size=len(services),
        )
    )
    pairs = list(zip(services, texts, strict=True))
    numbered = {pair: code for code, pair in enumerate(dict.fromkeys(pairs))}
    distinct, codes = pair_index(services, texts)
    assert distinct == list(numbered)
    assert codes.dtype == np.int64
    assert codes.tolist() == [numbered[pair] for pair in pairs]


def test_pair_index_reads_the_batchs_cached_service_index() -> None:
    services = ["b", "a", "b", "c", "a"]
    index = service_index(services)
    distinct, codes = pair_index(services, ["m", "m", "n", "m", "m"])
    assert service_index(services) is index  # the same list: the index made once per batch
    assert distinct == [("b", "m"), ("a", "m"), ("b", "n"), ("c", "m")]
    assert codes.tolist() == [0, 1, 2, 3, 1]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(st.lists(st.sampled_from("abcdefgh"), min_size=2, max_size=10), max_size=6),
)
def test_distinct_states_for_gives_states_for_without_repeats(
    max_services: int, batches: list[list[str]]
) -> None:
    """Both stores see the same batches: the distinct states and positions rebuild
    ``states_for``'s list, with the same recency and evictions, eviction within a batch included."""
    listed: ServiceStates[list[str]] = ServiceStates(list, max_services)
    distinct: ServiceStates[list[str]] = ServiceStates(list, max_services)
    for batch in batches:
        expected = listed.states_for(batch)
        states, positions = distinct.distinct_states_for(batch)
        assert positions.dtype == np.int64
        numbers: dict[int, int] = {}  # the states of one store, numbered by first event
        assert positions.tolist() == [
            numbers.setdefault(id(state), len(numbers)) for state in expected
        ]
        assert len({id(state) for state in states}) == len(states) == len(numbers)
        for service, state in zip(batch, expected, strict=True):
            state.append(service)
        for service, p in zip(batch, positions.tolist(), strict=True):
            states[p].append(service)
        assert list(distinct._services.items()) == list(listed._services.items())
        assert distinct.evictions == listed.evictions


def _tails_on_whole_rows(out: np.ndarray, is_error: np.ndarray) -> None:
    """``forecasts._tails`` as it was written before, the binomial tail on every event."""
    residual_z = out[forecasts._RESIDUAL_Z]
    out[forecasts._LATENCY_RARITY] = np.where(
        np.isnan(residual_z), 1.0, 2.0 * ndtr(-np.abs(residual_z))
    )
    likelihood_z = out[forecasts._LIKELIHOOD_Z]
    out[forecasts._LIKELIHOOD_RARITY] = np.where(
        np.isnan(likelihood_z), 1.0, np.minimum(1.0, 2.0 * ndtr(-np.nan_to_num(likelihood_z)))
    )
    if is_error.any():
        bucket_errors = out[forecasts._BUCKET_ERRORS_OUT]
        bucket_events = out[forecasts._BUCKET_EVENTS_OUT].astype(np.int64)
        out[forecasts._ERROR_RARITY] = np.where(
            is_error,
            bdtrc(np.maximum(bucket_errors - 1.0, 0.0), bucket_events, out[forecasts._RATE]),
            1.0,
        )
    else:
        out[forecasts._ERROR_RARITY] = 1.0


_Z = st.one_of(st.floats(-40.0, 40.0), st.just(float("nan")))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _Z,
            _Z,
            st.integers(0, 60),  # errors in the bucket
            st.integers(0, 60),  # events in the bucket
            st.floats(0.0, 1.0),  # the expected error rate
            st.booleans(),  # an error event
        ),
        min_size=1,
        max_size=30,
    )
)
def test_tails_compute_the_binomial_tail_of_errors_alone_with_the_same_bits(
    events: list[tuple[float, float, int, int, float, bool]],
) -> None:
    n = len(events)
    out = np.full((forecasts._OUTPUTS, n), np.nan)
    residual, likelihood, errors, seen, rate, flags = (
        list(column) for column in zip(*events, strict=True)
    )
    out[forecasts._RESIDUAL_Z] = residual
    out[forecasts._LIKELIHOOD_Z] = likelihood
    out[forecasts._BUCKET_ERRORS_OUT] = errors
    out[forecasts._BUCKET_EVENTS_OUT] = np.maximum(errors, seen)
    out[forecasts._RATE] = rate
    is_error = np.array(flags, dtype=np.bool_)
    expected = out.copy()
    with np.errstate(all="ignore"):
        _tails_on_whole_rows(expected, is_error)
        forecasts._tails(out, is_error)
    assert out.view(np.int64).tolist() == expected.view(np.int64).tolist()
