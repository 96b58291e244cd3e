"""The single-event shortcut of picking notable method scores agrees with the batch path."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.explain import _notable_events

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
