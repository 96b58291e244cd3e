"""FlatForest reproduces scikit-learn's IsolationForest: score_samples to 1e-12 and identical
outlier decisions, including inputs exactly on split thresholds and one float32 step either side
(scikit-learn compares float32 inputs with float64 thresholds; so must we)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from app.detectors.forest import FlatForest

FloatArray = npt.NDArray[np.float64]


def fit(x: FloatArray, **params: Any) -> IsolationForest:
    with warnings.catch_warnings():
        # max_samples larger than the data is clipped by scikit-learn with a UserWarning.
        warnings.simplefilter("ignore", UserWarning)
        return IsolationForest(**params).fit(x)


def threshold_probes(model: IsolationForest, n_features: int) -> FloatArray:
    """Rows that sit on every split threshold, and one float32 step below and above it."""
    rows = []
    for estimator, features in zip(model.estimators_, model.estimators_features_, strict=True):
        tree = estimator.tree_
        for node in np.flatnonzero(tree.children_left != -1):
            feature = int(np.asarray(features)[tree.feature[node]])
            threshold = tree.threshold[node]
            as32 = np.float32(threshold)
            for value in (
                threshold,
                float(as32),
                float(np.nextafter(as32, np.float32(-np.inf))),
                float(np.nextafter(as32, np.float32(np.inf))),
            ):
                row = np.zeros(n_features)
                row[feature] = value
                rows.append(row)
    return np.asarray(rows).reshape(-1, n_features)


def assert_same_as_sklearn(model: IsolationForest, queries: FloatArray) -> None:
    flat = FlatForest.from_sklearn(model)
    expected = model.score_samples(queries)
    got = flat.score_samples(queries)
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-12)
    assert np.array_equal(flat.predict_outlier(queries), model.predict(queries) == -1)
    restored = FlatForest.from_arrays(flat.to_arrays("f_"), "f_")
    assert np.array_equal(restored.score_samples(queries), got)


@st.composite
def forests_and_data(draw: st.DrawFn) -> tuple[FloatArray, FloatArray, dict[str, Any]]:
    n_features = draw(st.integers(1, 4))
    n_samples = draw(st.integers(1, 120))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "integers", "heavy", "mixed-scale"]))
    if kind == "normal":
        x = rng.standard_normal((n_samples, n_features))
    elif kind == "integers":  # many ties: thresholds fall between repeated values
        x = rng.integers(0, 4, (n_samples, n_features)).astype(np.float64)
    elif kind == "heavy":
        x = rng.standard_t(2, (n_samples, n_features))
    else:
        x = rng.standard_normal((n_samples, n_features)) * np.geomspace(1e-3, 1e4, n_features)
    params: dict[str, Any] = {
        "n_estimators": draw(st.sampled_from([1, 2, 7, 50])),
        "max_samples": draw(st.one_of(st.just("auto"), st.integers(1, 300), st.floats(0.1, 1.0))),
        "max_features": draw(st.one_of(st.integers(1, n_features), st.floats(0.2, 1.0))),
        "contamination": draw(st.one_of(st.just("auto"), st.floats(0.01, 0.5))),
        "bootstrap": draw(st.booleans()),
        "random_state": seed,
    }
    queries = np.vstack(
        [
            x,
            rng.standard_normal((20, n_features)) * 3.0,
            np.full((1, n_features), 1e6),
            np.full((1, n_features), -1e6),
        ]
    )
    return x, queries, params


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forests_and_data())
def test_flat_forest_matches_sklearn(case: tuple[FloatArray, FloatArray, dict[str, Any]]) -> None:
    x, queries, params = case
    try:
        model = fit(x, **params)
    except ValueError:
        # scikit-learn itself refuses some draws (e.g. a fractional max_samples of one sample).
        reject()
    probes = threshold_probes(model, x.shape[1])
    assert_same_as_sklearn(model, np.vstack([queries, probes]))


@pytest.mark.parametrize("n_estimators", [1, 300])
def test_tiny_and_large_forests(n_estimators: int) -> None:
    rng = np.random.default_rng(n_estimators)
    x = rng.standard_normal((500, 3))
    model = fit(x, n_estimators=n_estimators, random_state=0, contamination=0.02)
    assert_same_as_sklearn(model, np.vstack([x, threshold_probes(model, 3)[:5000]]))


def test_single_sample_training() -> None:
    x = np.array([[1.5, -2.0]])
    model = fit(x, n_estimators=5, random_state=0)
    queries = np.array([[1.5, -2.0], [0.0, 0.0], [1e9, -1e9]])
    assert_same_as_sklearn(model, queries)


def test_constant_training_data() -> None:
    x = np.ones((50, 2))
    model = fit(x, n_estimators=10, random_state=0)
    assert_same_as_sklearn(model, np.array([[1.0, 1.0], [2.0, 0.0]]))


def test_max_features_below_one_uses_each_trees_feature_subset() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 4)) * np.array([1.0, 10.0, 100.0, 1000.0])
    model = fit(x, n_estimators=40, max_features=0.5, random_state=3)
    assert model._max_features == 2
    assert_same_as_sklearn(model, np.vstack([x, threshold_probes(model, 4)]))


def test_the_service_feature_layout_matches_exactly() -> None:
    # The shape the app fits: latency z clipped to +-50, a level score 0..3, a missing flag.
    rng = np.random.default_rng(11)
    n = 3000
    x = np.column_stack(
        [
            np.clip(rng.standard_t(5, n), -50, 50),
            rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.9, 0.06, 0.03, 0.01]),
            (rng.random(n) < 0.05).astype(float),
        ]
    )
    model = fit(x, n_estimators=100, max_samples=256, contamination=0.02, random_state=42)
    flat = FlatForest.from_sklearn(model)
    assert np.array_equal(flat.score_samples(x), model.score_samples(x))
    assert_same_as_sklearn(model, np.vstack([x, threshold_probes(model, 3)]))


def test_wrong_shape_is_refused() -> None:
    model = fit(np.random.default_rng(0).standard_normal((50, 3)), n_estimators=3)
    flat = FlatForest.from_sklearn(model)
    with pytest.raises(ValueError, match="expected shape"):
        flat.score_samples(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="expected shape"):
        flat.score_samples(np.zeros(3))
    assert flat.score_samples(np.zeros((0, 3))).shape == (0,)


def test_tampered_arrays_are_refused() -> None:
    model = fit(np.random.default_rng(0).standard_normal((50, 2)), n_estimators=3)
    arrays = FlatForest.from_sklearn(model).to_arrays("f_")
    bad_child = {**arrays, "f_left": arrays["f_left"].copy()}
    bad_child["f_left"][0] = 10**9
    with pytest.raises(ValueError, match="out of range"):
        FlatForest.from_arrays(bad_child, "f_")
    bad_feature = {**arrays, "f_feature": arrays["f_feature"].copy()}
    bad_feature["f_feature"][0] = 7
    with pytest.raises(ValueError, match="feature index"):
        FlatForest.from_arrays(bad_feature, "f_")
    short = {**arrays, "f_threshold": arrays["f_threshold"][:-1]}
    with pytest.raises(ValueError, match="disagree"):
        FlatForest.from_arrays(short, "f_")
