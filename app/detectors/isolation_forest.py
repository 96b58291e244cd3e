"""Isolation Forest over service-relative features: fitted by scikit-learn, scored by FlatForest
(a batch), or for one event by the forest's step tables along latency_z (``_Steps``)."""

from __future__ import annotations

import dataclasses
import math
import struct
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from app.baselines import MIN_MEDIAN_FOR_RATIO_MS
from app.detectors.base import (
    BatchDetector,
    MethodOutput,
    NotFittedError,
    OneOutput,
    ScoringContext,
)
from app.detectors.calibration import TailCalibrator
from app.detectors.forest import FlatForest
from app.features import FEATURE_NAMES
from app.schemas.events import LEVEL_SCORES

FloatArray = npt.NDArray[np.float64]

# The step tables of ``_Steps`` are built only while (intervals x trees) per table stays below
# this: ~45 ms for all tables of the default forest (100 trees, ~3,600 intervals), at most a few
# times that for any forest that gets them; larger forests score one event by the kernel.
MAX_STEP_WORK = 1 << 20
_FLOAT32 = struct.Struct("f")


def _float32(value: float) -> float:
    """``value`` rounded to float32 as numpy's ``astype(np.float32)`` rounds it (to nearest,
    beyond float32's range to an infinity), back as a Python float."""
    try:
        rounded: float = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:  # struct refuses what rounds to an infinity
        return math.copysign(math.inf, value)
    return rounded


@dataclass(frozen=True, slots=True)
class _Steps:
    """The forest's paper score and rarity of one event, by table, for a batch of one.

    Besides latency_z the forest's features take a few values only: a level's score and
    latency_missing (0 or 1). For each such pair the forest is a step function of latency_z:
    every split on latency_z compares it (rounded to float32, as scikit-learn does) with a
    threshold, so between two consecutive thresholds every tree ends in the same leaf. Each step's
    values are those of the batch path (``FlatForest.paper_scores`` and the calibrator's
    ``rarity``) for one float32 latency_z inside it, hence bit for bit those of any latency_z it
    holds: one bisection replaces walking every tree.
    """

    forest: FlatForest
    calibrator: TailCalibrator
    bounds: list[float]  # the thresholds of the splits on latency_z, ascending
    # (level score, latency missing) -> paper score and rarity of each step: step k holds the
    # latency_z in (bounds[k - 1], bounds[k]], the last one those above every bound.
    tables: dict[tuple[float, float], tuple[array[float], array[float]]]

    @classmethod
    def build(cls, forest: FlatForest, calibrator: TailCalibrator) -> _Steps:
        bounds = forest.split_thresholds(0)
        tables: dict[tuple[float, float], tuple[array[float], array[float]]] = {}
        steps = bounds.size + 1
        if forest.n_features == len(FEATURE_NAMES) and steps * forest.roots.size <= MAX_STEP_WORK:
            # Each step's value at the largest float32 at or below its upper bound: an input
            # the kernel keeps as it is (it rounds to float32), inside the step whenever some
            # float32 is (and only such a step can be looked up: latency_z is rounded first).
            with np.errstate(over="ignore"):  # a bound beyond float32's range: its infinity
                upper = bounds.astype(np.float32)
            upper = np.where(upper > bounds, np.nextafter(upper, np.float32(-np.inf)), upper)
            latency_z = np.append(upper.astype(np.float64), np.inf)
            for level in sorted({float(score) for score in LEVEL_SCORES.values()}):
                for missing in (0.0, 1.0):
                    rows = np.empty((steps, len(FEATURE_NAMES)))
                    rows[:, 0], rows[:, 1], rows[:, 2] = latency_z, level, missing
                    paper = forest.paper_scores(rows)
                    tables[level, missing] = (
                        array("d", paper.tobytes()),
                        array("d", calibrator.rarity(paper).tobytes()),
                    )
        return cls(forest, calibrator, bounds.tolist(), tables)

    def score(self, latency_z: float, level: float, missing: float) -> tuple[float, float] | None:
        """Paper score and rarity of the event; None where no table has it."""
        table = self.tables.get((level, missing))
        if table is None or latency_z != latency_z:
            return None
        step = bisect_left(self.bounds, _float32(latency_z))
        return table[0][step], table[1][step]


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
        self._steps: _Steps | None = None

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

    def _steps_of(self, forest: FlatForest, calibrator: TailCalibrator) -> _Steps:
        steps = self._steps
        # Rebuilt when the fitted forest or calibrator was replaced since (a refit).
        if steps is None or steps.forest is not forest or steps.calibrator is not calibrator:
            steps = self._steps = _Steps.build(forest, calibrator)
        return steps

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        forest, calibrator = self._fitted()
        (row,) = context.features.tolist()
        found = self._steps_of(forest, calibrator).score(*row) if len(row) == 3 else None
        if found is None:  # no table for these features: the batch path's arithmetic
            raw = forest.paper_scores(context.features)
            score = raw.item()
            rarity = calibrator.rarity(raw).item()
        else:
            score, rarity = found
        latency, z = context.batch.latency_ms.item(), context.baseline.latency_z.item()
        median = context.baseline.median_latency_ms.item()
        return OneOutput(
            rarity,
            {
                "paper_score": score,
                "beyond_contamination_threshold": 1.0 if score > -forest.offset else 0.0,
                "latency_ratio": (
                    latency / median if median > MIN_MEDIAN_FOR_RATIO_MS and z == z else math.nan
                ),
                "latency_zscore_vs_baseline": z,
                "level_score": context.batch.level_scores.item(),
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
        # Built now, where models are loaded (a worker thread in the service), rather than by
        # the first event scored on the event loop.
        detector._steps_of(detector.forest_, detector.calibrator_)
        return detector
