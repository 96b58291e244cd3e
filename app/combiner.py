"""One score and one decision from the methods' calibrated scores.

Every method's score is already on the shared scale (0.5 = as rare as the target false-alarm rate
among normal events, see ``detectors.calibration``), so combining needs no per-method rescaling:

    combined = max over methods of (weight * score)      is_anomaly = combined >= threshold

The maximum lets one method that is sure flag an event on its own (an error burst need not also be
slow); a weight below 1 makes a method need stronger evidence, and 0 leaves it out. Because each
method alone flags about ``q`` of normal events, the combination flags at most about
``methods * q``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def combine(
    scores: dict[str, FloatArray], weights: dict[str, float], threshold: float, n_events: int
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    if not scores:
        return combine_matrix(np.zeros((0, n_events)), np.zeros((0, 1)), threshold)
    return combine_matrix(
        np.vstack(list(scores.values())),
        np.array([[weights.get(name, 1.0)] for name in scores]),
        threshold,
    )


def combine_matrix(
    scores: FloatArray, weights: FloatArray, threshold: float
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """``combine`` on scores stacked as rows (one per method) and weights as a column vector."""
    # initial=0.0: no method (or only zero weights) combines to 0, not an error.
    combined: FloatArray = (weights * scores).max(axis=0, initial=0.0)
    return combined, combined >= threshold
