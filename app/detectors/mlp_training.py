"""Training scikit-learn's ``MLPRegressor`` network (tanh, adam) without its per-minibatch overhead.

``MLPRegressor.fit`` spends ~3 s of CPU on the autoencoder's 5,000 rows: ~5,000 minibatch steps,
each a few dozen numpy calls on arrays of a few hundred numbers, so the time is Python and call
overhead, not arithmetic. ``train_network`` runs the same training with each minibatch's arithmetic
in numba-compiled kernels (~0.3 s, over half of it numpy's ``tanh``) and gives the same weights and
epoch count, bit for bit (tests/detectors/test_mlp_training.py checks it against scikit-learn):

- the Glorot-uniform draws and per-epoch shuffles come from one ``RandomState(random_state)``
  in scikit-learn's order (``np.random.RandomState`` itself draws them);
- matrix products go through BLAS, as numpy's ``@`` does: numba's ``np.dot`` calls the OpenBLAS
  dgemm that scipy ships, whose kernels give numpy's OpenBLAS bits on the operand layouts
  scikit-learn uses (a transposed operand is passed as a transposed view, not a copy: OpenBLAS
  may take another kernel for the copy, e.g. gemv for a one-row minibatch). Where numpy and scipy
  were built against different BLAS libraries the weights may differ in the last bits;
- ``tanh`` is numpy's own, called between the kernels: numpy's and the C library's (which numba
  calls) differ in the last bit for about a third of the inputs, and one bit early on changes
  every later weight;
- every other step is numpy's arithmetic in numpy's order: a sum over a minibatch's rows added
  row after row from the first (numpy's order across the rows of a C-ordered matrix of two or more
  columns), a single column's or a vector's sum pairwise (numpy's ``pairwise_sum``), Adam's
  moments, step size and update term by term, the L2 term by BLAS ``ddot``, and the stopping rule
  on the epoch's mean loss (``tol``, ``n_iter_no_change``).

Without numba, or with ``trainer="sklearn"``, scikit-learn trains the network itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.compiled import pairwise_sum
from app.detectors.compiled import compile_kernel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Trainer = Literal["compiled", "sklearn"]

# MLPRegressor's defaults for what the autoencoder leaves at its default.
ALPHA = 1e-4
LEARNING_RATE_INIT = 1e-3
BETA_1 = 0.9
BETA_2 = 0.999
EPSILON = 1e-8
TOL = 1e-4
N_ITER_NO_CHANGE = 10
MAX_BATCH_SIZE = 200


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
    """A trained network as ``MLPRegressor`` holds it: ``coefs`` (``inputs x outputs`` per layer),
    ``intercepts``, and ``n_iter``, the epochs run."""

    coefs: list[FloatArray]
    intercepts: list[FloatArray]
    n_iter: int


def _column_sums(matrix: FloatArray, out: FloatArray) -> None:
    """``np.sum(matrix, axis=0)`` of a C-ordered matrix in numpy's order: with two columns or more
    numpy's inner loop runs across a row, so the rows are added one after the other from the
    first; one column is a contiguous reduction, which numpy sums pairwise (``pairwise_sum``)."""
    rows, columns = matrix.shape
    if columns > 1:
        for j in range(columns):
            out[j] = matrix[0, j]
        for r in range(1, rows):
            for j in range(columns):
                out[j] += matrix[r, j]
        return
    out[0] = pairwise_sum(matrix.reshape(rows), rows)


_column_sums = compile_kernel(_column_sums, "void(float64[:, ::1], float64[::1])") or _column_sums


def _minibatch_layer(
    x: FloatArray,
    y: FloatArray,
    order: IntArray,
    start: int,
    stop: int,
    params: FloatArray,
    first_moments: FloatArray,
    second_moments: FloatArray,
    activations: FloatArray,
    widths: IntArray,
    batch_size: int,
    hyper: FloatArray,
    learning_rate: float,
    layer: int,
) -> float:
    """Layer ``layer``'s part of one minibatch step on the rows ``order[start:stop]``.

    Every layer: ``activations[layer + 1] = activations[layer] @ coefs[layer] +
    intercepts[layer]`` (the rows of ``x`` gathered into ``activations[0]`` first at layer 0).
    A hidden layer stops there, returning 0, for the caller to apply numpy's tanh. The output
    layer goes on: the loss, back-propagation and Adam's update of ``params`` and its moments, in
    place; it returns the minibatch's loss, L2 term included.

    ``params`` holds each layer's coefficients (row-major) then intercepts, layer after layer;
    ``activations`` each layer's values for ``batch_size`` rows, layer after layer, of which the
    minibatch's rows are the first (a C-ordered ``rows x width`` block). ``hyper`` is (alpha,
    beta_1, beta_2, epsilon); ``learning_rate`` is Adam's step size for this update
    (``learning_rate_init * sqrt(1 - beta_2**t) / (1 - beta_1**t)``, computed by the caller as
    scikit-learn computes it, in Python floats)."""
    alpha = hyper[0]
    beta_1 = hyper[1]
    beta_2 = hyper[2]
    epsilon = hyper[3]
    rows = stop - start
    n_layers = widths.shape[0] - 1
    if layer == 0:
        n_inputs = widths[0]
        for r in range(rows):
            source = order[start + r]
            for k in range(n_inputs):
                activations[r * n_inputs + k] = x[source, k]
    layer_param_at = 0
    layer_activation_at = 0
    for earlier in range(layer):
        layer_param_at += widths[earlier] * widths[earlier + 1] + widths[earlier + 1]
        layer_activation_at += batch_size * widths[earlier]
    n_in = widths[layer]
    n_out = widths[layer + 1]
    target_at = layer_activation_at + batch_size * n_in
    inputs = activations[layer_activation_at : layer_activation_at + rows * n_in].reshape(
        (rows, n_in)
    )
    outputs = activations[target_at : target_at + rows * n_out].reshape((rows, n_out))
    coefs = params[layer_param_at : layer_param_at + n_in * n_out].reshape((n_in, n_out))
    intercepts = params[layer_param_at + n_in * n_out : layer_param_at + n_in * n_out + n_out]
    np.dot(inputs, coefs, outputs)
    for r in range(rows):
        for j in range(n_out):
            outputs[r, j] += intercepts[j]
    if layer < n_layers - 1:
        return 0.0

    param_at = np.empty(n_layers, dtype=np.int64)
    activation_at = np.empty(n_layers + 1, dtype=np.int64)
    param_at[0] = 0
    activation_at[0] = 0
    for layer in range(n_layers):
        if layer + 1 < n_layers:
            param_at[layer + 1] = param_at[layer] + widths[layer] * widths[layer + 1]
            param_at[layer + 1] += widths[layer + 1]
        activation_at[layer + 1] = activation_at[layer] + batch_size * widths[layer]

    n_outputs = widths[n_layers]
    out_at = activation_at[n_layers]
    outputs = activations[out_at : out_at + rows * n_outputs].reshape((rows, n_outputs))
    delta = np.empty((rows, n_outputs))
    squares = np.empty((rows, n_outputs))
    for r in range(rows):
        source = order[start + r]
        for j in range(n_outputs):
            delta[r, j] = outputs[r, j] - y[source, j]
            difference = y[source, j] - outputs[r, j]
            squares[r, j] = difference * difference
    # squared_loss: 0.5 * (the columns' means over rows, then their mean).
    column_means = np.empty(n_outputs)
    _column_sums(squares, column_means)
    for j in range(n_outputs):
        column_means[j] /= rows
    # The mean of the column means: a contiguous vector, summed pairwise.
    mean_sum = np.empty(1)
    _column_sums(column_means.reshape((n_outputs, 1)), mean_sum)
    loss = 0.5 * (mean_sum[0] / n_outputs)
    penalty = 0.0
    for layer in range(n_layers):
        size = widths[layer] * widths[layer + 1]
        coefs_flat = params[param_at[layer] : param_at[layer] + size]
        penalty += np.dot(coefs_flat, coefs_flat)
    loss += (0.5 * alpha) * penalty / rows

    grads = np.empty_like(params)
    for layer in range(n_layers - 1, -1, -1):
        n_in = widths[layer]
        n_out = widths[layer + 1]
        at = param_at[layer]
        coefs = params[at : at + n_in * n_out].reshape((n_in, n_out))
        coef_grads = grads[at : at + n_in * n_out].reshape((n_in, n_out))
        intercept_grads = grads[at + n_in * n_out : at + n_in * n_out + n_out]
        inputs = activations[activation_at[layer] : activation_at[layer] + rows * n_in].reshape(
            (rows, n_in)
        )
        # The transposed view, as scikit-learn passes it: BLAS is told to transpose rather than
        # handed a copy, which could take another kernel.
        np.dot(inputs.T, delta, coef_grads)
        for i in range(n_in):
            for j in range(n_out):
                coef_grads[i, j] += alpha * coefs[i, j]
                coef_grads[i, j] /= rows
        _column_sums(delta, intercept_grads)
        for j in range(n_out):
            intercept_grads[j] /= rows
        if layer > 0:
            earlier = np.dot(delta, coefs.T)
            # tanh's derivative from its output: 1 - tanh**2.
            for r in range(rows):
                for k in range(n_in):
                    value = inputs[r, k]
                    earlier[r, k] *= 1.0 - value * value
            delta = earlier

    for i in range(params.shape[0]):
        grad = grads[i]
        first = beta_1 * first_moments[i] + (1.0 - beta_1) * grad
        second = beta_2 * second_moments[i] + (1.0 - beta_2) * (grad * grad)
        first_moments[i] = first
        second_moments[i] = second
        params[i] += -learning_rate * first / (np.sqrt(second) + epsilon)
    return float(loss)


_COMPILED_MINIBATCH = compile_kernel(
    _minibatch_layer,
    "float64(float64[:, ::1], float64[:, ::1], int64[::1], int64, int64, float64[::1], "
    "float64[::1], float64[::1], float64[::1], int64[::1], int64, float64[::1], float64, int64)",
)
COMPILED_AVAILABLE = _COMPILED_MINIBATCH is not None


def _glorot_network(
    widths: list[int], random_state: np.random.RandomState
) -> tuple[list[FloatArray], list[FloatArray]]:
    """``MLPRegressor``'s initial weights for a tanh network: each layer's coefficients, then its
    intercepts, uniform in +-sqrt(6 / (fan_in + fan_out)), drawn layer by layer."""
    coefs: list[FloatArray] = []
    intercepts: list[FloatArray] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        coefs.append(random_state.uniform(-bound, bound, (fan_in, fan_out)))
        intercepts.append(random_state.uniform(-bound, bound, fan_out))
    return coefs, intercepts


def _compiled_network(
    x: FloatArray,
    y: FloatArray,
    hidden: tuple[int, ...],
    max_iter: int,
    random_state: int,
) -> TrainedNetwork:
    kernel = _COMPILED_MINIBATCH
    if kernel is None:
        raise RuntimeError("the compiled trainer needs numba, which is not installed")
    n_samples = x.shape[0]
    widths = [x.shape[1], *hidden, y.shape[1]]
    n_layers = len(widths) - 1
    rng = np.random.RandomState(random_state)
    coefs, intercepts = _glorot_network(widths, rng)
    # Layer after layer, coefficients then intercepts: Adam's arithmetic is elementwise, so one
    # flat vector updates as scikit-learn's list of arrays does.
    params = np.concatenate(
        [part.ravel() for pair in zip(coefs, intercepts, strict=True) for part in pair]
    )
    first_moments = np.zeros_like(params)
    second_moments = np.zeros_like(params)
    batch_size = min(MAX_BATCH_SIZE, n_samples)
    layer_widths = np.array(widths, dtype=np.int64)
    activation_at = np.concatenate([[0], np.cumsum(np.array(widths) * batch_size)])
    activations = np.empty(int(activation_at[-1]))
    batches = [
        (start, min(start + batch_size, n_samples)) for start in range(0, n_samples, batch_size)
    ]
    # numpy's tanh on each hidden layer's block, for a full batch and for a short last one.
    hidden_blocks = {
        rows: [
            activations[activation_at[layer] : activation_at[layer] + rows * widths[layer]]
            for layer in range(1, n_layers)
        ]
        for rows in {stop - start for start, stop in batches}
    }
    hyper = np.array([ALPHA, BETA_1, BETA_2, EPSILON])
    sample_idx = np.arange(n_samples, dtype=np.int64)
    best_loss = np.inf
    no_improvement = 0
    t = 0
    n_iter = 0
    for _ in range(max_iter):
        # sklearn.utils.shuffle: a permutation of arange(n) by RandomState.shuffle, applied.
        permutation = np.arange(n_samples)
        rng.shuffle(permutation)
        sample_idx = np.ascontiguousarray(sample_idx[permutation], dtype=np.int64)
        accumulated_loss = 0.0
        for start, stop in batches:
            blocks = hidden_blocks[stop - start]
            t += 1
            learning_rate = float(LEARNING_RATE_INIT * np.sqrt(1 - BETA_2**t) / (1 - BETA_1**t))
            for layer in range(n_layers):
                batch_loss = kernel(
                    x,
                    y,
                    sample_idx,
                    start,
                    stop,
                    params,
                    first_moments,
                    second_moments,
                    activations,
                    layer_widths,
                    batch_size,
                    hyper,
                    learning_rate,
                    layer,
                )
                if layer < n_layers - 1:
                    np.tanh(blocks[layer], out=blocks[layer])
            accumulated_loss += batch_loss * (stop - start)
        n_iter += 1
        loss = accumulated_loss / n_samples
        # MLPRegressor's stopping rule without early stopping: more than n_iter_no_change epochs
        # in a row whose loss is not below the best so far by tol.
        if loss > best_loss - TOL:
            no_improvement += 1
        else:
            no_improvement = 0
        best_loss = min(best_loss, loss)
        if no_improvement > N_ITER_NO_CHANGE:
            break
    out_coefs: list[FloatArray] = []
    out_intercepts: list[FloatArray] = []
    at = 0
    for n_in, n_out in itertools.pairwise(widths):
        out_coefs.append(params[at : at + n_in * n_out].reshape(n_in, n_out).copy())
        at += n_in * n_out
        out_intercepts.append(params[at : at + n_out].copy())
        at += n_out
    return TrainedNetwork(out_coefs, out_intercepts, n_iter)


def _sklearn_network(
    x: FloatArray,
    y: FloatArray,
    hidden: tuple[int, ...],
    max_iter: int,
    random_state: int,
) -> TrainedNetwork:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    network = MLPRegressor(
        hidden_layer_sizes=hidden,
        activation="tanh",
        max_iter=max_iter,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        # Stopping at max_iter is the bounded training time we chose, not an error.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # One output goes in as a vector: MLPRegressor warns about a one-column matrix, then
        # trains on it as a one-column matrix all the same.
        network.fit(x, y[:, 0] if y.shape[1] == 1 else y)
    return TrainedNetwork(
        [np.asarray(w, dtype=np.float64) for w in network.coefs_],
        [np.asarray(b, dtype=np.float64) for b in network.intercepts_],
        int(network.n_iter_),
    )


def train_network(
    x: FloatArray,
    y: FloatArray,
    hidden: tuple[int, ...],
    max_iter: int,
    random_state: int,
    trainer: Trainer | None = None,
) -> TrainedNetwork:
    """The network ``MLPRegressor(hidden_layer_sizes=hidden, activation="tanh",
    max_iter=max_iter, random_state=random_state).fit(x, y)`` learns (its other parameters at
    their defaults: adam, alpha 1e-4, minibatches of up to 200 shuffled rows, tol 1e-4 over 10
    epochs), without a warning when it stops at ``max_iter``.

    ``trainer``: the compiled kernels (the default when numba is installed) or scikit-learn."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 1:
        raise ValueError("train_network needs 2-d x and y with the same rows")
    chosen = trainer or ("compiled" if COMPILED_AVAILABLE else "sklearn")
    if chosen == "compiled":
        if not COMPILED_AVAILABLE:
            raise RuntimeError("the compiled trainer needs numba, which is not installed")
        if not hidden or min(hidden) < 1:
            raise ValueError("the compiled trainer takes one hidden layer or more, none empty")
        return _compiled_network(x, y, hidden, max_iter, random_state)
    return _sklearn_network(x, y, hidden, max_iter, random_state)
