"""Isolation Forest over service-relative features: fitted by scikit-learn, scored by FlatForest."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from app.baselines import MIN_MEDIAN_FOR_RATIO_MS
from app.detectors.base import BatchDetector, MethodOutput, NotFittedError, ScoringContext
from app.detectors.calibration import TailCalibrator
from app.detectors.forest import FlatForest

FloatArray = npt.NDArray[np.float64]


class IsolationForestDetector(BatchDetector):
    name: ClassVar[str] = "isolation_forest"
    method: ClassVar[str] = "Isolation Forest"
    requires: ClassVar[tuple[str, ...]] = ("latency_ms", "level", "service baseline")

    forest_: FlatForest | None
    calibrator_: TailCalibrator | None

    def __init__(
        self,
        contamination: float = 0.02,
        n_estimators: int = 100,
        max_samples: int = 256,
        random_state: int = 42,
    ) -> None:
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.forest_ = None
        self.calibrator_ = None

    def get_params(self) -> dict[str, Any]:
        return {
            "contamination": self.contamination,
            "n_estimators": self.n_estimators,
            "max_samples": self.max_samples,
            "random_state": self.random_state,
        }

    @property
    def is_fitted(self) -> bool:
        return self.forest_ is not None and self.calibrator_ is not None

    def fit(self, features: FloatArray) -> Self:
        from sklearn.ensemble import IsolationForest

        # contamination="auto" only skips scikit-learn's own pass over every training row to set
        # offset_ (the trees do not depend on it); the offset is that same percentile of the same,
        # bit-identical scores, computed from the one pass the calibrator needs anyway.
        model = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, features.shape[0]),
            contamination="auto",
            random_state=self.random_state,
        ).fit(features)
        forest = FlatForest.from_sklearn(model)
        training_scores = forest.score_samples(features)
        offset = float(np.percentile(training_scores, 100.0 * self.contamination))
        self.forest_ = dataclasses.replace(forest, offset=offset)
        # The paper's anomaly score (higher = odder) is the negated score_samples.
        self.calibrator_ = TailCalibrator.fit(-training_scores)
        return self

    def _fitted(self) -> tuple[FlatForest, TailCalibrator]:
        if self.forest_ is None or self.calibrator_ is None:
            raise NotFittedError("isolation_forest is not fitted")
        return self.forest_, self.calibrator_

    def paper_scores(self, features: FloatArray) -> FloatArray:
        """The original paper's score in (0, 1]; above ~0.5 is the paper's "anomaly"."""
        forest, _ = self._fitted()
        return forest.paper_scores(features)

    def rarity(self, context: ScoringContext) -> MethodOutput:
        forest, calibrator = self._fitted()
        raw = forest.paper_scores(context.features)
        latency_z = context.baseline.latency_z
        median = context.baseline.median_latency_ms
        if len(raw) == 1:
            # The batch of one of /score: the same comparisons and IEEE division on Python
            # floats, both columns made by one numpy call rather than five.
            (latency,), (z,), (usable,), (score,) = (
                context.batch.latency_ms.tolist(),
                latency_z.tolist(),
                median.tolist(),
                raw.tolist(),
            )
            ratio, beyond = np.array(
                [
                    [latency / usable if usable > MIN_MEDIAN_FOR_RATIO_MS and z == z else np.nan],
                    [1.0 if score > -forest.offset else 0.0],
                ]
            )
        else:
            # A ratio only where the latency was judged against a baseline (z known) and the
            # median is a usable scale; NaN elsewhere.
            ratio = np.divide(
                context.batch.latency_ms,
                median,
                out=np.full(len(context.batch), np.nan),
                where=(median > MIN_MEDIAN_FOR_RATIO_MS) & (latency_z == latency_z),
            )
            # score_samples < offset, with score_samples = -raw (negation is exact).
            beyond = (raw > -forest.offset).astype(np.float64)
        return MethodOutput(
            rarity=calibrator.rarity(raw),
            metrics={
                "paper_score": raw,
                "beyond_contamination_threshold": beyond,
                "latency_ratio": ratio,
                "latency_zscore_vs_baseline": latency_z,
                "level_score": context.batch.level_scores,
            },
        )

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        forest, calibrator = self._fitted()
        return {**forest.to_arrays("forest_"), **calibrator.to_arrays("calibrator_")}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Self:
        detector = cls(**params)
        detector.forest_ = FlatForest.from_arrays(arrays, "forest_")
        detector.calibrator_ = TailCalibrator.from_arrays(arrays, "calibrator_")
        return detector
