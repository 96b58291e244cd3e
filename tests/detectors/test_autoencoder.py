"""The autoencoder: wins on unusual combinations of individually usual features."""

from __future__ import annotations

import numpy as np
import pytest

from app.detectors.autoencoder import COMPILED_AVAILABLE, AutoencoderDetector
from app.detectors.base import NotFittedError


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
