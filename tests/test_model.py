"""app.model's training-side helpers (fit_model itself is covered through POST /train)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.features import FEATURE_NAMES, feature_matrix
from app.model import (
    MIN_MISSING_LATENCY_SHARE,
    _fewest_copies_reaching_share,
    with_missing_latency_examples,
)

LATENCY_Z = FEATURE_NAMES.index("latency_z")
LEVEL = FEATURE_NAMES.index("level_score")
MISSING = FEATURE_NAMES.index("latency_missing")


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(min_value=2, max_value=3000),
    missing_share=st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.2, 1.0]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_missing_latency_examples_top_up_to_the_minimum_share_and_touch_nothing_else(
    rows: int, missing_share: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    latency_z = rng.normal(0.0, 1.0, rows)
    latency_z[rng.random(rows) < missing_share] = np.nan
    features = feature_matrix(latency_z, rng.choice([0.0, 1.0, 2.0, 3.0], rows))
    original = features.copy()

    shown = with_missing_latency_examples(features, seed)

    np.testing.assert_array_equal(features, original)  # the input is not modified
    np.testing.assert_array_equal(shown[:rows], original)  # every real row, in order
    added = shown[rows:]
    had_missing = int(original[:, MISSING].sum())
    if had_missing >= MIN_MISSING_LATENCY_SHARE * rows or had_missing == rows:
        assert added.shape[0] == 0
        return
    assert added.shape[0] >= 1
    assert shown[:, MISSING].sum() >= MIN_MISSING_LATENCY_SHARE * shown.shape[0] - 1e-9
    # One copy fewer would be below the share: the top-up is the least that reaches it.
    assert (shown[:, MISSING].sum() - 1) < MIN_MISSING_LATENCY_SHARE * (shown.shape[0] - 1)
    assert np.all(added[:, MISSING] == 1.0)
    assert np.all(added[:, LATENCY_Z] == 0.0)
    # Levels are copied from rows that had a latency: no level the data never showed.
    with_latency_levels = set(original[original[:, MISSING] == 0.0, LEVEL].tolist())
    assert set(added[:, LEVEL].tolist()) <= with_latency_levels


def test_missing_latency_examples_are_reproducible() -> None:
    features = feature_matrix(np.linspace(-2.0, 2.0, 500), np.zeros(500))
    first = with_missing_latency_examples(features, 7)
    np.testing.assert_array_equal(first, with_missing_latency_examples(features, 7))
    assert first.shape[0] > 500


def test_the_top_up_is_the_least_that_reaches_the_share_where_the_closed_form_rounds_up() -> None:
    # ceil((0.01 * 297 - 0) / 0.99) is 4 in floating point; 3 copies already make 3 / 300 = 1%.
    assert _fewest_copies_reaching_share(297, 0, 0.01) == 3
    assert _fewest_copies_reaching_share(299, 2, 0.01) == 1
    for rows in range(2, 3001):
        for missing in range(int(0.01 * rows) + 1):
            copies = _fewest_copies_reaching_share(rows, missing, 0.01)
            assert missing + copies >= 0.01 * (rows + copies)
            assert copies == 0 or missing + copies - 1 < 0.01 * (rows + copies - 1)
