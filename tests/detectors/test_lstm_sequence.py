"""The DeepLog LSTM (``lstm_sequence``): it learns a dependency longer than the n-gram's two
templates, its numpy forward pass equals torch's, it survives the model store, it scores one event
alone exactly as in a batch, and without torch it is unavailable and says why.

Training needs the ``[deep]`` extra (torch). ``scripts/setup.sh dev`` installs it, so these tests
run in CI; elsewhere the torch ones skip, unless ``CI`` is set, where a missing torch fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from app.detectors import DETECTOR_TYPES
from app.detectors.base import ScoringContext
from app.detectors.lstm_sequence import (
    UNKNOWN,
    LstmSequenceDetector,
    fit_on_events,
    torch_missing_reason,
)
from app.engine import ScoringEngine
from app.model import TrainingData, fit_model
from app.model_store import ModelStore
from app.schemas.events import Level, LogEvent
from app.sequences import SequenceStore
from app.template_history import MAX_WINDOW, NO_HISTORY, TemplateHistory
from app.templates import NO_TEMPLATE
from tests.conftest import make_settings, start_app
from tests.helpers import T0

IntArray = npt.NDArray[np.int64]

if torch_missing_reason() is not None and os.environ.get("CI"):
    pytest.fail("CI installs the [deep] extra: torch must be importable", pytrace=False)
needs_torch = pytest.mark.skipif(
    torch_missing_reason() is not None, reason="needs the [deep] extra (torch)"
)

STARTS = 3
FILL = 3
WINDOW = 5
FILLER = 50


def blocks(n: int, seed: int) -> IntArray:
    """Blocks ``start_s, filler x FILL, end_s``: each end is fixed by the start FILL + 1 lines
    back, which an order-2 model (it sees only fillers there) cannot know."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for s in rng.integers(0, STARTS, n).tolist():
        out += [100 + s, *[FILLER] * FILL, 200 + s]
    return np.asarray(out, dtype=np.int64)


def small_lstm(**overrides: Any) -> LstmSequenceDetector:
    params: dict[str, Any] = {
        "window": WINDOW,
        "top_k": 1,
        "epochs": 30,
        "min_steps": 0,
        "hidden": 32,
        "learning_rate": 0.01,
    }
    return LstmSequenceDetector(**(params | overrides))


@pytest.fixture(scope="module")
def fitted() -> LstmSequenceDetector:
    if torch_missing_reason() is not None:
        pytest.skip("needs the [deep] extra (torch)")
    return small_lstm().fit_sequences([blocks(150, 0)])


def random_weights(classes: int, embedding: int, hidden: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    shapes = {
        "embedding": (classes, embedding),
        "w_ih": (4 * hidden, embedding),
        "w_hh": (4 * hidden, hidden),
        "b_gates": (4 * hidden,),
        "w_out": (classes, hidden),
        "b_out": (classes,),
    }
    arrays: dict[str, Any] = {k: rng.normal(0.0, 0.5, s) for k, s in shapes.items()}
    arrays["vocabulary"] = np.arange(10, 10 + classes - 1, dtype=np.int64)
    arrays["calibrator_quantiles"] = np.linspace(0.0, 2.0, 5)
    arrays["calibrator_levels"] = np.linspace(0.0, 1.0, 5)
    arrays["calibrator_tail"] = np.array([1.8, 0.5])
    arrays["outside_share"] = np.array([0.1])
    return arrays


# -- learning ---------------------------------------------------------------------------------


def test_lstm_learns_a_dependency_the_ngram_cannot(fitted: LstmSequenceDetector) -> None:
    test = blocks(60, 5)
    windows = fitted.classes_of(sliding_window_view(test[:-1], WINDOW))
    actual = test[WINDOW:]
    ends = np.flatnonzero(actual >= 200)
    wrong = actual.copy()
    wrong[ends] = 200 + (actual[ends] - 200 + 1) % STARTS
    _, _, right_rank = fitted.judge(windows, fitted.classes_of(actual))
    _, _, wrong_rank = fitted.judge(windows, fitted.classes_of(wrong))
    assert np.all(right_rank[ends] == 1)  # the right end is the LSTM's first guess
    assert np.all(wrong_rank[ends] > 1)  # a wrong end is outside its top 1
    # The order-2 n-gram, trained on the same stream, ranks a right and a wrong end alike.
    ngram = SequenceStore(top_k=1)
    ngram.observe(["s"] * 750, blocks(150, 0))
    right = ngram.observe(["s"] * len(actual), actual).rank[ends]
    ngram = SequenceStore(top_k=1)
    ngram.observe(["s"] * 750, blocks(150, 0))
    wrong_ngram = ngram.observe(["s"] * len(wrong), wrong).rank[ends]
    assert np.all(right > 1)
    assert np.all(wrong_ngram > 1)


def test_fit_refuses_too_few_windows() -> None:
    if torch_missing_reason() is not None:
        pytest.skip("needs the [deep] extra (torch)")
    with pytest.raises(ValueError, match="at least"):
        small_lstm().fit_sequences([np.arange(20, dtype=np.int64)])
    detector, reason = fit_on_events(
        np.zeros(10, dtype=np.int64), np.arange(10, dtype=np.int64), np.arange(10)
    )
    assert detector is None
    assert reason is not None
    assert "at least" in reason


def test_vocabulary_keeps_the_most_frequent_known_templates() -> None:
    if torch_missing_reason() is not None:
        pytest.skip("needs the [deep] extra (torch)")
    sequence = blocks(40, 1)
    detector = small_lstm(max_vocabulary=4, epochs=1).fit_sequences(
        [sequence], known_ids=[FILLER, 100, 101, 200, 201, 202]
    )
    assert detector.vocabulary_ is not None
    assert FILLER in detector.vocabulary_  # the most frequent
    assert detector.vocabulary_.size == 4
    assert not set(detector.vocabulary_.tolist()) & {102}  # not a known id
    assert detector.classes_of([102, 99999])[0] == UNKNOWN


def test_training_windows_stay_inside_each_sequence_and_are_capped() -> None:
    detector = LstmSequenceDetector(window=3, max_windows=40)
    detector.vocabulary_ = np.arange(100, dtype=np.int64)  # class = id + 1
    first, second = np.arange(0, 30, dtype=np.int64), np.arange(50, 62, dtype=np.int64)
    rng = np.random.default_rng(0)
    inputs, targets = detector._windows([first, second, np.arange(70, 73)], rng)
    assert inputs.shape == (36, 3)  # 27 + 9 + 0 windows, under the cap of 40: all kept
    detector.max_windows = 10
    capped, capped_targets = detector._windows([first, second], rng)
    assert capped.shape == (10, 3)
    for rows, nexts in ((inputs, targets), (capped, capped_targets)):
        # Consecutive ids: each window is the three ids before its target, never across a gap.
        assert np.array_equal(rows, nexts[:, None] + np.arange(-3, 0))


# -- numpy inference --------------------------------------------------------------------------


@needs_torch
def test_numpy_forward_pass_equals_torch() -> None:
    import torch

    from app.detectors.lstm_sequence import _Network

    torch.manual_seed(3)
    network = _Network(classes=7, embedding=4, hidden=6)
    arrays = network.export() | {
        "vocabulary": np.arange(6, dtype=np.int64),
        "calibrator_quantiles": np.linspace(0.0, 1.0, 3),
        "calibrator_levels": np.linspace(0.0, 1.0, 3),
        "calibrator_tail": np.array([0.9, 0.1]),
        "outside_share": np.array([0.2]),
    }
    detector = LstmSequenceDetector.from_arrays({"window": 9, "hidden": 6}, arrays)
    windows = np.random.default_rng(0).integers(0, 7, (64, 9))
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(windows)), dim=1).double().numpy()
    np.testing.assert_allclose(detector.next_template_probabilities(windows), expected, atol=1e-6)


def test_one_window_alone_equals_the_same_window_in_a_batch() -> None:
    detector = LstmSequenceDetector.from_arrays(
        {"window": 6}, random_weights(classes=9, embedding=5, hidden=16, seed=1)
    )
    windows = np.random.default_rng(2).integers(0, 9, (300, 6))
    together = detector.next_template_probabilities(windows)
    alone = np.vstack(
        [detector.next_template_probabilities(windows[i : i + 1]) for i in range(300)]
    )
    assert np.array_equal(together, alone)
    np.testing.assert_allclose(together.sum(axis=1), 1.0)


def test_from_arrays_rejects_inconsistent_weights() -> None:
    good = random_weights(classes=5, embedding=3, hidden=4, seed=0)
    LstmSequenceDetector.from_arrays({}, good)
    for key, bad in (
        ("w_hh", np.zeros((16, 5))),
        ("w_out", np.zeros((6, 4))),
        ("vocabulary", np.array([3, 2, 1, 0])),
        ("b_out", np.full(5, np.nan)),
        ("outside_share", np.array([0.0])),
    ):
        with pytest.raises(ValueError, match="lstm"):
            LstmSequenceDetector.from_arrays({}, good | {key: bad})
    with pytest.raises(ValueError, match="window"):
        LstmSequenceDetector.from_arrays({"window": MAX_WINDOW + 1}, good)


# -- the per-service history and scoring -----------------------------------------------------


def test_history_gives_each_event_its_services_previous_templates() -> None:
    history = TemplateHistory()
    ids = np.array([1, 2, NO_TEMPLATE, 3, 4], dtype=np.int64)
    windows = history.observe(["a", "a", "a", "b", "a"], ids, 2)
    assert windows.tolist() == [
        [NO_HISTORY, NO_HISTORY],
        [NO_HISTORY, 1],
        [NO_HISTORY, NO_HISTORY],  # no template: not judged, not remembered
        [NO_HISTORY, NO_HISTORY],
        [1, 2],
    ]
    assert history.observe(["a"], np.array([5]), 3).tolist() == [[1, 2, 4]]
    with pytest.raises(ValueError, match="window"):
        history.observe(["a"], np.array([5]), MAX_WINDOW + 1)


def _context(history: IntArray, targets: IntArray) -> ScoringContext:
    from app.templates import TemplateStore

    n = targets.size
    events = [LogEvent(service="s", level=Level.INFO, message="x") for _ in range(n)]
    from app.baselines import BaselineStore
    from app.events import EventBatch
    from app.features import feature_matrix
    from app.windows import WindowStore

    batch = EventBatch.from_events(events, received_at=T0.timestamp())
    view = TemplateStore(100, 0.5, 100, 10).observe(batch.services, ["x"] * n)
    templates = view._replace(template_id=targets)
    return ScoringContext(
        batch,
        feature_matrix(np.zeros(n), np.zeros(n)),
        BaselineStore(20, 3600.0, 10).observe(batch),
        WindowStore(300.0, 60, 10, 3600.0, 10).observe(batch),
        templates,
        template_history=history,
    )


def test_rarity_is_one_in_the_top_k_graded_outside_and_unjudged_without_history(
    fitted: LstmSequenceDetector,
) -> None:
    assert fitted.vocabulary_ is not None
    # Raw template ids: a block opened by 100, three fillers in: its end 200 comes next.
    window = [201, 100, FILLER, FILLER, FILLER]
    history = np.array([window, window, [NO_HISTORY, *window[1:]]], dtype=np.int64)
    output = fitted.rarity(_context(history, np.array([200, 201, 201], dtype=np.int64)))
    assert output.rarity[0] == 1.0
    assert 0.0 < output.rarity[1] < 0.05  # a wrong end: in the tail, graded, not 0
    assert output.rarity[2] == 1.0
    assert np.isnan(output.metrics["next_template_rank"][2])
    assert output.metrics["next_template_rank"][:2].tolist() == [
        1.0,
        float(fitted.judge(fitted.classes_of([window]), fitted.classes_of([201]))[2][0]),
    ]


def test_rarity_outside_the_top_k_is_the_held_out_share_floored_by_the_network() -> None:
    arrays = random_weights(classes=9, embedding=4, hidden=8, seed=4)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("calibrator_")}
    arrays["outside_share"] = np.array([0.01])  # no calibrator: too few outside windows held out
    detector = LstmSequenceDetector.from_arrays({"window": 3, "top_k": 2}, arrays)
    rng = np.random.default_rng(5)
    windows = rng.integers(10, 18, (200, 3))  # raw template ids 10..17 = classes 1..8
    targets = rng.integers(10, 18, 200)
    output = detector.rarity(_context(windows, targets))
    tail, _, rank = detector.judge(detector.classes_of(windows), detector.classes_of(targets))
    outside = rank > 2
    assert outside.any()
    assert not outside.all()
    np.testing.assert_array_equal(output.rarity[~outside], 1.0)
    np.testing.assert_array_equal(output.rarity[outside], np.maximum(tail[outside], 0.01))


# -- the model store and the API -------------------------------------------------------------


def block_training_data(n_blocks: int, seed: int) -> TrainingData:
    names = ("alpha", "bravo", "charlie")
    messages: list[str] = []
    services: list[str] = []
    for template in blocks(n_blocks, seed).tolist():
        if template == FILLER:
            messages.append("step running fine")
        elif template < 200:
            messages.append(f"{names[template - 100]} begins")
        else:
            messages.append(f"{names[template - 200]} finished ok now")
        services.append("api")
    n = len(messages)
    return TrainingData.from_columns(
        services, [Level.INFO] * n, np.full(n, 10.0), "test", messages=messages
    )


@needs_torch
def test_model_store_round_trip_scores_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = fit_model(block_training_data(150, 0), {"n_estimators": 20}, warmup=10)
    assert "lstm_sequence_parameters" in result.description
    store = ModelStore(tmp_path)
    saved = store.save(result)
    # Loading and scoring need no torch: "import torch" fails from here on.
    monkeypatch.setitem(sys.modules, "torch", None)
    loaded = store.load(saved.version)
    assert saved.lstm_sequence is not None
    assert loaded.lstm_sequence is not None
    windows = np.random.default_rng(0).integers(0, 5, (20, 10))
    np.testing.assert_array_equal(
        saved.lstm_sequence.next_template_probabilities(windows),
        loaded.lstm_sequence.next_template_probabilities(windows),
    )
    # Served: one request of many events equals the same events one request at a time.
    settings = make_settings(tmp_path)
    block = ["alpha begins", *["step running fine"] * FILL, "alpha finished ok now"]
    stream = [
        LogEvent(service="api", level=Level.INFO, message=m, timestamp=T0)
        for m in block * 6 + [*block[:-1], "bravo finished ok now"]
    ]
    together = ScoringEngine(settings, loaded).score(stream)
    single_engine = ScoringEngine(settings, loaded)
    alone = [single_engine.score([e])[0] for e in stream]
    methods = [r["methods"]["lstm_sequence"] for r in together]
    assert methods == [r["methods"]["lstm_sequence"] for r in alone]
    ranks = [m["metrics"]["next_template_rank"] for m in methods]
    assert ranks[:10] == [None] * 10  # nothing judged before a full window of 10
    assert ranks[14] == 1  # alpha's end after alpha began: the first guess
    # bravo's end after alpha began: the default top 5 of 8 classes still holds it, but the
    # network gives it next to no chance.
    assert ranks[-1] > 1
    assert methods[-1]["metrics"]["next_template_probability"] < 0.01


def test_without_torch_the_lstm_is_skipped_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    reason = torch_missing_reason()
    assert reason is not None
    assert "PyTorch" in reason
    assert ".[deep]" in reason
    result = fit_model(block_training_data(60, 0), {"n_estimators": 20}, warmup=10)
    assert "lstm_sequence_parameters" not in result.description
    assert result.description["lstm_sequence_skipped"] == reason
    assert not any(key.startswith("lstm_") for key in result.arrays)
    with pytest.raises(ImportError):
        small_lstm().fit_sequences([blocks(50, 0)])


async def test_detectors_lists_the_lstm_as_unavailable_without_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    async for running in start_app(make_settings(tmp_path)):
        listed = await _detector(running.client, "lstm_sequence")
        assert listed["available"] is False
        assert "PyTorch" in listed["reason"]
        assert "pip install '.[deep]'" in listed["reason"]


async def test_detectors_lists_why_the_active_model_has_no_lstm(tmp_path: Path) -> None:
    if torch_missing_reason() is not None:
        pytest.skip("needs the [deep] extra (torch)")
    async for running in start_app(make_settings(tmp_path)):  # the bootstrap model: no messages
        listed = await _detector(running.client, "lstm_sequence")
        assert listed["available"] is False
        assert "log events with messages" in listed["reason"]


@needs_torch
async def test_detectors_lists_the_lstm_available_with_a_model_that_has_one(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    store = ModelStore(settings.artifacts_dir)
    model = store.save(fit_model(block_training_data(150, 0), {"n_estimators": 20}, warmup=10))
    store.activate(model.version)
    assert DETECTOR_TYPES["lstm_sequence"].available()
    async for running in start_app(settings):
        listed = await _detector(running.client, "lstm_sequence")
        assert listed["available"] is True
        assert listed["reason"] is None
        assert listed["parameters"]["window"] == 10
        scored = await running.client.post(
            "/score", json={"service": "api", "level": "INFO", "message": "alpha begins"}
        )
        assert "lstm_sequence" in scored.json()["methods"]


async def _detector(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get("/detectors")
    assert response.status_code == 200
    found: dict[str, Any] = {d["name"]: d for d in response.json()["detectors"]}[name]
    return found
