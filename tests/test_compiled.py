"""``app.compiled.unchecked``: the compiled code of a kernel called without the dispatcher's type
matching gives what the dispatcher gives, and anything else is handed back as it is."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import baselines, forecasts, patterns, records, sequences, templates, windows
from app.compiled import pairwise_sum, pairwise_sum_python, unchecked
from app.detectors import autoencoder

compiled_only = pytest.mark.skipif(
    not hasattr(pairwise_sum, "overloads"), reason="numba is not installed"
)


@compiled_only
@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), max_size=300), st.data())
def test_unchecked_kernel_answers_as_its_dispatcher(
    values: list[float], data: st.DataObject
) -> None:
    array = np.array(values, dtype=np.float64)
    count = data.draw(st.integers(0, len(values)))
    direct = unchecked(pairwise_sum)
    assert direct is not pairwise_sum
    assert (
        np.float64(direct(array, count)).tobytes()
        == np.float64(pairwise_sum(array, count)).tobytes()
    )


def test_unchecked_gives_back_what_is_not_a_one_signature_kernel() -> None:
    assert unchecked(pairwise_sum_python) is pairwise_sum_python
    numba = pytest.importorskip("numba")
    # Compiled lazily: no signature yet, so nothing to call directly.
    lazy = numba.njit(lambda x: x + 1)
    assert unchecked(lazy) is lazy


@compiled_only
@pytest.mark.parametrize(
    "module", [baselines, windows, templates, forecasts, sequences, patterns, records]
)
def test_each_stores_one_event_kernel_is_its_batch_kernel(module: object) -> None:
    """The one-event paths call the compiled code of the very kernel the batch paths call (the
    one-event store tests then compare their answers)."""
    (compiled,) = module._observe.overloads.values()  # type: ignore[attr-defined]
    assert module._observe_one is compiled.entry_point  # type: ignore[attr-defined]


@compiled_only
def test_the_autoencoders_one_event_kernel_is_its_batch_kernel() -> None:
    (compiled,) = autoencoder._COMPILED_RECONSTRUCTION.overloads.values()  # type: ignore[union-attr]
    assert autoencoder._RECONSTRUCTION_OF_ONE is compiled.entry_point
