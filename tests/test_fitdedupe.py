"""Fitting on the distinct feature rows only (branch `fitdedupe`) against the plain path it
replaces: the rows found by hashing, the training scores expanded from them, the autoencoder's
sample groups, and a whole ``fit_model``, bit for bit (NaN for NaN, -0.0 apart from 0.0)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import features as feats
from app.detectors import autoencoder as ae
from app.detectors import isolation_forest as iso
from app.detectors.forest import FlatForest
from app.detectors.isolation_forest import IsolationForestDetector
from app.model import bootstrap_training_data, fit_model
from app.training_data import TrainingData

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Values that trip float comparison: signed zeros, NaNs of two payloads, infinities.
_QUIET_NAN = float(np.uint64(0x7FF8000000000000).view(np.float64))
_OTHER_NAN = float(np.uint64(0x7FF8000000000001).view(np.float64))
_AWKWARD = [0.0, -0.0, _QUIET_NAN, _OTHER_NAN, np.inf, -np.inf, 1.0, 2.0, 1e-300, 0.5]


def _bits(a: FloatArray) -> list[int]:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64).ravel().tolist()


def _same(a: FloatArray, b: FloatArray) -> bool:
    """Equal bit for bit (a NaN equals the same NaN; 0.0 and -0.0 differ)."""
    return np.shape(a) == np.shape(b) and _bits(a) == _bits(b)


def _reference_distinct(x: FloatArray) -> tuple[list[bytes], list[int]]:
    """Distinct rows by their bytes, numbered by first appearance, and each row's number."""
    numbers: dict[bytes, int] = {}
    codes = [numbers.setdefault(row.tobytes(), len(numbers)) for row in x]
    return list(numbers), codes


@st.composite
def _repeating_matrices(draw: st.DrawFn) -> FloatArray:
    """Matrices whose rows repeat (drawn from a small pool) or not, with awkward values."""
    width = draw(st.integers(1, 4))
    pool_size = draw(st.integers(1, 40))
    values = st.one_of(st.sampled_from(_AWKWARD), st.floats(allow_nan=True, width=64))
    pool = [[draw(values) for _ in range(width)] for _ in range(pool_size)]
    picks = draw(st.lists(st.integers(0, pool_size - 1), min_size=0, max_size=300))
    return np.array([pool[i] for i in picks], dtype=np.float64).reshape(len(picks), width)


@settings(max_examples=300, deadline=None)
@given(_repeating_matrices())
def test_distinct_rows_number_rows_by_their_bits(x: FloatArray) -> None:
    rows, codes = _reference_distinct(x)
    for kernel in (feats._COMPILED_DISTINCT_ROWS, feats._distinct_rows_loop):
        found = feats.distinct_rows(x, max_share=1.0, kernel=kernel)
        assert found is not None
        distinct, inverse = found
        assert [row.tobytes() for row in distinct] == rows
        assert inverse.tolist() == codes
        assert _same(np.take(distinct, inverse, axis=0), x)
        # Giving up past the share: None exactly when more rows are distinct than allowed.
        for share in (0.25, 0.5):
            capped = feats.distinct_rows(x, max_share=share, kernel=kernel)
            assert (capped is None) == (len(rows) > int(share * x.shape[0]))


def test_distinct_rows_grows_its_table_past_the_first_capacity() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3000, (20_000, 2)).astype(np.float64)
    found = feats.distinct_rows(x, max_share=1.0)
    assert found is not None
    rows, codes = _reference_distinct(x)
    assert len(rows) > feats._FIRST_CAPACITY
    assert [row.tobytes() for row in found[0]] == rows
    assert found[1].tolist() == codes


def test_all_distinct_rows_are_not_deduplicated() -> None:
    x = np.random.default_rng(4).normal(size=(5000, 3))
    assert feats.distinct_rows(x) is None
    calls: list[int] = []

    def doubled(rows: FloatArray) -> FloatArray:
        calls.append(rows.shape[0])
        return rows[:, 0] * 2.0

    assert _same(feats.per_distinct_row(doubled, x), x[:, 0] * 2.0)
    assert calls == [5000]


def _plain_groups(pairs: FloatArray) -> IntArray:
    """``_training_sample``'s groups before hashing (main at 1e1e82f)."""
    _, group = np.unique(pairs, axis=0, return_inverse=True)
    return np.asarray(group.reshape(-1), dtype=np.int64)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_AWKWARD[:2] + _AWKWARD[4:]), st.sampled_from([0.0, -0.0, 1.0])),
        min_size=1,
        max_size=200,
    ),
    st.booleans(),
)
def test_discrete_groups_are_np_uniques(pairs: list[tuple[float, float]], nan: bool) -> None:
    x = np.array(pairs, dtype=np.float64)
    if nan:
        x[len(pairs) // 2, 0] = np.nan
    assert ae.discrete_groups(x).tolist() == _plain_groups(x).tolist()


def _plain_training_sample(x: FloatArray, max_rows: int, random_state: int) -> IntArray:
    """``_training_sample`` before hashing (main at 1e1e82f)."""
    rng = np.random.default_rng(random_state)
    n = x.shape[0]
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    group = _plain_groups(x[:, [1, 2]])
    sizes = np.bincount(group)
    floor = int(max_rows * ae.MIN_GROUP_SHARE)
    wanted = np.maximum(np.round(sizes * max_rows / n), np.minimum(sizes, floor)).astype(np.int64)
    chosen = [
        rng.choice(np.flatnonzero(group == g), min(int(k), int(sizes[g])), replace=False)
        for g, k in enumerate(wanted.tolist())
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(200, 3000),
    st.integers(0, 2**32 - 1),
    st.sampled_from([[0.0, 1.0, 2.0], [0.0, -0.0, 3.0], [0.0, 1.0, np.nan], [0.0, 4.0]]),
)
def test_training_sample_chooses_the_same_rows(n: int, seed: int, levels: list[float]) -> None:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        (rng.normal(size=n), rng.choice(levels, n, p=None), rng.random(n) < 0.05)
    ).astype(np.float64)
    for max_rows in (100, n):
        assert ae._training_sample(x, max_rows, seed).tolist() == (
            _plain_training_sample(x, max_rows, seed).tolist()
        )


def _training_rows(seed: int, n: int, resolution: int, missing: float) -> FloatArray:
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3.0, 1.0, n).round(resolution)
    latency[rng.random(n) < missing] = np.nan
    levels = rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.9, 0.05, 0.04, 0.01])
    return np.column_stack((latency, levels))


_FITTED: dict[str, Any] = {}


def _fitted() -> tuple[IsolationForestDetector, ae.AutoencoderDetector]:
    """One forest and one autoencoder for the scoring properties, fitted once."""
    if not _FITTED:
        data = TrainingData.from_raw_rows(_training_rows(7, 6000, 1, 0.05).tolist())
        z = np.log1p(data.latency_ms) - 3.0
        features = feats.feature_matrix(z, data.level_scores)
        _FITTED["forest"] = IsolationForestDetector().fit(features)
        _FITTED["autoencoder"] = ae.AutoencoderDetector(max_iter=20).fit(features)
    return _FITTED["forest"], _FITTED["autoencoder"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, -0.0, np.nan, 0.5, -1.25, 3.0, 60.0, np.inf]),
            st.sampled_from([0.0, 1.0, 2.0, -0.0, np.nan]),
            st.sampled_from([0.0, 1.0, -0.0]),
        ),
        min_size=1,
        max_size=200,
    )
)
def test_scores_of_distinct_rows_expand_to_every_rows(rows: list[tuple[float, ...]]) -> None:
    forest, autoencoder = _fitted()
    x = np.array(rows, dtype=np.float64)
    assert forest.forest_ is not None
    for function in (forest.forest_.score_samples, autoencoder.reconstruction_error):
        # A NaN-containing row is scored as it is: its value is the function's, whatever it is.
        assert _same(feats.per_distinct_row(function, x), function(x))


def _forest_arrays(model: Any) -> dict[str, FloatArray]:
    return FlatForest.from_sklearn(model).to_arrays("")


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 3000),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["normal", "few values", "constant column"]),
    st.booleans(),
)
def test_trees_fitted_on_their_rows_are_scikit_learns(
    n: int, seed: int, kind: str, bootstrap: bool
) -> None:
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    if kind == "few values":
        x = rng.integers(0, 3, (n, 3)).astype(np.float64)
    elif kind == "constant column":
        x[:, 2] = 1.0
    assert iso._fits_on_subsets(x)
    # bootstrap draws a row twice (a weight of 2): the subset tree falls back to the weights.
    params: dict[str, Any] = {
        "n_estimators": 20,
        "max_samples": min(256, n),
        "contamination": "auto",
        "random_state": seed % 1000,
        "bootstrap": bootstrap,
    }
    plain = _forest_arrays(IsolationForest(**params).fit(x))
    subset = _forest_arrays(iso._subset_forest()(**params).fit(x))
    assert sorted(plain) == sorted(subset)
    for key, value in plain.items():
        assert _same(subset[key].astype(np.float64), value.astype(np.float64)), key


def test_trees_see_every_row_where_the_check_of_all_rows_matters() -> None:
    x = np.zeros((10, 3))
    assert iso._fits_on_subsets(x)
    for value in (np.nan, np.inf, -1e31):
        x[4, 1] = value
        assert not iso._fits_on_subsets(x)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=0, max_size=60))
def test_weighted_rows_kernel_is_its_source(weights: list[int]) -> None:
    array = np.array(weights, dtype=np.int64)
    expected = -1 if (array > 1).any() else int(np.count_nonzero(array))
    for kernel in (iso._COMPILED_WEIGHTED_ROWS, iso._weighted_rows_loop):
        assert kernel is not None
        rows = np.full(len(weights), -7, dtype=np.int64)
        count = kernel(array, rows)
        assert count == expected
        if count >= 0:
            assert rows[:count].tolist() == np.flatnonzero(array).tolist()


def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row scored, groups by np.unique: the path before `fitdedupe`."""
    monkeypatch.setattr(feats, "distinct_rows", lambda x, *args, **kwargs: None)
    monkeypatch.setattr(ae, "distinct_rows", lambda x, *args, **kwargs: None)
    monkeypatch.setattr(iso, "_fits_on_subsets", lambda features: False)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            lambda: TrainingData.from_raw_rows(_training_rows(1, 12_000, 1, 0.0).tolist()), id="ms"
        ),
        pytest.param(
            lambda: TrainingData.from_raw_rows(_training_rows(2, 9_000, 0, 0.3).tolist()),
            id="nan-latency",
        ),
        pytest.param(
            lambda: TrainingData.from_raw_rows(_training_rows(3, 7_000, 9, 0.02).tolist()),
            id="distinct",
        ),
        pytest.param(bootstrap_training_data, id="bootstrap"),
    ],
)
def test_fit_model_is_bit_identical_to_the_plain_path(
    data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = data()
    deduplicated = fit_model(training, {}, 30).arrays
    _plain(monkeypatch)
    plain = fit_model(training, {}, 30).arrays
    assert sorted(deduplicated) == sorted(plain)
    for key, value in plain.items():
        other = deduplicated[key]
        assert value.dtype == other.dtype, key
        assert value.shape == other.shape, key
        if value.dtype.kind == "f":
            assert _same(other, value), key
        else:
            assert np.array_equal(other, value), key
