"""The flat forest's two evaluators (compiled and numpy) against scikit-learn itself.

Both must reproduce ``IsolationForest.score_samples`` (to 1e-12; in practice bit for bit) and
``predict`` on every input, including inputs that sit exactly on split thresholds, where a float32
rounding slip or a ``<`` for ``<=`` would send a sample down the other branch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from app.detectors.forest import COMPILED_AVAILABLE, NUMPY_CHUNK_SAMPLES, Evaluator, FlatForest
from app.detectors.isolation_forest import IsolationForestDetector

FloatArray = npt.NDArray[np.float64]
EVALUATORS: tuple[Evaluator, ...] = ("compiled", "numpy")


def test_numba_is_installed_so_the_compiled_path_is_the_one_served() -> None:
    # numba is a locked dependency: if it silently stopped importing, the service would fall back
    # to the ~6x slower numpy path without anyone noticing.
    assert COMPILED_AVAILABLE


def _probe_points(forest: FlatForest, data: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Training rows, fresh random rows, and rows whose features sit on or next to thresholds."""
    inner = np.isfinite(forest.threshold)
    thresholds = forest.threshold[inner]
    features = forest.feature[inner]
    picks = rng.integers(0, thresholds.size, size=min(200, thresholds.size))
    on_threshold = data[rng.integers(0, data.shape[0], size=picks.size)].copy()
    on_threshold[np.arange(picks.size), features[picks]] = thresholds[picks]
    below = on_threshold.copy()
    below[np.arange(picks.size), features[picks]] = np.nextafter(thresholds[picks], -np.inf)
    above = on_threshold.copy()
    above[np.arange(picks.size), features[picks]] = np.nextafter(thresholds[picks], np.inf)
    # float32 neighbours of a threshold: the values scikit-learn actually compares.
    as_float32 = on_threshold.copy()
    rounded = thresholds[picks].astype(np.float32)
    as_float32[np.arange(picks.size), features[picks]] = rounded
    fresh = rng.normal(0.0, 5.0, size=(100, data.shape[1]))
    extreme = np.array([[3e38] * data.shape[1], [-3e38] * data.shape[1], [0.0] * data.shape[1]])
    return np.vstack([data, fresh, on_threshold, below, above, as_float32, extreme])


def _assert_matches_sklearn(model: Any, probes: FloatArray) -> None:
    forest = FlatForest.from_sklearn(model)
    expected = model.score_samples(probes)
    expected_outliers = model.predict(probes) == -1
    for evaluator in EVALUATORS:
        got = forest.score_samples(probes, evaluator=evaluator)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert np.array_equal(got, expected), f"{evaluator} differs from sklearn in the last bit"
        assert np.array_equal(got - forest.offset < 0, expected_outliers)
    assert np.array_equal(forest.predict_outlier(probes), expected_outliers)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_rows=st.integers(2, 400),
    n_features=st.integers(1, 5),
    n_estimators=st.integers(1, 30),
    max_samples=st.integers(2, 300),
    max_features=st.sampled_from([1.0, 0.5]),
    discrete=st.booleans(),
)
def test_flat_forest_equals_sklearn_on_random_forests_and_data(
    seed: int,
    n_rows: int,
    n_features: int,
    n_estimators: int,
    max_samples: int,
    max_features: float,
    discrete: bool,
) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n_rows, n_features)) * rng.uniform(0.01, 100.0, size=n_features)
    if discrete:
        # Many ties, like the level and "latency missing" columns.
        data = np.round(data / data.std(axis=0).clip(1e-9)) - 1.0
    model = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, n_rows),
        max_features=max_features,
        random_state=seed,
    ).fit(data)
    _assert_matches_sklearn(model, _probe_points(FlatForest.from_sklearn(model), data, rng))


def test_service_shaped_features_including_unseen_services() -> None:
    """The detector's own feature layout: latency z, level score, latency-missing flag; an unseen
    service has latency z = 0 and the missing flag set, which training may never have shown."""
    rng = np.random.default_rng(7)
    n = 3000
    latency_z = rng.standard_t(5, n)
    level = rng.choice([0.0, 1.0, 2.0], n, p=[0.96, 0.03, 0.01])
    missing = (rng.random(n) < 0.05).astype(np.float64)
    latency_z[missing == 1] = 0.0
    data = np.column_stack([latency_z, level, missing])
    model = IsolationForest(n_estimators=100, max_samples=256, random_state=3).fit(data)
    unseen = np.array([[0.0, 0.0, 1.0], [0.0, 3.0, 1.0], [50.0, 3.0, 0.0], [-50.0, 0.0, 0.0]])
    _assert_matches_sklearn(model, np.vstack([data, unseen]))


def test_numpy_evaluator_chunks_large_inputs_without_changing_results() -> None:
    rng = np.random.default_rng(11)
    data = rng.normal(size=(500, 2))
    forest = FlatForest.from_sklearn(IsolationForest(n_estimators=5, random_state=0).fit(data))
    many = rng.normal(size=(NUMPY_CHUNK_SAMPLES * 2 + 17, 2))
    assert np.array_equal(
        forest.score_samples(many, evaluator="numpy"),
        forest.score_samples(many, evaluator="compiled"),
    )


def test_saved_arrays_score_identically_and_accept_non_contiguous_input() -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(size=(300, 3))
    forest = FlatForest.from_sklearn(IsolationForest(n_estimators=10, random_state=1).fit(data))
    loaded = FlatForest.from_arrays(forest.to_arrays("f_"), "f_")
    strided = np.asfortranarray(data)[::2]
    for evaluator in EVALUATORS:
        assert np.array_equal(
            loaded.score_samples(strided, evaluator=evaluator),
            forest.score_samples(data[::2], evaluator=evaluator),
        )


def test_a_cycle_in_a_corrupt_file_cannot_hang_the_compiled_walk() -> None:
    rng = np.random.default_rng(2)
    forest = FlatForest.from_sklearn(
        IsolationForest(n_estimators=2, random_state=0).fit(rng.normal(size=(64, 1)))
    )
    arrays = forest.to_arrays("f_")
    # Point the root's children back at the root: a loop no real tree has.
    arrays["f_left"][0] = 0
    arrays["f_right"][0] = 0
    arrays["f_threshold"][0] = 0.0
    corrupt = FlatForest.from_arrays(arrays, "f_")
    for evaluator in EVALUATORS:
        assert np.isfinite(corrupt.score_samples([[1.0], [-1.0]], evaluator=evaluator)).all()


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_empty_and_misshaped_input(evaluator: Evaluator) -> None:
    forest = FlatForest.from_sklearn(
        IsolationForest(n_estimators=2, random_state=0).fit(np.eye(4)[:, :2])
    )
    assert forest.score_samples(np.empty((0, 2)), evaluator=evaluator).shape == (0,)
    with pytest.raises(ValueError, match="expected shape"):
        forest.score_samples(np.zeros((3, 3)), evaluator=evaluator)


def test_detector_fit_keeps_sklearns_offset_and_trees_with_one_scoring_pass() -> None:
    """The detector fits with contamination="auto" and sets the offset itself from its own pass
    over the training rows; it must equal what scikit-learn computes for the contamination."""
    rng = np.random.default_rng(13)
    data = np.column_stack(
        [rng.standard_t(4, 5000), rng.choice([0.0, 1.0, 2.0], 5000), rng.random(5000) < 0.05]
    ).astype(np.float64)
    for contamination in (0.02, 0.1):
        detector = IsolationForestDetector(
            contamination=contamination, n_estimators=40, random_state=9
        ).fit(data)
        model = IsolationForest(
            n_estimators=40, max_samples=256, contamination=contamination, random_state=9
        ).fit(data)
        assert detector.forest_ is not None
        assert detector.forest_.offset == model.offset_
        probes = np.vstack([data, rng.normal(0.0, 10.0, size=(200, 3))])
        assert np.array_equal(detector.forest_.score_samples(probes), model.score_samples(probes))
        assert np.array_equal(detector.forest_.predict_outlier(probes), model.predict(probes) == -1)
