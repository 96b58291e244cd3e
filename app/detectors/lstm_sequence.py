"""DeepLog's LSTM: is each message's template among the k most likely next ones?

Du et al., "DeepLog: Anomaly Detection and Diagnosis from System Logs through Deep Learning"
(CCS 2017): the last ``h`` template ids of a service go through an embedding and an LSTM, a softmax
over template ids predicts the next one, and a line whose template is not among the ``k`` most
likely is anomalous. Unlike the order-2 n-gram of the ``sequence`` detector, the LSTM can use a
dependency further back than two lines (which template opened a block, many lines ago).

Training needs PyTorch (the optional ``[deep]`` extra) and runs at model fit time, in the training
process. The fitted weights are stored as plain arrays with the model, and scoring evaluates the
network with numpy: the serving path never imports torch.

Rarity: 1 when the template is in the top ``k`` (as in DeepLog). Otherwise the probability that a
normal event is outside the top ``k`` *and* at least this surprising, from held-out training
windows (20%): ``P(outside) * P(surprise >= s | outside)``, with ``surprise = -log(mass)`` and
``mass`` the network's probability of next templates at most as likely as the one observed;
``P(outside)`` is ``(outside + 1) / (held out + 2)`` (a held-out set of ``n`` windows cannot show
anything rarer than about ``1/n``) and the conditional tail is a ``TailCalibrator`` over the
outside windows' surprises (1 when fewer than two were outside). The network's own ``mass`` is a
floor, so neither an over-confident network nor a small held-out set alone makes an event look
rarer than it is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt

from app.detectors.base import Detector, MethodOutput, NotFittedError, ScoringContext
from app.detectors.calibration import MIN_RARITY, TailCalibrator
from app.template_history import MAX_WINDOW, NO_HISTORY

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

UNKNOWN = 0  # the class of every template outside the vocabulary (including ones never seen)
MIN_WINDOWS = 50  # training windows below which no network is fitted
VALIDATION_SHARE = 0.2


def torch_missing_reason() -> str | None:
    """Why the LSTM cannot be trained here, or None when PyTorch is importable."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return (
        "training needs PyTorch, which is not installed: pip install '.[deep]' "
        "(torch==2.13.0, CPU); the 'sequence' detector asks the same top-k question with an "
        "n-gram model meanwhile"
    )


def _sigmoid(x: FloatArray) -> FloatArray:
    # The tanh form: one ufunc, and no overflow for large |x| (exp(-x) would warn).
    result: FloatArray = 0.5 + 0.5 * np.tanh(0.5 * x)
    return result


class LstmSequenceDetector(Detector):
    """A batch detector over template windows (not over the feature matrix): ``fit_sequences``
    learns from each training service's template ids, ``rarity`` reads the engine's per-service
    template history (``ScoringContext.template_history``) and never learns."""

    name: ClassVar[str] = "lstm_sequence"
    method: ClassVar[str] = "LSTM next-template model (DeepLog top-k)"
    kind: ClassVar[Literal["batch", "online"]] = "batch"
    requires: ClassVar[tuple[str, ...]] = ("message templates", "per-service template history")

    @classmethod
    def absent_reason(cls) -> str:
        # Scoring needs only numpy (a model trained elsewhere scores here); training needs torch.
        return torch_missing_reason() or (
            "the active model has none: it is fitted by /train on log events with messages"
        )

    vocabulary_: IntArray | None  # template ids of classes 1..V, sorted
    arrays_: dict[str, FloatArray] | None
    outside_share_: float | None  # P(a held-out window's next template is outside the top k)
    calibrator_: TailCalibrator | None  # surprise among those outside; None if too few

    def __init__(
        self,
        window: int = 10,
        embedding: int = 16,
        hidden: int = 32,
        top_k: int = 5,
        max_vocabulary: int = 256,
        epochs: int = 6,
        min_steps: int = 600,
        max_windows: int = 20_000,
        batch_size: int = 128,
        learning_rate: float = 0.01,
        random_state: int = 42,
    ) -> None:
        self.window = window
        self.embedding = embedding
        self.hidden = hidden
        self.top_k = top_k
        self.max_vocabulary = max_vocabulary
        self.epochs = epochs
        self.min_steps = min_steps
        self.max_windows = max_windows
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.vocabulary_ = None
        self.arrays_ = None
        self.outside_share_ = None
        self.calibrator_ = None

    def get_params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "embedding": self.embedding,
            "hidden": self.hidden,
            "top_k": self.top_k,
            "max_vocabulary": self.max_vocabulary,
            "epochs": self.epochs,
            "min_steps": self.min_steps,
            "max_windows": self.max_windows,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "random_state": self.random_state,
        }

    @property
    def is_fitted(self) -> bool:
        return self.arrays_ is not None and self.outside_share_ is not None

    # -- fitting (needs torch) -----------------------------------------------------------------

    def classes_of(self, template_ids: npt.ArrayLike) -> IntArray:
        """Class index of each template id: 1..V in the vocabulary, ``UNKNOWN`` otherwise."""
        if self.vocabulary_ is None:
            raise NotFittedError("lstm_sequence is not fitted")
        ids = np.asarray(template_ids, dtype=np.int64)
        vocabulary = self.vocabulary_
        if vocabulary.size == 0:
            return np.zeros(ids.shape, dtype=np.int64)
        position = np.minimum(np.searchsorted(vocabulary, ids), vocabulary.size - 1)
        classes: IntArray = np.where(vocabulary[position] == ids, position + 1, UNKNOWN)
        return classes

    def _windows(
        self, sequences: Sequence[IntArray], rng: np.random.Generator
    ) -> tuple[IntArray, IntArray]:
        """(previous ``window`` classes, next class) pairs inside the sequences, at most
        ``max_windows`` of them, drawn at random when there are more. Only the chosen windows
        are materialised: a million events would otherwise take ``window`` times their memory."""
        h = self.window
        classes = [self.classes_of(s) for s in sequences if len(s) > h]
        if not classes:
            return np.zeros((0, h), dtype=np.int64), np.zeros(0, dtype=np.int64)
        flat = np.concatenate(classes)
        offsets = np.cumsum([0, *(c.size for c in classes[:-1])])
        # Absolute index of every target that has a full window before it in its own sequence.
        targets = np.concatenate(
            [offset + np.arange(h, c.size) for offset, c in zip(offsets, classes, strict=True)]
        )
        if targets.size > self.max_windows:
            targets = np.sort(rng.choice(targets, self.max_windows, replace=False))
        windows = flat[targets[:, None] + np.arange(-h, 0)]
        return windows.astype(np.int64), flat[targets].astype(np.int64)

    def fit_sequences(
        self, sequences: Sequence[IntArray], known_ids: npt.ArrayLike | None = None
    ) -> Self:
        """Learn from each service's template ids in event order (``NO_TEMPLATE`` already
        removed). ``known_ids`` limits the vocabulary to templates the stored miner keeps.
        Raises ImportError without torch and ValueError with too few windows."""
        import torch

        if not 1 <= self.window <= MAX_WINDOW:
            raise ValueError(f"window must be within 1..{MAX_WINDOW}")
        everything = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
            if sequences
            else np.zeros(0, dtype=np.int64)
        )
        if known_ids is not None:
            everything = everything[np.isin(everything, np.asarray(known_ids, dtype=np.int64))]
        ids, counts = np.unique(everything[everything >= 0], return_counts=True)
        # The most frequent templates, ties to the lower id (stable order of np.unique's output).
        keep = np.argsort(-counts, kind="stable")[: self.max_vocabulary]
        self.vocabulary_ = np.sort(ids[keep]).astype(np.int64)
        rng = np.random.default_rng(self.random_state)
        inputs, targets = self._windows(sequences, rng)
        if targets.size < MIN_WINDOWS:
            self.vocabulary_ = None
            raise ValueError(
                f"the LSTM needs at least {MIN_WINDOWS} windows of {self.window + 1} templates"
            )
        order = rng.permutation(targets.size)
        held = max(1, int(targets.size * VALIDATION_SHARE))
        validation, training = order[:held], order[held:]

        classes = int(self.vocabulary_.size) + 1
        torch.manual_seed(self.random_state)
        network = _Network(classes, self.embedding, self.hidden)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        loss_of = torch.nn.CrossEntropyLoss()
        x_all = torch.from_numpy(inputs[training])
        y_all = torch.from_numpy(targets[training])
        generator = torch.Generator().manual_seed(self.random_state)
        # One thread: training shares the machine with the scoring process, which must not
        # wait for cores while a model fits.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            network.train()
            # A small training set gets more passes: at least ``min_steps`` gradient steps.
            batches = -(-int(y_all.shape[0]) // self.batch_size)
            for _ in range(max(self.epochs, -(-self.min_steps // batches))):
                shuffled = torch.randperm(int(y_all.shape[0]), generator=generator)
                for start in range(0, int(y_all.shape[0]), self.batch_size):
                    batch = shuffled[start : start + self.batch_size]
                    optimiser.zero_grad()
                    loss = loss_of(network(x_all[batch]), y_all[batch])
                    loss.backward()
                    optimiser.step()
            network.eval()
        finally:
            torch.set_num_threads(threads)
        self.arrays_ = network.export()
        tail, _, rank = self.judge(inputs[validation], targets[validation])
        outside = rank > self.top_k
        self.outside_share_ = (int(outside.sum()) + 1) / (outside.size + 2)
        self.calibrator_ = (
            TailCalibrator.fit(-np.log(np.maximum(tail[outside], MIN_RARITY)))
            if outside.sum() >= 2
            else None
        )
        return self

    # -- scoring (numpy only) ------------------------------------------------------------------

    def next_template_probabilities(self, windows: IntArray) -> FloatArray:
        """Softmax over the next class for each row of ``windows`` (class indices, oldest
        first), shape (n, V + 1). The same LSTM as torch.nn.LSTM, in float64."""
        if self.arrays_ is None:
            raise NotFittedError("lstm_sequence is not fitted")
        a = self.arrays_
        n = windows.shape[0]
        hidden = a["w_hh"].shape[1]
        # Input projection of every class, once: the embedding feeds only W_ih, so the whole
        # input half of each gate is a table lookup.
        projected = a["input_table"][windows]  # (n, h, 4H)
        h = np.zeros((n, hidden))
        c = np.zeros((n, hidden))
        for t in range(windows.shape[1]):
            # einsum's own loops, not BLAS: one event scored alone equals the same event in a
            # batch bit for bit (BLAS picks different kernels, and rounding, by batch size).
            gates = projected[:, t] + np.einsum("nh,gh->ng", h, a["w_hh"])
            squashed = _sigmoid(gates)  # all four quarters in one call; g uses tanh instead
            i, f, o = (
                squashed[:, :hidden],
                squashed[:, hidden : 2 * hidden],
                squashed[:, 3 * hidden :],
            )
            g = np.tanh(gates[:, 2 * hidden : 3 * hidden])
            c = f * c + i * g
            h = o * np.tanh(c)
        logits = np.einsum("nh,ch->nc", h, a["w_out"]) + a["b_out"]
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        result: FloatArray = weights / weights.sum(axis=1, keepdims=True)
        return result

    def judge(
        self, windows: IntArray, targets: IntArray
    ) -> tuple[FloatArray, FloatArray, IntArray]:
        """Per row: the mass of classes at most as likely as the target, the target's
        probability, and its rank (1 = the most likely)."""
        # Logs repeat: a batch holds far fewer distinct windows than rows, and each row's
        # result depends on its own window only, so the network runs once per distinct one.
        distinct, row_of = np.unique(windows, axis=0, return_inverse=True)
        probabilities = self.next_template_probabilities(distinct)[row_of.reshape(-1)]
        p = probabilities[np.arange(targets.size), targets]
        at_most = probabilities <= p[:, None]
        tail = np.minimum(np.where(at_most, probabilities, 0.0).sum(axis=1), 1.0)
        rank = 1 + np.count_nonzero(~at_most, axis=1).astype(np.int64)
        return tail, p, rank

    def rarity(self, context: ScoringContext) -> MethodOutput:
        if self.outside_share_ is None or self.arrays_ is None:
            raise NotFittedError("lstm_sequence is not fitted")
        history, templates = context.template_history, context.templates
        if history is None or templates is None:
            raise RuntimeError("lstm_sequence needs the engine's template history")
        n = history.shape[0]
        rarity = np.ones(n)
        probability = np.full(n, np.nan)
        rank_metric = np.full(n, np.nan)
        # Judged only with a full window: a service that has just (re)appeared has no context.
        judged = np.flatnonzero((history[:, -self.window :] != NO_HISTORY).all(axis=1))
        if judged.size:
            windows = self.classes_of(history[judged, -self.window :])
            targets = self.classes_of(templates.template_id[judged])
            tail, p, rank = self.judge(windows, targets)
            surprise = -np.log(np.maximum(tail, MIN_RARITY))
            conditional = self.calibrator_.rarity(surprise) if self.calibrator_ is not None else 1.0
            calibrated = np.maximum(tail, self.outside_share_ * conditional)
            rarity[judged] = np.where(rank > self.top_k, np.minimum(calibrated, 1.0), 1.0)
            probability[judged] = p
            rank_metric[judged] = rank
        return MethodOutput(
            rarity=rarity,
            metrics={"next_template_probability": probability, "next_template_rank": rank_metric},
        )

    # -- storage -------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        if self.vocabulary_ is None or self.arrays_ is None or self.outside_share_ is None:
            raise NotFittedError("lstm_sequence is not fitted")
        stored = {k: v for k, v in self.arrays_.items() if k != "input_table"}
        arrays = {"vocabulary": self.vocabulary_, "outside_share": np.array([self.outside_share_])}
        if self.calibrator_ is not None:
            arrays |= self.calibrator_.to_arrays("calibrator_")
        return arrays | stored

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> Self:
        detector = cls(**params)
        if not 1 <= detector.window <= MAX_WINDOW:
            raise ValueError(f"lstm window must be within 1..{MAX_WINDOW}")
        vocabulary = np.asarray(arrays["vocabulary"], dtype=np.int64)
        weights = {k: np.asarray(arrays[k], dtype=np.float64) for k in _WEIGHT_SHAPES}
        classes = vocabulary.size + 1
        embedding = weights["embedding"].shape[1] if weights["embedding"].ndim == 2 else -1
        hidden = weights["w_hh"].shape[1] if weights["w_hh"].ndim == 2 else -1
        sizes = {"C": classes, "E": embedding, "H": hidden, "4H": 4 * hidden}
        for key, shape in _WEIGHT_SHAPES.items():
            if weights[key].shape != tuple(sizes[s] for s in shape):
                raise ValueError(f"lstm array {key} has shape {weights[key].shape}")
        if vocabulary.ndim != 1 or np.any(np.diff(vocabulary) <= 0) or hidden < 1:
            raise ValueError("lstm vocabulary must be strictly increasing template ids")
        if not all(np.all(np.isfinite(w)) for w in weights.values()):
            raise ValueError("lstm holds non-finite weights")
        detector.vocabulary_ = vocabulary
        detector.arrays_ = _with_input_table(weights)
        share = np.asarray(arrays["outside_share"], dtype=np.float64)
        if share.shape != (1,) or not 0.0 < float(share[0]) <= 1.0:
            raise ValueError("lstm outside_share must be one probability in (0, 1]")
        detector.outside_share_ = float(share[0])
        detector.calibrator_ = (
            TailCalibrator.from_arrays(arrays, "calibrator_")
            if "calibrator_quantiles" in arrays
            else None
        )
        return detector


# Stored weights and their shapes (C classes, E embedding width, H hidden units; torch's gate
# order i, f, g, o along 4H).
_WEIGHT_SHAPES: dict[str, tuple[str, ...]] = {
    "embedding": ("C", "E"),
    "w_ih": ("4H", "E"),
    "w_hh": ("4H", "H"),
    "b_gates": ("4H",),
    "w_out": ("C", "H"),
    "b_out": ("C",),
}


def _with_input_table(weights: dict[str, FloatArray]) -> dict[str, FloatArray]:
    table = np.einsum("ce,ge->cg", weights["embedding"], weights["w_ih"]) + weights["b_gates"]
    return weights | {"input_table": table}


class _Network:
    """Embedding -> one-layer LSTM -> linear, in torch; built only while fitting."""

    def __init__(self, classes: int, embedding: int, hidden: int) -> None:
        import torch

        self.embed = torch.nn.Embedding(classes, embedding)
        self.lstm = torch.nn.LSTM(embedding, hidden, batch_first=True)
        self.out = torch.nn.Linear(hidden, classes)
        self.modules = torch.nn.ModuleList([self.embed, self.lstm, self.out])

    def parameters(self) -> Any:
        return self.modules.parameters()

    def train(self) -> None:
        self.modules.train()

    def eval(self) -> None:
        self.modules.eval()

    def __call__(self, windows: Any) -> Any:
        output, _ = self.lstm(self.embed(windows))
        return self.out(output[:, -1])

    def export(self) -> dict[str, FloatArray]:
        def array(tensor: Any) -> FloatArray:
            return np.asarray(tensor.detach().cpu().numpy(), dtype=np.float64)

        weights = {
            "embedding": array(self.embed.weight),
            "w_ih": array(self.lstm.weight_ih_l0),
            "w_hh": array(self.lstm.weight_hh_l0),
            # torch adds two biases to every gate; one sum is the same function.
            "b_gates": array(self.lstm.bias_ih_l0) + array(self.lstm.bias_hh_l0),
            "w_out": array(self.out.weight),
            "b_out": array(self.out.bias),
        }
        return _with_input_table(weights)


def fit_on_events(
    service_codes: IntArray,
    template_ids: IntArray,
    known_ids: npt.ArrayLike,
    random_state: int = 42,
) -> tuple[LstmSequenceDetector | None, str | None]:
    """The fitted LSTM for training events (each service's templates in event order), or None
    and why not (no torch, too few windows)."""
    reason = torch_missing_reason()
    if reason is not None:
        return None, reason
    kept = template_ids >= 0
    codes, ids = service_codes[kept], template_ids[kept]
    # A stable sort by service keeps each service's events in their original order.
    order = np.argsort(codes, kind="stable")
    codes, ids = codes[order], ids[order]
    boundaries = np.flatnonzero(np.diff(codes)) + 1
    sequences = np.split(ids, boundaries) if ids.size else []
    detector = LstmSequenceDetector(random_state=random_state)
    try:
        detector.fit_sequences(sequences, known_ids)
    except ValueError as exc:
        return None, str(exc)
    return detector, None
