"""Isolation Forest over service-relative features: fitted by scikit-learn, scored by FlatForest
(a batch), or for one event by the forest's step tables along latency_z (``_Steps``)."""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable
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
    one_output,
)
from app.detectors.calibration import TailCalibrator
from app.detectors.compiled import compile_kernel
from app.detectors.forest import FlatForest
from app.features import FEATURE_NAMES, per_distinct_row
from app.schemas.events import LEVEL_SCORES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# The step tables of ``_Steps`` are built only while (intervals x trees) per table stays below
# this: ~45 ms for all tables of the default forest (100 trees, ~3,600 intervals), at most a few
# times that for any forest that gets them; larger forests score one event by the kernel.
MAX_STEP_WORK = 1 << 20
# Steps of each stored table checked against the kernel when a model is loaded.
SAMPLED_STEPS = 16
STEPS_PREFIX = "forest_steps_"
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
    """The forest's paper score and rarity by table, for a batch of one and for a batch.

    Besides latency_z the forest's features take a few values only: a level's score and
    latency_missing (0 or 1). For each such pair the forest is a step function of latency_z:
    every split on latency_z compares it (rounded to float32, as scikit-learn does) with a
    threshold, so between two consecutive thresholds every tree ends in the same leaf. Each step's
    values are those of the kernel (``FlatForest.paper_scores`` and the calibrator's ``rarity``)
    for one float32 latency_z inside it, hence bit for bit those of any latency_z it holds: one
    bisection replaces walking every tree.

    The tables are built where the forest is fitted (the training process) and stored with it
    (``to_arrays``): loading a model then costs no walk of the trees, which held the GIL for
    ~45 ms of a service's worker thread while requests waited on the event loop. Models stored
    before carry no tables; theirs are built when they are loaded.
    """

    forest: FlatForest
    calibrator: TailCalibrator
    bounds: list[float]  # the thresholds of the splits on latency_z, ascending
    # (level score, latency missing) -> paper score and rarity of each step: step k holds the
    # latency_z in (bounds[k - 1], bounds[k]], the last one those above every bound.
    tables: dict[tuple[float, float], tuple[array[float], array[float]]]
    # The same tables as arrays, for a batch: ``paper[i, missing, step]`` for ``levels[i]``.
    bounds_array: FloatArray
    levels: FloatArray  # ascending
    paper: FloatArray
    rarity: FloatArray

    @staticmethod
    def _step_inputs(bounds: FloatArray) -> FloatArray:
        """One latency_z per step: the largest float32 at or below its upper bound, an input
        the kernel keeps as it is (it rounds to float32), inside the step whenever some float32
        is (and only such a step can be looked up: latency_z is rounded first)."""
        with np.errstate(over="ignore"):  # a bound beyond float32's range: its infinity
            upper = bounds.astype(np.float32)
        upper = np.where(upper > bounds, np.nextafter(upper, np.float32(-np.inf)), upper)
        return np.append(upper.astype(np.float64), np.inf)

    @staticmethod
    def _kernel_tables(
        forest: FlatForest,
        calibrator: TailCalibrator,
        latency_z: FloatArray,
        levels: FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """Paper scores and rarities of the kernel at ``latency_z`` for every level and
        latency_missing, shaped (levels, 2, latency_z)."""
        shape = (levels.size, 2, latency_z.size)
        if not levels.size:  # no tables (the kernel may not even take three features)
            return np.empty(shape), np.empty(shape)
        rows = np.empty((levels.size, 2, latency_z.size, len(FEATURE_NAMES)))
        rows[..., 0] = latency_z
        rows[..., 1] = levels[:, None, None]
        rows[:, 0, :, 2], rows[:, 1, :, 2] = 0.0, 1.0
        paper = forest.paper_scores(rows.reshape(-1, len(FEATURE_NAMES)))
        return paper.reshape(shape), calibrator.rarity(paper).reshape(shape)

    @classmethod
    def build(cls, forest: FlatForest, calibrator: TailCalibrator) -> _Steps:
        bounds = forest.split_thresholds(0)
        steps = bounds.size + 1
        levels = np.empty(0)
        if forest.n_features == len(FEATURE_NAMES) and steps * forest.roots.size <= MAX_STEP_WORK:
            levels = np.array(sorted({float(score) for score in LEVEL_SCORES.values()}))
        paper, rarity = cls._kernel_tables(forest, calibrator, cls._step_inputs(bounds), levels)
        return cls._of(forest, calibrator, bounds, levels, paper, rarity)

    @classmethod
    def _of(
        cls,
        forest: FlatForest,
        calibrator: TailCalibrator,
        bounds: FloatArray,
        levels: FloatArray,
        paper: FloatArray,
        rarity: FloatArray,
    ) -> _Steps:
        tables = {
            (level, float(missing)): (
                array("d", paper[i, missing].tobytes()),
                array("d", rarity[i, missing].tobytes()),
            )
            for i, level in enumerate(levels.tolist())
            for missing in (0, 1)
        }
        return cls(forest, calibrator, bounds.tolist(), tables, bounds, levels, paper, rarity)

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        return {
            f"{prefix}levels": self.levels,
            f"{prefix}paper": self.paper,
            f"{prefix}rarity": self.rarity,
        }

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, npt.NDArray[Any]],
        prefix: str,
        forest: FlatForest,
        calibrator: TailCalibrator,
    ) -> _Steps:
        """Stored tables, or, in a model stored before they were, tables built now. Stored ones
        must have the forest's shape and, at a few steps spread over each, the kernel's values:
        a file is not trusted blindly, and a table that disagrees would change answers."""
        if f"{prefix}levels" not in arrays:
            return cls.build(forest, calibrator)
        bounds = forest.split_thresholds(0)
        levels = np.ascontiguousarray(arrays[f"{prefix}levels"], dtype=np.float64)
        paper = np.ascontiguousarray(arrays[f"{prefix}paper"], dtype=np.float64)
        rarity = np.ascontiguousarray(arrays[f"{prefix}rarity"], dtype=np.float64)
        shape = (levels.size, 2, bounds.size + 1)
        if (
            levels.ndim != 1
            or paper.shape != shape
            or rarity.shape != shape
            or not np.all(np.isfinite(levels))
            or np.any(np.diff(levels) <= 0.0)
        ):
            raise ValueError("forest step tables do not fit the forest")
        sampled = np.unique(np.linspace(0, bounds.size, min(bounds.size + 1, SAMPLED_STEPS)))
        steps = sampled.astype(np.int64)
        expected = cls._kernel_tables(forest, calibrator, cls._step_inputs(bounds)[steps], levels)
        if not (
            np.array_equal(expected[0], paper[:, :, steps])
            and np.array_equal(expected[1], rarity[:, :, steps])
        ):
            raise ValueError("forest step tables disagree with the forest")
        return cls._of(forest, calibrator, bounds, levels, paper, rarity)

    def score(self, latency_z: float, level: float, missing: float) -> tuple[float, float] | None:
        """Paper score and rarity of the event; None where no table has it."""
        table = self.tables.get((level, missing))
        if table is None or latency_z != latency_z:
            return None
        step = bisect_left(self.bounds, _float32(latency_z))
        return table[0][step], table[1][step]

    def score_batch(self, features: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Paper scores and rarities of a batch: looked up where a table has the event, from
        the kernel for the others (NaN latency_z, a level without a table)."""
        latency_z, level, missing = features[:, 0], features[:, 1], features[:, 2]
        with np.errstate(over="ignore"):  # beyond float32's range: its infinity, as the kernel
            rounded = latency_z.astype(np.float32)
        step = np.searchsorted(self.bounds_array, rounded.astype(np.float64))
        at = np.searchsorted(self.levels, level).clip(max=max(self.levels.size - 1, 0))
        # NaN latency_z fails latency_z == latency_z; a level or latency_missing without a
        # table fails the others.
        found = (
            (self.levels[at] == level if self.levels.size else np.zeros(level.shape, bool))
            & ((missing == 0.0) | (missing == 1.0))
            & (latency_z == latency_z)
        )
        cell = (at * 2 + (missing == 1.0)) * (self.bounds_array.size + 1) + step
        if np.all(found):
            return self.paper.ravel()[cell], self.rarity.ravel()[cell]
        paper, rarity = np.empty(features.shape[0]), np.empty(features.shape[0])
        paper[found] = self.paper.ravel()[cell[found]]
        rarity[found] = self.rarity.ravel()[cell[found]]
        rest = ~found
        if np.any(rest):
            raw = self.forest.paper_scores(features[rest])
            paper[rest], rarity[rest] = raw, self.calibrator.rarity(raw)
        return paper, rarity


def _weighted_rows_loop(weights: IntArray, rows: IntArray) -> int:
    """Write the positions of the nonzero ``weights`` to ``rows``, ascending, and return how many
    there are; -1 if a weight is neither 0 nor 1 (the compiled kernel's source)."""
    count = 0
    for i in range(weights.shape[0]):
        weight = weights[i]
        if weight != 0:
            if weight != 1:
                return -1
            rows[count] = i
            count += 1
    return count


_COMPILED_WEIGHTED_ROWS = compile_kernel(_weighted_rows_loop, "int64(int64[::1], int64[::1])")
# Far from float32's overflow even summed over any training set scikit-learn's trees sum.
_SUBSET_SAFE_MAGNITUDE = 1e30


def _fits_on_subsets(features: FloatArray) -> bool:
    """Whether a tree fitted on its own rows only is the tree fitted on every row with the other
    rows' weights 0: every value finite and small. A tree checks the whole matrix it is given for
    NaN (which changes how it splits) and infinities (an error), by a float32 sum that huge values
    could overflow; on such matrices the check's answer could differ between its rows and all."""
    return _COMPILED_WEIGHTED_ROWS is not None and bool(
        np.all(np.abs(features) <= _SUBSET_SAFE_MAGNITUDE)
    )


@functools.cache
def _subset_forest() -> type[Any]:
    """scikit-learn's ``IsolationForest`` whose trees are fitted on their own rows only.

    Its bagging gives each tree every training row, its sample as weights 1 and the others 0, and
    the tree then scans the whole matrix (~5 ms of a tree's fit for a million rows, half a second
    for the forest). A tree's splitter keeps the rows of nonzero weight in ascending order and
    treats a weight of 1 as no weight, so fitting on those rows, in that order, without weights,
    makes the same draws on the same values in the same order: the same tree, bit for bit
    (tests/test_fitdedupe.py compares the two). The sample is read from the weights in one pass.
    """
    from sklearn.ensemble import IsolationForest
    from sklearn.tree import ExtraTreeRegressor

    if _COMPILED_WEIGHTED_ROWS is None:  # pragma: no cover - _fits_on_subsets says no first
        raise RuntimeError("fitting trees on their own rows needs numba")
    kernel: Callable[[IntArray, IntArray], int] = _COMPILED_WEIGHTED_ROWS

    class SubsetTree(ExtraTreeRegressor):  # type: ignore[misc]
        def fit(
            self,
            X: Any,  # scikit-learn's signature, names included
            y: Any,
            sample_weight: Any = None,
            check_input: bool = True,
        ) -> Any:
            weights = sample_weight
            if isinstance(weights, np.ndarray) and weights.dtype == np.int64 and weights.ndim == 1:
                rows = np.empty(weights.shape[0], dtype=np.int64)
                count = kernel(np.ascontiguousarray(weights), rows)
                if count > 0:
                    return super().fit(X[rows[:count]], y[rows[:count]], check_input=check_input)
            return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)

    class SubsetIsolationForest(IsolationForest):  # type: ignore[misc]
        def _get_estimator(self) -> Any:
            # As IsolationForest's own, but of SubsetTree.
            return SubsetTree(max_features=1, splitter="random", random_state=self.random_state)

    return SubsetIsolationForest


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

        # Trees fitted on their own rows only where that is the same fit (see _subset_forest).
        forest_class = _subset_forest() if _fits_on_subsets(features) else IsolationForest
        # contamination="auto" only skips scikit-learn's own pass over every training row to set
        # offset_ (the trees do not depend on it); the offset is that same percentile of the same,
        # bit-identical scores, computed from the one pass the calibrator needs anyway.
        model = forest_class(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, features.shape[0]),
            contamination="auto",
            random_state=self.random_state,
        ).fit(features)
        forest = FlatForest.from_sklearn(model)
        training_scores = per_distinct_row(forest.score_samples, features)
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
        features = context.features
        if features.ndim == 2 and features.shape[1] == len(FEATURE_NAMES):
            raw, rarity = self._steps_of(forest, calibrator).score_batch(features)
        else:  # no tables for another feature layout: the kernel's arithmetic
            raw = forest.paper_scores(features)
            rarity = calibrator.rarity(raw)
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
            rarity=rarity,
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
        # ``_fitted`` and ``_steps_of``'s usual case inline: two calls fewer per event.
        forest, calibrator, steps = self.forest_, self.calibrator_, self._steps
        if forest is None or calibrator is None:
            raise NotFittedError("isolation_forest is not fitted")
        if steps is None or steps.forest is not forest or steps.calibrator is not calibrator:
            steps = self._steps_of(forest, calibrator)
        (row,) = context.features.tolist()
        found = steps.score(*row) if len(row) == 3 else None
        if found is None:  # no table for these features: the batch path's arithmetic
            raw = forest.paper_scores(context.features)
            score = raw.item()
            rarity = calibrator.rarity(raw).item()
        else:
            score, rarity = found
        latency, z = context.batch.latency_ms.item(), context.baseline.latency_z.item()
        median = context.baseline.median_latency_ms.item()
        return one_output(
            (
                rarity,
                {
                    "paper_score": score,
                    "beyond_contamination_threshold": 1.0 if score > -forest.offset else 0.0,
                    "latency_ratio": (
                        latency / median
                        if median > MIN_MEDIAN_FOR_RATIO_MS and z == z
                        else math.nan
                    ),
                    "latency_zscore_vs_baseline": z,
                    "level_score": context.batch.level_scores.item(),
                },
            )
        )

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        forest, calibrator = self._fitted()
        return {
            **forest.to_arrays("forest_"),
            **calibrator.to_arrays("calibrator_"),
            **self._steps_of(forest, calibrator).to_arrays(STEPS_PREFIX),
        }

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Self:
        detector = cls(**params)
        detector.forest_ = FlatForest.from_arrays(arrays, "forest_")
        detector.calibrator_ = TailCalibrator.from_arrays(arrays, "calibrator_")
        # Read (or, for a model stored without them, built) now, where models are loaded (a
        # worker thread in the service), rather than by the first event scored on the loop.
        detector._steps = _Steps.from_arrays(
            arrays, STEPS_PREFIX, detector.forest_, detector.calibrator_
        )
        return detector
