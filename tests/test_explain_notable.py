"""The single-event shortcut of picking notable method scores agrees with the batch path."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.explain import _ms, _notable_events, fixed_texts, ms_texts

scores_of_methods = st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=10)


@settings(max_examples=300, deadline=None)
@given(scores_of_methods, scores_of_methods)
def test_one_event_finds_the_methods_the_batch_path_finds(
    first: list[float], second: list[float]
) -> None:
    k = min(len(first), len(second))
    names = [f"method{m}" for m in range(k)]
    batch = np.array([first[:k], second[:k]], dtype=np.float64).T.reshape(k, 2)
    batch_notable = _notable_events(dict(zip(names, batch, strict=True)), batch)
    for i in range(2):
        alone = np.ascontiguousarray(batch[:, i : i + 1])
        expected = {name: [0] for name, events in batch_notable.items() if i in events}
        assert _notable_events(dict(zip(names, alone, strict=True)), alone) == expected
        # Without the engine's matrix the rows are stacked from the dict: the same answer.
        assert _notable_events(dict(zip(names, alone, strict=True))) == expected


# Near the ties of one and two decimals (k + 0.5 of the last digit), where a text from the
# scaled product could differ from Python's correctly rounded format, and past the tables.
_near_ties = st.builds(
    lambda k, digits, nudge: (
        np.nextafter((k + 0.5) / 10**digits, np.inf if nudge > 0 else -np.inf)
        if nudge
        else (k + 0.5) / 10**digits
    ),
    st.integers(0, 20_000),
    st.sampled_from([1, 2]),
    st.integers(-1, 1),
)
_fixed_values = st.lists(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(0.0, 1.0),
        st.floats(0.0, 1200.0),
        _near_ties,
        st.sampled_from([0.0, -0.0, 0.125, 0.005, 0.015, 0.25, 0.35, 1.0, 999.95, 1000.05]),
    ),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(_fixed_values, st.sampled_from([1, 2]), st.data())
def test_fixed_texts_are_pythons_format(
    values: list[float], digits: int, data: st.DataObject
) -> None:
    array = np.array(values, dtype=np.float64)
    expected = [f"{value:.{digits}f}" for value in values]
    assert fixed_texts(array, digits) == expected
    wanted = np.array(
        data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))), dtype=bool
    )
    texts = fixed_texts(array, digits, wanted)
    assert [t for t, w in zip(texts, wanted, strict=True) if w] == [
        e for e, w in zip(expected, wanted, strict=True) if w
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(0.0, 12_000.0),
            st.integers(0, 10_001).map(lambda k: k + 0.5),
            st.sampled_from([9.999, 9.9999999, 10.0, 10.5, 11.5, 10_000.4, 10_000.5, -0.0]),
        ),
        max_size=30,
    )
)
def test_ms_texts_are_ms(values: list[float]) -> None:
    assert ms_texts(np.array(values, dtype=np.float64)) == [_ms(value) for value in values]
