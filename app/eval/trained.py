"""``python -m app.eval.trained bgl FILE | synthetic``: the engine with a model *trained* on
messages, so the LSTM sequence detector (which exists only in such a model) is measured.

The other evaluations score with the bootstrap model, which is fitted without messages and so
has no LSTM. Here a model is fitted first (``AnomalyDetector.train``, as POST /train does):

* ``bgl``: on the first ``--train-fraction`` of the file's lines (labels unused, anomalies
  included, as an operator's history would be), then the rest is replayed and scored.
* ``synthetic``: on a normal stream of the same services (no incidents, another seed), then the
  usual evaluation stream is replayed and scored.

The same scored events are also replayed with the bootstrap model (the same-run baseline a
retrained model should beat), on a fresh engine and after the training events were streamed
through it live. Each trained replay is run twice on the same trained model, without and with
its LSTM (default weights), and every method's own flags are reported too (a method "flags" an
event when its score alone reaches the threshold), and, for the two next-template models,
DeepLog's plain rule "the line's template is not among the k most likely" (``top-k rule``),
which ignores how unlikely it was. Needs the ``[deep]`` extra to train the LSTM.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.eval.metrics import Confusion
from app.eval.report import table
from app.local import AnomalyDetector
from app.model import TrainingData
from app.schemas.events import Level
from app.settings import Settings

BoolArray = npt.NDArray[np.bool_]
METHODS = ("lstm_sequence", "sequence", "templates")
# DeepLog's own rule, without the graded score: flag every line outside the model's top k.
RANKED = ("lstm_sequence", "sequence")


def _training_data(events: Sequence[Mapping[str, Any]]) -> TrainingData:
    latency = np.array(
        [np.nan if e.get("latency_ms") is None else float(e["latency_ms"]) for e in events]
    )
    return TrainingData.from_columns(
        [str(e["service"]) for e in events],
        [Level(e["level"]) for e in events],
        latency,
        "eval",
        messages=[str(e.get("message") or "") for e in events],
    )


def replay_trained(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], with_lstm: bool
) -> tuple[BoolArray, dict[str, BoolArray], dict[str, Any]]:
    """Combined flags and each method's own flags on ``test``, after training on ``train``;
    without the LSTM, the same trained model is served with its LSTM taken out."""
    with tempfile.TemporaryDirectory(prefix="insighthub-eval-") as folder:
        detector = AnomalyDetector(Settings(artifacts_dir=Path(folder) / "artifacts"))
        settings = detector.settings
        detector.train(_training_data(train))
        if not with_lstm:
            detector.engine.swap(dataclasses.replace(detector.engine.model, lstm_sequence=None))
        manifest = dict(detector.engine.model.manifest)
        flagged = np.zeros(len(test), dtype=bool)
        cpu_seconds = 0.0
        names = [*METHODS, *(f"{name} top-k rule" for name in RANKED)]
        methods = {name: np.zeros(len(test), dtype=bool) for name in names}
        lstm = detector.engine.model.lstm_sequence
        top_k = {
            "lstm_sequence": lstm.top_k if lstm is not None else 0,
            "sequence": settings.sequence_top_k,
        }
        for start in range(0, len(test), 1000):
            began = time.process_time()
            results = detector.predict_batch(test[start : start + 1000])
            cpu_seconds += time.process_time() - began
            for offset, result in enumerate(results):
                flagged[start + offset] = result["is_anomaly"]
                for name in METHODS:
                    method = result["methods"].get(name)
                    methods[name][start + offset] = bool(method and method["is_anomaly"])
                for name in RANKED:
                    method = result["methods"].get(name)
                    rank = method["metrics"].get("next_template_rank") if method else None
                    methods[f"{name} top-k rule"][start + offset] = (
                        rank is not None and rank > top_k[name]
                    )
    manifest["cpu_us_per_event"] = 1e6 * cpu_seconds / max(len(test), 1)
    return flagged, methods, manifest


def replay_bootstrap(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], after_history: bool
) -> BoolArray:
    """Combined flags on ``test`` with the bootstrap model, the same-run baseline a trained model
    must beat: on a fresh engine, or after ``train`` was streamed through it live first (what an
    install that never retrained would have learned from the same history)."""
    with tempfile.TemporaryDirectory(prefix="insighthub-eval-") as folder:
        detector = AnomalyDetector(Settings(artifacts_dir=Path(folder) / "artifacts"))
        if after_history:
            for start in range(0, len(train), 1000):
                detector.predict_batch(train[start : start + 1000])
        flagged = np.zeros(len(test), dtype=bool)
        for start in range(0, len(test), 1000):
            results = detector.predict_batch(test[start : start + 1000])
            flagged[start : start + len(results)] = [r["is_anomaly"] for r in results]
    return flagged


def _row(label: str, confusion: Confusion) -> list[str]:
    return [
        label,
        f"{confusion.precision:.3f}",
        f"{confusion.recall:.3f}",
        f"{confusion.f1:.3f}",
        str(confusion.tp),
        str(confusion.fp),
        str(confusion.fn),
    ]


def report(
    truth: BoolArray,
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    rows: BoolArray | None = None,
) -> str:
    keep = np.ones(truth.size, dtype=bool) if rows is None else rows
    lines: list[str] = []
    out: list[list[str]] = []
    for after_history in (False, True):
        label = "bootstrap model, " + ("history streamed first" if after_history else "fresh")
        flagged = replay_bootstrap(train, test, after_history)
        out.append(_row(label, Confusion.of(truth[keep], flagged[keep])))
    for with_lstm in (False, True):
        flagged, methods, manifest = replay_trained(train, test, with_lstm)
        label = "engine with the LSTM" if with_lstm else "engine without the LSTM"
        out.append(_row(label, Confusion.of(truth[keep], flagged[keep])))
        lines.append(
            f"{label}: {manifest['cpu_us_per_event']:.1f} us CPU per event "
            "(whole engine, batches of 1000)"
        )
        if with_lstm:
            for name, flags in methods.items():
                out.append(_row(f"{name} alone", Confusion.of(truth[keep], flags[keep])))
            lstm = manifest.get("lstm_sequence_parameters") or manifest.get("lstm_sequence_skipped")
            lines.append(f"lstm: {lstm}")
    lines.append(table(["run", "precision", "recall", "F1", "TP", "FP", "FN"], out))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.eval.trained", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bgl = commands.add_parser("bgl")
    bgl.add_argument("file", type=Path)
    bgl.add_argument("--train-fraction", type=float, default=0.5)
    bgl.add_argument(
        "--train-on",
        choices=("first", "last"),
        default="first",
        help="train on the first lines and score the rest (default), or train on the last ones "
        "and score the lines before them (BGL_2k_dev has most anomalies early)",
    )
    synthetic = commands.add_parser("synthetic")
    synthetic.add_argument("--seconds", type=float, default=1800.0)
    synthetic.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "bgl":
        from app.eval.bgl import read_structured

        lines = read_structured(args.file)
        n = len(lines.events)
        if args.train_on == "first":
            cut = int(n * args.train_fraction)
            fit_lines, scored = range(0, cut), range(cut, n)
        else:
            cut = n - int(n * args.train_fraction)
            fit_lines, scored = range(cut, n), range(0, cut)
        print(
            f"bgl {args.file.name}: trained on lines {fit_lines.start + 1}-{fit_lines.stop}, "
            f"scored lines {scored.start + 1}-{scored.stop} "
            f"({int(lines.anomalous[scored.start : scored.stop].sum())} anomalous)"
        )
        print(
            report(
                lines.anomalous[scored.start : scored.stop],
                lines.events[fit_lines.start : fit_lines.stop],
                lines.events[scored.start : scored.stop],
            )
        )
    else:
        from app.eval.synthetic import EVAL_SERVICES, evaluation_incidents, generate_stream

        stream = generate_stream(
            args.seconds,
            evaluation_incidents(args.seconds),
            EVAL_SERVICES,
            args.seed,
            varied_messages=True,
        )
        normal = generate_stream(
            args.seconds, [], EVAL_SERVICES, args.seed + 1000, varied_messages=True
        )
        test = [e.model_dump() for e in stream.events]
        train = [e.model_dump() for e in normal.events]
        print(
            f"synthetic {args.seconds:g} s seed {args.seed}: trained on a normal stream of "
            f"{len(train)} events (seed {args.seed + 1000}), scored {len(test)}"
        )
        print(
            report(
                np.asarray(stream.labels, dtype=bool),
                train,
                test,
                np.asarray(stream.scored, dtype=bool),
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
