"""Autoencoder over the event features: reconstruction error through a narrow bottleneck.

A small multilayer perceptron (scikit-learn's ``MLPRegressor``, CPU only, trained by
``app.detectors.mlp_training`` to scikit-learn's weights without its per-minibatch overhead) is
trained to reproduce its standardised input through a layer narrower than the input. Normal events
lie near the surface it learns; an event whose *combination* of features is unusual, even when each
feature alone is not, reconstructs badly. The raw score is the mean squared reconstruction error,
calibrated to a rarity on the training events' own errors (``TailCalibrator``).

The fitted network is stored as weight arrays (no pickles). It is evaluated event by event in a
numba-compiled loop (``_reconstruction_loop``, ~1 us for one event where numpy's per-call overhead
cost ~40 us), each weighted sum added input by input in a fixed order, so an event's error does
not depend on the batch it came in. A numpy evaluator with the same summation order stays as the
fallback without numba and as a cross-check in the tests; the two agree to rounding (numpy's
``tanh`` and the C library's differ in the last bit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt

from app.detectors.base import (
    BatchDetector,
    MethodOutput,
    NotFittedError,
    OneOutput,
    ScoringContext,
    one_output,
)
from app.detectors.calibration import TAIL_FRACTION, TailCalibrator
from app.detectors.compiled import compile_kernel, unchecked
from app.detectors.mlp_training import train_network
from app.features import FEATURE_NAMES, distinct_rows, per_distinct_row

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Evaluator = Literal["compiled", "numpy"]

MIN_STD = 1e-3  # a constant feature is left centred, not blown up by a tiny spread
# Least share of the training sample each kind of event (level x latency missing) keeps.
MIN_GROUP_SHARE = 0.05
# The calibrated tail covers the training errors' own shares from this many rows up.
MIN_COVERED_ROWS = 10
_MISSING_COLUMN = FEATURE_NAMES.index("latency_missing")


def _reconstruction_loop(
    x: FloatArray,
    mean: FloatArray,
    std: FloatArray,
    weights: FloatArray,
    biases: FloatArray,
    widths: IntArray,
) -> FloatArray:
    """Mean squared reconstruction error of each row (the compiled evaluator's source).

    ``weights`` and ``biases`` hold every layer's arrays flattened one after the other (a layer's
    weights row-major, ``inputs x outputs``); ``widths`` are the layer widths, input first. Tanh
    between layers, identity at the output, as ``MLPRegressor`` with ``activation="tanh"``.
    """
    n_rows, n_features = x.shape
    n_layers = widths.shape[0] - 1
    widest = 0
    for layer in range(n_layers + 1):
        widest = max(widest, widths[layer])
    scaled = np.empty(n_features)
    current = np.empty(widest)
    following = np.empty(widest)
    errors = np.empty(n_rows)
    for i in range(n_rows):
        for k in range(n_features):
            scaled[k] = (x[i, k] - mean[k]) / std[k]
            current[k] = scaled[k]
        weight_at = 0
        bias_at = 0
        for layer in range(n_layers):
            n_in = widths[layer]
            n_out = widths[layer + 1]
            for j in range(n_out):
                total = biases[bias_at + j]
                for k in range(n_in):
                    total += current[k] * weights[weight_at + k * n_out + j]
                following[j] = math.tanh(total) if layer < n_layers - 1 else total
            for j in range(n_out):
                current[j] = following[j]
            weight_at += n_in * n_out
            bias_at += n_out
        squares = 0.0
        for k in range(n_features):
            difference = current[k] - scaled[k]
            squares += difference * difference
        errors[i] = squares / n_features
    return errors


_COMPILED_RECONSTRUCTION = compile_kernel(
    _reconstruction_loop,
    "float64[::1](float64[:, ::1], float64[::1], float64[::1], float64[::1], float64[::1], "
    "int64[::1])",
)
COMPILED_AVAILABLE = _COMPILED_RECONSTRUCTION is not None
# ``rarity_one``'s call, without the dispatcher's typing of each argument (``unchecked``): the
# row is made contiguous float64 there, and the network's arrays are those the batch path
# passes the dispatcher.
_RECONSTRUCTION_OF_ONE = (
    None if _COMPILED_RECONSTRUCTION is None else unchecked(_COMPILED_RECONSTRUCTION)
)


def _rarity_loop(
    x: FloatArray,
    latency_ms: FloatArray,
    mean: FloatArray,
    std: FloatArray,
    weights: FloatArray,
    biases: FloatArray,
    widths: IntArray,
    quantiles: FloatArray,
    levels: FloatArray,
    slopes: FloatArray,
    tail_start: float,
    missing_column: int,
    rarity: FloatArray,
    errors: FloatArray,
) -> int:
    """``rarity``'s whole batch in one call (the compiled batch path's source): each row's
    reconstruction error, as ``_reconstruction_loop`` computes it, and its calibrated rarity,
    as ``TailCalibrator.rarity`` computes it in the body; NaN error and rarity 1 for a warming-up
    row. Rows in the calibrator's tail get their error only and a NaN rarity: their tail takes
    numpy's ``exp`` (not the C library's) and is left to the caller. Returns how many rows
    that is.

    Each unit's sum adds the bias, then input 0, 1, ... exactly as ``_reconstruction_loop``
    does (the same bits), only for all rows at once. The body rarity is ``np.interp`` on the
    arithmetic ``interp_one`` reproduces (app/detectors/calibration.py) with the calibrator's
    slopes computed once, then ``max(1 - p, TAIL_FRACTION)``.
    """
    n_rows, n_features = x.shape
    n_layers = widths.shape[0] - 1
    n_grid = quantiles.shape[0]
    widest = 0
    for layer in range(n_layers + 1):
        widest = max(widest, widths[layer])
    # Layer by layer over the whole batch, each unit's values for all rows side by side: the
    # multiply-adds of one input into one unit then run over rows, which the compiler does four
    # rows at a time (the same operations on each row: no sum is reordered).
    scaled = np.empty((n_features, n_rows))
    current = np.empty((widest, n_rows))
    following = np.empty((widest, n_rows))
    for k in range(n_features):
        centre = mean[k]
        spread = std[k]
        for i in range(n_rows):
            scaled[k, i] = (x[i, k] - centre) / spread
            current[k, i] = scaled[k, i]
    weight_at = 0
    bias_at = 0
    for layer in range(n_layers):
        n_in = widths[layer]
        n_out = widths[layer + 1]
        for j in range(n_out):
            unit = following[j]
            bias = biases[bias_at + j]
            for i in range(n_rows):
                unit[i] = bias
            for k in range(n_in):
                weight = weights[weight_at + k * n_out + j]
                source = current[k]
                for i in range(n_rows):
                    unit[i] += source[i] * weight
            if layer < n_layers - 1:
                for i in range(n_rows):
                    unit[i] = math.tanh(unit[i])
        current, following = following, current
        weight_at += n_in * n_out
        bias_at += n_out
    in_tail = 0
    for i in range(n_rows):
        latency = latency_ms[i]
        if x[i, missing_column] == 1.0 and latency == latency:
            rarity[i] = 1.0
            errors[i] = math.nan
            continue
        squares = 0.0
        for k in range(n_features):
            difference = current[k, i] - scaled[k, i]
            squares += difference * difference
        error = squares / n_features
        errors[i] = error
        if error > tail_start:
            rarity[i] = math.nan
            in_tail += 1
            continue
        # np.interp(error, quantiles, levels): the j with quantiles[j] <= error < quantiles[j+1].
        if error != error:
            interpolated = error
        elif error < quantiles[0]:
            interpolated = levels[0]
        elif error >= quantiles[n_grid - 1]:
            interpolated = levels[n_grid - 1]
        else:
            low = 0
            high = n_grid - 1  # quantiles[low] <= error < quantiles[high]
            while high - low > 1:
                middle = (low + high) >> 1
                if quantiles[middle] <= error:
                    low = middle
                else:
                    high = middle
            if quantiles[low] == error:
                interpolated = levels[low]
            else:
                slope = slopes[low]
                interpolated = slope * (error - quantiles[low]) + levels[low]
                if interpolated != interpolated:
                    interpolated = slope * (error - quantiles[low + 1]) + levels[low + 1]
                    if interpolated != interpolated and levels[low] == levels[low + 1]:
                        interpolated = levels[low]
        body = 1.0 - interpolated
        rarity[i] = body if not body <= TAIL_FRACTION else TAIL_FRACTION
    return in_tail


_COMPILED_RARITY = compile_kernel(
    _rarity_loop,
    "int64(float64[:, ::1], float64[::1], float64[::1], float64[::1], float64[::1], "
    "float64[::1], int64[::1], float64[::1], float64[::1], float64[::1], float64, int64, "
    "float64[::1], float64[::1])",
)


def interp_slopes(quantiles: FloatArray, levels: FloatArray) -> FloatArray:
    """``np.interp``'s slope of each grid interval, as it computes them: (fp[j + 1] - fp[j]) /
    (xp[j + 1] - xp[j]); a zero-width interval's (inf or NaN) is never read."""
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes: FloatArray = np.diff(levels) / np.diff(quantiles)
    return np.ascontiguousarray(np.append(slopes, 0.0), dtype=np.float64)


def covering_calibrator(errors: FloatArray) -> TailCalibrator:
    """``TailCalibrator.fit`` with its exponential tail widened, if need be, until no training
    error is rarer by the tail than by its own share of the training errors: P(error >= e) is at
    least (rows with error >= e) / rows for every training error e exceeded by at least
    ``MIN_COVERED_ROWS`` rows.

    The tail's scale is the mean excess over the top 5%, which the bulk of near-typical errors
    sets; the few events the network reconstructs worst (a latency 3 scales out, when a service's
    latencies are near normal; an error line) sit far beyond it, and a tail that decays that fast
    called each of them "1 in 10**5", though normal data has one in ~1000: an alarm per thousand
    normal events on top of the target rate. Beyond the largest training error the tail still
    falls off exponentially, so a truly new combination stays ranked and rare."""
    calibrator = TailCalibrator.fit(errors)
    ordered = np.sort(np.asarray(errors, dtype=np.float64))[::-1]
    rows_at_least = np.arange(1, ordered.size + 1)
    share = rows_at_least / ordered.size
    # The share of fewer rows than this is mostly chance: the very largest errors of a sample
    # would otherwise set the scale of the whole tail.
    beyond = (
        (ordered > calibrator.tail_start)
        & (share < TAIL_FRACTION)
        & (rows_at_least >= MIN_COVERED_ROWS)
    )
    if not beyond.any():
        return calibrator
    needed = (ordered[beyond] - calibrator.tail_start) / np.log(TAIL_FRACTION / share[beyond])
    return dataclasses.replace(
        calibrator, tail_scale=max(calibrator.tail_scale, float(needed.max()))
    )


def discrete_groups(pairs: FloatArray) -> IntArray:
    """``np.unique(pairs, axis=0, return_inverse=True)``'s inverse, flat: each row's rank among
    the distinct rows, compared as floats, in their sorted order.

    np.unique sorts every row (over a second for a million); the rows of the discrete columns
    take a handful of values, so they are numbered by hashing their bits and only one row of
    each bit pattern is sorted. Float equality merges patterns (-0.0 and 0.0) exactly as np.unique
    does, and without NaN (which np.unique never merges, however equal the bits) it is an
    equivalence, so every row lands in np.unique's group. With NaN: np.unique itself."""
    distinct = None if np.isnan(pairs).any() else distinct_rows(pairs)
    if distinct is None:
        _, group = np.unique(pairs, axis=0, return_inverse=True)
        return group.reshape(-1).astype(np.int64, copy=False)
    patterns, pattern_of_row = distinct
    _, group_of_pattern = np.unique(patterns, axis=0, return_inverse=True)
    return np.take(group_of_pattern.reshape(-1).astype(np.int64, copy=False), pattern_of_row)


def _training_sample(x: FloatArray, max_rows: int, random_state: int) -> IntArray:
    """Rows to train the network on: all of them up to ``max_rows``, else a random sample in which
    every combination of the discrete columns (level, latency missing) keeps at least
    ``max_rows * MIN_GROUP_SHARE`` rows, or all it has.

    A bounded sample keeps training seconds, not minutes (the calibration sees every row). A
    plain random sample would hold only a handful of rows of a rare but normal kind (a service
    that logs 0.5% errors gives ~25 of 5000): the network then does not learn to reconstruct them,
    every such event lands far out in the calibrated tail, and each normal error is an alarm."""
    rng = np.random.default_rng(random_state)
    n = x.shape[0]
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    discrete = [FEATURE_NAMES.index("level_score"), FEATURE_NAMES.index("latency_missing")]
    group = discrete_groups(x[:, discrete])
    sizes = np.bincount(group)
    floor = int(max_rows * MIN_GROUP_SHARE)
    wanted = np.maximum(np.round(sizes * max_rows / n), np.minimum(sizes, floor)).astype(np.int64)
    chosen = [
        rng.choice(np.flatnonzero(group == g), min(int(k), int(sizes[g])), replace=False)
        for g, k in enumerate(wanted.tolist())
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class AutoencoderDetector(BatchDetector):
    name: ClassVar[str] = "autoencoder"
    method: ClassVar[str] = "Autoencoder reconstruction error (MLP with a bottleneck)"
    requires: ClassVar[tuple[str, ...]] = ("event features",)

    weights_: list[FloatArray] | None
    biases_: list[FloatArray] | None
    mean_: FloatArray | None
    std_: FloatArray | None
    calibrator_: TailCalibrator | None

    def __init__(
        self,
        hidden: int = 8,
        bottleneck: int = 2,
        max_iter: int = 300,
        max_rows: int = 5000,
        random_state: int = 42,
    ) -> None:
        self.hidden = hidden
        self.bottleneck = bottleneck
        self.max_iter = max_iter
        self.max_rows = max_rows
        self.random_state = random_state
        self.weights_ = None
        self.biases_ = None
        self.mean_ = None
        self.std_ = None
        self.calibrator_ = None
        self._flat: tuple[FloatArray, FloatArray, IntArray] = (
            np.empty(0),
            np.empty(0),
            np.empty(0, dtype=np.int64),
        )
        # The calibrator's np.interp slopes for the compiled batch path, made on first use
        # and kept with the calibrator they belong to.
        self._slopes: tuple[TailCalibrator, FloatArray] | None = None

    def get_params(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "bottleneck": self.bottleneck,
            "max_iter": self.max_iter,
            "max_rows": self.max_rows,
            "random_state": self.random_state,
        }

    @property
    def is_fitted(self) -> bool:
        return self.weights_ is not None and self.calibrator_ is not None

    def fit(self, features: FloatArray) -> Self:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError("the autoencoder needs a 2-d feature matrix of at least two rows")
        sample = x[_training_sample(x, self.max_rows, self.random_state)]
        self.mean_ = sample.mean(axis=0)
        self.std_ = np.maximum(sample.std(axis=0), MIN_STD)
        scaled = (sample - self.mean_) / self.std_
        # MLPRegressor's training, bit for bit, without its per-minibatch overhead.
        network = train_network(
            scaled,
            scaled,
            (self.hidden, self.bottleneck, self.hidden),
            self.max_iter,
            self.random_state,
        )
        self._set_network(network.coefs, network.intercepts)
        self.calibrator_ = covering_calibrator(per_distinct_row(self.reconstruction_error, x))
        return self

    def reconstruction_error(
        self, features: FloatArray, evaluator: Evaluator | None = None
    ) -> FloatArray:
        """Mean squared error of the reconstruction, in standardised units.

        ``evaluator``: the compiled loop (the default when numba is installed) or numpy."""
        if self.weights_ is None or self.biases_ is None or self.mean_ is None or self.std_ is None:
            raise NotFittedError("autoencoder is not fitted")
        chosen = evaluator or ("compiled" if COMPILED_AVAILABLE else "numpy")
        if chosen == "compiled":
            if _COMPILED_RECONSTRUCTION is None:
                raise RuntimeError("the compiled evaluator needs numba, which is not installed")
            flat_weights, flat_biases, widths = self._flat
            return _COMPILED_RECONSTRUCTION(
                np.ascontiguousarray(features, dtype=np.float64),
                self.mean_,
                self.std_,
                flat_weights,
                flat_biases,
                widths,
            )
        scaled = (np.asarray(features, dtype=np.float64) - self.mean_) / self.std_
        activation = scaled
        last = len(self.weights_) - 1
        for index, (w, b) in enumerate(zip(self.weights_, self.biases_, strict=True)):
            # Summed input by input rather than by a matrix product: BLAS picks different kernels
            # (and rounding) for one row and for many, and one event scored alone must equal the
            # same event scored in a batch, bit for bit.
            total = np.broadcast_to(b, (activation.shape[0], b.shape[0])).copy()
            for k in range(w.shape[0]):
                total += activation[:, k, None] * w[k]
            activation = total
            if index < last:
                activation = np.tanh(activation)  # MLPRegressor's output layer is identity
        result: FloatArray = np.mean((activation - scaled) ** 2, axis=1)
        return result

    def _set_network(self, weights: list[FloatArray], biases: list[FloatArray]) -> None:
        self.weights_, self.biases_ = weights, biases
        # The layers as the compiled loop takes them, built once per fitted network.
        self._flat = (
            np.concatenate([np.ascontiguousarray(w).ravel() for w in weights]),
            np.concatenate(biases),
            np.array([weights[0].shape[0], *(w.shape[1] for w in weights)], dtype=np.int64),
        )

    def rarity(self, context: ScoringContext) -> MethodOutput:
        calibrator = self.calibrator_
        if calibrator is None:
            raise NotFittedError("autoencoder is not fitted")
        mean, std = self.mean_, self.std_
        if _COMPILED_RARITY is not None and mean is not None and std is not None:
            return self._compiled_rarity(context, calibrator, mean, std, _COMPILED_RARITY)
        error = self.reconstruction_error(context.features)
        # While a service's baseline warms up, its latency feature reads "missing" although the
        # event has one: that combination says nothing about the event, so it is not judged.
        latency = context.batch.latency_ms
        warming_up = (context.features[:, _MISSING_COLUMN] == 1.0) & (latency == latency)
        return MethodOutput(
            rarity=np.where(warming_up, 1.0, calibrator.rarity(error)),
            metrics={"reconstruction_error": np.where(warming_up, np.nan, error)},
        )

    def _compiled_rarity(
        self,
        context: ScoringContext,
        calibrator: TailCalibrator,
        mean: FloatArray,
        std: FloatArray,
        kernel: Callable[..., int],
    ) -> MethodOutput:
        """``rarity``'s result from one compiled pass (``_rarity_loop``) in place of the
        reconstruction, the calibrator's numpy passes and the warming-up masks (~0.6 ms for
        1000 events, most of it numpy calls over the batch): the same values, bit for bit
        (tests/test_cdet_kernels.py). Only rows in the calibrator's tail, 5% of normal ones, take
        the calibrator's numpy arithmetic afterwards."""
        features = np.ascontiguousarray(context.features, dtype=np.float64)
        n = features.shape[0]
        rarity = np.empty(n)
        errors = np.empty(n)
        flat_weights, flat_biases, widths = self._flat
        slopes = self._slopes
        if slopes is None or slopes[0] is not calibrator:
            slopes = self._slopes = (
                calibrator,
                interp_slopes(calibrator.quantiles, calibrator.levels),
            )
        in_tail = kernel(
            features,
            np.ascontiguousarray(context.batch.latency_ms, dtype=np.float64),
            mean,
            std,
            flat_weights,
            flat_biases,
            widths,
            np.ascontiguousarray(calibrator.quantiles, dtype=np.float64),
            np.ascontiguousarray(calibrator.levels, dtype=np.float64),
            slopes[1],
            calibrator.tail_start,
            _MISSING_COLUMN,
            rarity,
            errors,
        )
        if in_tail:
            rows = np.flatnonzero(np.isnan(rarity))
            rarity[rows] = calibrator.rarity(errors[rows])
        return MethodOutput(rarity=rarity, metrics={"reconstruction_error": errors})

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        calibrator = self.calibrator_
        if calibrator is None or self.mean_ is None or self.std_ is None:
            raise NotFittedError("autoencoder is not fitted")
        features = context.features
        # The warming-up test of ``rarity`` on Python floats, before any network arithmetic.
        latency = context.batch.latency_ms.item()
        if features.item(0, _MISSING_COLUMN) == 1.0 and latency == latency:
            return one_output((1.0, {"reconstruction_error": math.nan}))
        if _RECONSTRUCTION_OF_ONE is None:
            error = self.reconstruction_error(features).item()
        else:
            # The kernel ``reconstruction_error`` calls on the same 1-row matrix, without its
            # evaluator choice and checks.
            flat_weights, flat_biases, widths = self._flat
            error = _RECONSTRUCTION_OF_ONE(
                np.ascontiguousarray(features, dtype=np.float64),
                self.mean_,
                self.std_,
                flat_weights,
                flat_biases,
                widths,
            ).item()
        return one_output((calibrator.rarity_one(error), {"reconstruction_error": error}))

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        if (
            self.weights_ is None
            or self.biases_ is None
            or self.mean_ is None
            or self.std_ is None
            or self.calibrator_ is None
        ):
            raise NotFittedError("autoencoder is not fitted")
        arrays: dict[str, npt.NDArray[Any]] = {"mean": self.mean_, "std": self.std_}
        for index, (w, b) in enumerate(zip(self.weights_, self.biases_, strict=True)):
            arrays[f"w{index}"] = w
            arrays[f"b{index}"] = b
        return arrays | self.calibrator_.to_arrays("calibrator_")

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Self:
        detector = cls(**params)
        layers = 0
        while f"w{layers}" in arrays:
            layers += 1
        weights = [np.asarray(arrays[f"w{i}"], dtype=np.float64) for i in range(layers)]
        biases = [np.asarray(arrays[f"b{i}"], dtype=np.float64) for i in range(layers)]
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        std = np.asarray(arrays["std"], dtype=np.float64)
        width = mean.shape[0] if mean.ndim == 1 else -1
        for w, b in zip(weights, biases, strict=True):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError("autoencoder layer shapes do not chain")
            width = w.shape[1]
        if not layers or width != mean.shape[0] or std.shape != mean.shape or np.any(std <= 0):
            raise ValueError("autoencoder arrays are inconsistent")
        if not all(np.all(np.isfinite(a)) for a in (*weights, *biases, mean, std)):
            raise ValueError("autoencoder holds non-finite weights")
        detector._set_network(weights, biases)
        detector.mean_, detector.std_ = mean, std
        detector.calibrator_ = TailCalibrator.from_arrays(arrays, "calibrator_")
        return detector
