"""A fitted scikit-learn Isolation Forest flattened into plain arrays, and a vectorised evaluator.

Why: scikit-learn's per-call overhead (input validation, joblib dispatch, one ``apply`` per tree)
costs milliseconds for one event, and a pickled estimator can run code when loaded. The flat
arrays are both the fast scoring path and the on-disk format (``numpy.load(allow_pickle=False)``).

The evaluator reproduces ``IsolationForest.score_samples`` exactly: inputs are rounded to float32
before comparison with the float64 thresholds (scikit-learn's trees do the same), and per-tree
path lengths are added tree by tree in fitting order, as scikit-learn accumulates them.

Two evaluators give bit-identical path lengths: a numba-compiled loop (eight trees in lockstep,
sample by sample; ~4 us for one event, ~1.2 us per event in a batch of 1,000 on the benchmark's
2-core VM)
and a numpy one that walks every tree of a chunk of samples level by level (~30 us for one event,
~6 us per event in a batch). The compiled one is used when numba imports; the numpy one stays as
the reference and the fallback, and both are tested against scikit-learn (docs/benchmarks.md,
section f, has the figures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.detectors.compiled import compile_kernel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Evaluator = Literal["compiled", "numpy"]
# The numpy evaluator holds an (n_trees, chunk) index array and a few temporaries of that size:
# chunking bounds them to a few tens of MB however many samples come in (a 1M-row training set
# would otherwise need several GB just to be calibrated).
NUMPY_CHUNK_SAMPLES = 8192


# Trees walked side by side by the compiled evaluator (see ``_path_lengths_loop``).
TREES_IN_STEP = 8


def _path_lengths_loop(
    x: FloatArray,
    feature: IntArray,
    threshold: FloatArray,
    children: IntArray,
    leaf_value: FloatArray,
    roots: IntArray,
    max_depth: int,
) -> FloatArray:
    """Summed leaf values per sample (the compiled evaluator's source).

    ``TREES_IN_STEP`` trees at a time, so their nodes stay in cache while every sample walks
    them. One walk is a chain of dependent loads (node -> feature -> value -> child); walking
    several trees in lockstep gives the CPU independent chains to overlap, which halves the time
    for one event as for a batch. Each sample's sum still receives the trees one by one in
    fitting order, as scikit-learn adds them. The step is an index computation
    (``children[2 * node + goes_right]``) rather than a branch, which the CPU cannot predict on
    real data, and always ``max_depth`` steps long (leaves point to themselves), so a corrupt
    file with a cycle cannot make it loop forever.
    """
    n_samples = x.shape[0]
    n_trees = roots.shape[0]
    depths = np.zeros(n_samples)
    nodes = np.empty(TREES_IN_STEP, dtype=np.int64)
    # scikit-learn's trees compare float32 inputs with float64 thresholds: rounded here, once,
    # rather than by two numpy calls before the kernel (their fixed cost is one event's price).
    x = x.astype(np.float32).astype(np.float64)
    for first in range(0, n_trees, TREES_IN_STEP):
        width = min(TREES_IN_STEP, n_trees - first)
        for i in range(n_samples):
            for g in range(width):
                nodes[g] = roots[first + g]
            for _ in range(max_depth):
                for g in range(width):
                    node = nodes[g]
                    nodes[g] = children[
                        2 * node + (0 if x[i, feature[node]] <= threshold[node] else 1)
                    ]
            for g in range(width):
                depths[i] += leaf_value[nodes[g]]
    return depths


PathLengths = Callable[
    [FloatArray, IntArray, FloatArray, IntArray, FloatArray, IntArray, int], FloatArray
]


# Tree by tree, sample by sample; no fastmath, so each sum is added in order as scikit-learn does.
_PATH_LENGTHS_SIGNATURE = (
    "float64[::1](float64[:, ::1], int64[::1], float64[::1], int64[::1], float64[::1], "
    "int64[::1], int64)"
)


def _compile() -> PathLengths | None:
    return compile_kernel(_path_lengths_loop, _PATH_LENGTHS_SIGNATURE)


_COMPILED_PATH_LENGTHS = _compile()
COMPILED_AVAILABLE = _COMPILED_PATH_LENGTHS is not None

_ARRAY_FIELDS = ("feature", "threshold", "left", "right", "leaf_value", "roots")


@dataclass(frozen=True, slots=True)
class FlatForest:
    """All trees of a forest in one set of node arrays; ``roots[t]`` is tree t's first node.

    Leaves point to themselves with an infinite threshold, so every sample can take exactly
    ``max_depth`` steps without a branch on "is this a leaf".
    """

    feature: IntArray
    threshold: FloatArray
    left: IntArray
    right: IntArray
    leaf_value: FloatArray  # path length to the leaf plus c(n) for the samples left in it
    roots: IntArray
    max_depth: int
    n_features: int
    denominator: float  # n_trees * c(max_samples), scikit-learn's normaliser
    offset: float  # scikit-learn's offset_: score_samples below it is an outlier
    # left and right interleaved (children[2n] = left[n], children[2n + 1] = right[n]): derived,
    # not stored, for the compiled evaluator's branch-free step.
    children: IntArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        children = np.column_stack((self.left, self.right)).astype(np.int64).ravel()
        object.__setattr__(self, "children", children)

    @classmethod
    def from_sklearn(cls, model: Any) -> FlatForest:
        """Flatten a fitted ``sklearn.ensemble.IsolationForest``."""
        from sklearn.ensemble._iforest import _average_path_length

        n_features = int(model.n_features_in_)
        subsample_features = model._max_features != n_features
        features_parts, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
        offset = 0
        max_depth = 0
        for tree_index, (estimator, tree_features) in enumerate(
            zip(model.estimators_, model.estimators_features_, strict=True)
        ):
            tree = estimator.tree_
            n_nodes = int(tree.node_count)
            is_leaf = tree.children_left == -1
            local_feature = np.where(is_leaf, 0, tree.feature).astype(np.int64)
            if subsample_features:
                local_feature = np.asarray(tree_features, dtype=np.int64)[local_feature]
            node_ids = np.arange(n_nodes, dtype=np.int64) + offset
            # Same expression, same order as scikit-learn, so every leaf value is bit-identical.
            leaf_value = (
                model._decision_path_lengths[tree_index]
                + model._average_path_length_per_tree[tree_index]
                - 1.0
            )
            features_parts.append(local_feature)
            thresholds.append(np.where(is_leaf, np.inf, tree.threshold))
            lefts.append(np.where(is_leaf, node_ids, tree.children_left + offset))
            rights.append(np.where(is_leaf, node_ids, tree.children_right + offset))
            values.append(np.asarray(leaf_value, dtype=np.float64))
            roots.append(offset)
            max_depth = max(max_depth, int(tree.max_depth))
            offset += n_nodes
        denominator = float(len(model.estimators_) * _average_path_length([model._max_samples])[0])
        return cls(
            feature=np.concatenate(features_parts),
            threshold=np.concatenate(thresholds).astype(np.float64),
            left=np.concatenate(lefts),
            right=np.concatenate(rights),
            leaf_value=np.concatenate(values),
            roots=np.asarray(roots, dtype=np.int64),
            max_depth=max_depth,
            n_features=n_features,
            denominator=denominator,
            offset=float(model.offset_),
        )

    def score_samples(
        self, features: npt.ArrayLike, evaluator: Evaluator | None = None
    ) -> FloatArray:
        """``IsolationForest.score_samples``: the opposite of the paper's score, lower is odder.

        ``evaluator`` picks the compiled or the numpy path (the default: compiled when numba is
        installed); both give identical results.
        """
        # Negating the paper's score is exact: this is bit for bit -paper_scores.
        scores: FloatArray = -self.paper_scores(features, evaluator)
        return scores

    def paper_scores(
        self, features: npt.ArrayLike, evaluator: Evaluator | None = None
    ) -> FloatArray:
        """The original paper's anomaly score in (0, 1], ``-score_samples``; higher is odder."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected shape (n, {self.n_features}), got {x.shape}")
        n_samples = x.shape[0]
        if n_samples == 0:
            return np.empty(0, dtype=np.float64)
        chosen = evaluator or ("compiled" if COMPILED_AVAILABLE else "numpy")
        if chosen == "compiled":
            if _COMPILED_PATH_LENGTHS is None:
                raise RuntimeError("the compiled evaluator needs numba, which is not installed")
            depths = _COMPILED_PATH_LENGTHS(
                np.ascontiguousarray(x),  # rounded to float32 by the kernel
                self.feature,
                self.threshold,
                self.children,
                self.leaf_value,
                self.roots,
                self.max_depth,
            )
        else:
            # scikit-learn's trees compare float32 inputs with float64 thresholds.
            rounded = np.ascontiguousarray(x.astype(np.float32), dtype=np.float64)
            depths = np.concatenate(
                [
                    self._numpy_path_lengths(rounded[start : start + NUMPY_CHUNK_SAMPLES])
                    for start in range(0, n_samples, NUMPY_CHUNK_SAMPLES)
                ]
            )
        if self.denominator == 0.0:
            # One training sample: scikit-learn takes depth/denominator as 1, so 2**-1.
            return np.full(n_samples, 0.5)
        paper: FloatArray = 2.0 ** (-np.divide(depths, self.denominator))
        return paper

    def _numpy_path_lengths(self, rounded: FloatArray) -> FloatArray:
        n_samples = rounded.shape[0]
        flat = rounded.ravel()
        row_offsets = (np.arange(n_samples, dtype=np.int64) * self.n_features)[None, :]
        nodes = np.repeat(self.roots[:, None], n_samples, axis=1)
        for _ in range(self.max_depth):
            goes_left = flat[row_offsets + self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(goes_left, self.left[nodes], self.right[nodes])
        # cumsum adds tree by tree in order, as scikit-learn's ``depths +=`` loop does.
        depths: FloatArray = np.cumsum(self.leaf_value[nodes], axis=0)[-1]
        return depths

    def split_thresholds(self, feature: int) -> FloatArray:
        """The distinct thresholds of the splits on ``feature``, ascending (leaves, which point
        to themselves, split nothing)."""
        splits = (self.left != np.arange(self.left.shape[0])) & (self.feature == feature)
        thresholds: FloatArray = np.unique(self.threshold[splits])
        return thresholds

    def predict_outlier(self, features: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """scikit-learn's ``predict(X) == -1``."""
        return np.asarray(self.score_samples(features) - self.offset < 0)

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        arrays: dict[str, npt.NDArray[Any]] = {
            f"{prefix}{name}": getattr(self, name) for name in _ARRAY_FIELDS
        }
        arrays[f"{prefix}scalars"] = np.array(
            [self.max_depth, self.n_features, self.denominator, self.offset], dtype=np.float64
        )
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]], prefix: str) -> FlatForest:
        max_depth, n_features, denominator, offset = arrays[f"{prefix}scalars"].tolist()
        forest = cls(
            feature=np.ascontiguousarray(arrays[f"{prefix}feature"], dtype=np.int64),
            threshold=np.ascontiguousarray(arrays[f"{prefix}threshold"], dtype=np.float64),
            left=np.ascontiguousarray(arrays[f"{prefix}left"], dtype=np.int64),
            right=np.ascontiguousarray(arrays[f"{prefix}right"], dtype=np.int64),
            leaf_value=np.ascontiguousarray(arrays[f"{prefix}leaf_value"], dtype=np.float64),
            roots=np.ascontiguousarray(arrays[f"{prefix}roots"], dtype=np.int64),
            max_depth=int(max_depth),
            n_features=int(n_features),
            denominator=float(denominator),
            offset=float(offset),
        )
        forest.validate()
        return forest

    def validate(self) -> None:
        """Refuse arrays that would index out of bounds: a loaded file is not trusted blindly."""
        n_nodes = self.feature.shape[0]
        same_length = {
            a.shape for a in (self.threshold, self.left, self.right, self.leaf_value)
        } == {(n_nodes,)}
        if not same_length or n_nodes == 0:
            raise ValueError("forest arrays disagree in length")
        for name, index in (("left", self.left), ("right", self.right), ("roots", self.roots)):
            if index.size and (index.min() < 0 or index.max() >= n_nodes):
                raise ValueError(f"forest {name} index out of range")
        if self.feature.min() < 0 or self.feature.max() >= self.n_features:
            raise ValueError("forest feature index out of range")
        if not 0 <= self.max_depth <= 64:
            raise ValueError("forest depth out of range")
