"""The feature matrix batch detectors see: every column relative to the event's own service."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES = ("latency_z", "level_score", "latency_missing")


def feature_matrix(latency_z: FloatArray, level_scores: FloatArray) -> FloatArray:
    """Columns of ``FEATURE_NAMES``.

    ``latency_z`` is the robust z-score of log latency against the service's baseline, NaN where
    the event has no latency or the service's baseline is still warming up; such events count as
    typical in latency (0) and say so in ``latency_missing``, so the forest never sees a NaN.
    """
    if latency_z.shape[0] == 1:
        # The batch of one of /score: one numpy call rather than five.
        (z,), (level,) = latency_z.tolist(), level_scores.tolist()
        return np.array([[0.0 if z != z else z, level, 1.0 if z != z else 0.0]])
    missing = np.isnan(latency_z)
    # Filled column by column: a third of np.column_stack's cost for the batch of one of /score.
    matrix = np.empty((latency_z.shape[0], len(FEATURE_NAMES)))
    matrix[:, 0] = np.where(missing, 0.0, latency_z)
    matrix[:, 1] = level_scores
    matrix[:, 2] = missing
    return matrix


def expected_latency_z(baseline_z: FloatArray, forecast_z: FloatArray) -> FloatArray:
    """Latency z-scores against what was expected *for this moment*: the seasonal forecast's
    residual where the forecast is ready, else the baseline's z-score.

    Training computes ``latency_z`` from each service's median and spread, which for a stationary
    service is the same quantity; live, the forecast also knows the time of day and follows a
    lasting shift, so a daily cycle or a deploy does not read as a stream of extreme latencies.
    """
    if baseline_z.shape[0] == 1:
        # The batch of one of /score, on Python floats: min and max give fmin and fmax's
        # results for the non-NaN values they see here.
        (baseline,), (forecast,) = baseline_z.tolist(), forecast_z.tolist()
        return np.array([baseline if forecast != forecast else max(min(forecast, 50.0), -50.0)])
    # fmin/fmax: np.clip's result at a fraction of its call cost (NaN positions are not used).
    result: FloatArray = np.where(
        np.isnan(forecast_z), baseline_z, np.fmax(np.fmin(forecast_z, 50.0), -50.0)
    )
    return result
