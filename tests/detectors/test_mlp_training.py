"""The compiled network trainer: scikit-learn's MLPRegressor weights, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.detectors.autoencoder import AutoencoderDetector
from app.detectors.mlp_training import (
    COMPILED_AVAILABLE,
    TrainedNetwork,
    _column_sums,
    train_network,
)

pytestmark = pytest.mark.skipif(not COMPILED_AVAILABLE, reason="the compiled trainer needs numba")


def _assert_identical(ours: TrainedNetwork, theirs: TrainedNetwork) -> None:
    assert ours.n_iter == theirs.n_iter
    assert len(ours.coefs) == len(theirs.coefs)
    for mine, reference in zip(
        ours.coefs + ours.intercepts, theirs.coefs + theirs.intercepts, strict=True
    ):
        assert mine.shape == reference.shape
        assert mine.dtype == np.float64
        np.testing.assert_array_equal(mine, reference, strict=True)


def _both(
    x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], max_iter: int, seed: int
) -> tuple[TrainedNetwork, TrainedNetwork]:
    return (
        train_network(x, y, hidden, max_iter, seed, trainer="compiled"),
        train_network(x, y, hidden, max_iter, seed, trainer="sklearn"),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    # Below 200 rows the minibatch is the whole sample; 201 and 401 leave a last batch of one.
    n=st.one_of(st.integers(2, 450), st.sampled_from([199, 200, 201, 401])),
    columns=st.integers(1, 5),
    hidden=st.sampled_from([(8, 2, 8), (8, 1, 8), (3,), (9, 4), (2, 2, 2, 2)]),
    max_iter=st.integers(1, 25),
    # A tiny spread gives losses that stop improving by tol within the first dozen epochs.
    scale=st.sampled_from([1e-2, 1.0, 30.0]),
    autoencoder=st.booleans(),
)
def test_weights_and_epochs_equal_sklearn(
    seed: int,
    n: int,
    columns: int,
    hidden: tuple[int, ...],
    max_iter: int,
    scale: float,
    autoencoder: bool,
) -> None:
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((n, columns))
    y = x if autoencoder else rng.standard_normal((n, int(rng.integers(1, 4))))
    ours, theirs = _both(x, y, hidden, max_iter, seed)
    _assert_identical(ours, theirs)


def test_stops_on_tol_as_sklearn_does() -> None:
    rng = np.random.default_rng(3)
    x = 0.01 * rng.standard_normal((300, 3))
    ours, theirs = _both(x, x, (8, 2, 8), 300, 3)
    assert theirs.n_iter < 300  # the tol / n_iter_no_change rule ended it
    _assert_identical(ours, theirs)


def test_stops_after_learning_as_sklearn_does() -> None:
    """A realistic run: ~230 epochs of real progress, then the tol rule."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 2))
    ours, theirs = _both(x, x, (8, 2, 8), 300, 3)
    assert 100 < theirs.n_iter < 300
    _assert_identical(ours, theirs)


def test_runs_to_max_iter_as_sklearn_does() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((201, 4))  # a last minibatch of one row
    ours, theirs = _both(x, x, (8, 2, 8), 20, 7)
    assert theirs.n_iter == 20
    _assert_identical(ours, theirs)


def test_autoencoder_fit_trains_sklearns_network() -> None:
    rng = np.random.default_rng(11)
    latent = rng.standard_normal(900)
    features = np.column_stack((latent, (rng.random(900) < 0.05).astype(float), np.zeros(900)))
    detector = AutoencoderDetector(max_iter=40, random_state=5).fit(features)
    assert detector.mean_ is not None
    assert detector.std_ is not None
    # Under max_rows every row trains the network.
    scaled = (features - detector.mean_) / detector.std_
    reference = train_network(scaled, scaled, (8, 2, 8), 40, 5, trainer="sklearn")
    assert detector.weights_ is not None
    assert detector.biases_ is not None
    for mine, theirs in zip(
        detector.weights_ + detector.biases_,
        reference.coefs + reference.intercepts,
        strict=True,
    ):
        np.testing.assert_array_equal(mine, theirs, strict=True)


@pytest.mark.parametrize(
    ("rows", "columns"),
    [
        (1, 3),
        (7, 8),
        (200, 2),
        *((rows, 1) for rows in (1, 3, 7, 8, 9, 16, 17, 127, 128, 129, 200, 248, 250, 1000)),
    ],
)
def test_column_sums_are_numpys(rows: int, columns: int) -> None:
    rng = np.random.default_rng(rows * 10 + columns)
    matrix = rng.standard_normal((rows, columns)) * 10.0 ** rng.uniform(-6, 6, (rows, columns))
    out = np.empty(columns)
    _column_sums(matrix, out)
    np.testing.assert_array_equal(out, np.sum(matrix, axis=0), strict=True)


def test_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="same rows"):
        train_network(np.zeros((5, 2)), np.zeros((4, 2)), (2,), 1, 0)


def test_compiled_trainer_needs_a_hidden_layer() -> None:
    with pytest.raises(ValueError, match="hidden layer"):
        train_network(np.zeros((5, 2)), np.zeros((5, 2)), (), 1, 0, trainer="compiled")
