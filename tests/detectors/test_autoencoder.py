"""The autoencoder: wins on unusual combinations of individually usual features."""

from __future__ import annotations

import numpy as np
import pytest

from app.detectors.autoencoder import (
    COMPILED_AVAILABLE,
    MIN_COVERED_ROWS,
    AutoencoderDetector,
    _training_sample,
    covering_calibrator,
)
from app.detectors.base import NotFittedError
from app.detectors.calibration import TAIL_FRACTION, TailCalibrator


def _correlated(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return np.column_stack((x, x + 0.1 * rng.standard_normal(n), -x + 0.1 * rng.standard_normal(n)))


@pytest.fixture(scope="module")
def fitted() -> AutoencoderDetector:
    return AutoencoderDetector(max_iter=200, max_rows=2000).fit(_correlated(2000))


def test_off_manifold_points_reconstruct_badly(fitted: AutoencoderDetector) -> None:
    assert fitted.calibrator_ is not None
    on = np.array([[1.5, 1.5, -1.5], [-1.0, -1.0, 1.0]])
    off = np.array([[1.5, -1.5, -1.5], [-1.0, 1.0, 1.0]])  # each value usual, the mix is not
    on_rarity = fitted.calibrator_.rarity(fitted.reconstruction_error(on))
    off_rarity = fitted.calibrator_.rarity(fitted.reconstruction_error(off))
    assert np.all(on_rarity > 0.01)
    assert np.all(off_rarity < 1e-3)


def test_round_trip_through_arrays_is_exact(fitted: AutoencoderDetector) -> None:
    restored = AutoencoderDetector.from_arrays(fitted.get_params(), fitted.to_arrays())
    probe = _correlated(50, seed=9)
    np.testing.assert_array_equal(
        restored.reconstruction_error(probe), fitted.reconstruction_error(probe)
    )


def test_unfitted_and_damaged_models_are_refused(fitted: AutoencoderDetector) -> None:
    with pytest.raises(NotFittedError):
        AutoencoderDetector().reconstruction_error(np.zeros((1, 3)))
    arrays = fitted.to_arrays()
    arrays["w1"] = arrays["w1"][:, :1]
    with pytest.raises(ValueError, match="chain"):
        AutoencoderDetector.from_arrays(fitted.get_params(), arrays)
    arrays = fitted.to_arrays()
    arrays["w0"] = np.full_like(arrays["w0"], np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        AutoencoderDetector.from_arrays(fitted.get_params(), arrays)


def test_compiled_and_numpy_evaluators_agree(fitted: AutoencoderDetector) -> None:
    assert COMPILED_AVAILABLE  # numba is a dependency: the compiled loop is the one served
    probe = np.vstack([_correlated(300, seed=4), 50.0 * _correlated(30, seed=5), np.zeros((1, 3))])
    compiled = fitted.reconstruction_error(probe, "compiled")
    # Same summation order; only numpy's tanh and the C library's may differ in the last bit.
    np.testing.assert_allclose(compiled, fitted.reconstruction_error(probe, "numpy"), rtol=1e-12)
    one_at_a_time = [fitted.reconstruction_error(probe[i : i + 1])[0] for i in range(len(probe))]
    assert compiled.tolist() == one_at_a_time


def test_calibrated_tail_is_never_rarer_than_the_training_errors_share() -> None:
    rng = np.random.default_rng(3)
    # A near-typical bulk and a far cluster of 0.5% of rows, as normal error lines are.
    errors = np.concatenate([rng.exponential(0.01, 9950), 5.0 + rng.exponential(0.1, 50)])
    calibrator = covering_calibrator(errors)
    ordered = np.sort(errors)[::-1]
    share = np.arange(1, ordered.size + 1) / ordered.size
    # In the modelled tail (the body is the quantile grid's interpolation).
    covered = (
        (np.arange(1, ordered.size + 1) >= MIN_COVERED_ROWS)
        & (ordered > calibrator.tail_start)
        & (share < TAIL_FRACTION)
    )
    assert covered.sum() > 400
    assert np.all(calibrator.rarity(ordered[covered]) >= share[covered] * (1 - 1e-9))
    # The plain exponential tail called the cluster a few in a million.
    assert TailCalibrator.fit(errors).rarity(np.array([5.0]))[0] < 1e-5
    # Beyond everything seen, still rarer and rarer.
    far = calibrator.rarity(np.array([10.0, 50.0, 100.0]))
    assert far[0] > far[1] > far[2]


def test_rare_kinds_of_event_are_kept_in_the_training_sample() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    x = np.column_stack(
        [rng.standard_normal(n), np.where(rng.random(n) < 0.004, 2.0, 0.0), np.zeros(n)]
    )
    rows = _training_sample(x, 5000, 42)
    assert rows.size == np.unique(rows).size
    assert np.sum(x[rows, 1] == 2.0) == min(int(np.sum(x[:, 1] == 2.0)), 250)
    fitted = AutoencoderDetector(max_rows=5000).fit(x)
    assert fitted.calibrator_ is not None
    error_line = np.array([[0.0, 2.0, 0.0]])
    # An error line is 0.4% of this normal traffic: not an alarm at the 0.1% target.
    assert fitted.calibrator_.rarity(fitted.reconstruction_error(error_line))[0] > 1e-3
