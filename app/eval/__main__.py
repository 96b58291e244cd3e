"""Evaluation anyone can run: ``python -m app.eval nab|bgl|synthetic`` (see ``--help``).

Every evaluation replays its data through the engine's public path (``AnomalyDetector``) on a
temporary bootstrap model, prints a results table, the engine's cost per event and the command
that reproduces it. Engine settings come from ``INSIGHTHUB_*`` environment variables as for the
service, so a change of setting can be evaluated without code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    nab = commands.add_parser("nab", help="Numenta Anomaly Benchmark: NAB results files + score")
    nab.add_argument("data_dir", type=Path, help="NAB data folder (<category>/<name>.csv)")
    nab.add_argument("--out", type=Path, required=True, help="results folder to write")
    nab.add_argument(
        "--labels",
        type=Path,
        help="label windows (default: DATA_DIR/../labels/combined_windows.json)",
    )
    nab.add_argument("--only", action="append", help="keep series whose key contains this")
    nab.add_argument("--floor-ms", type=float, default=None, help="latency of a series' minimum")
    nab.add_argument("--span-ms", type=float, default=None, help="latency range of a series")
    nab.add_argument("--seed", type=int, default=0, help="seed of the random reference detector")

    bgl = commands.add_parser("bgl", help="Loghub BGL structured log: per-line precision/recall/F1")
    bgl.add_argument("file", type=Path, help="e.g. BGL_2k.log_structured.csv")
    bgl.add_argument("--json", type=Path, help="also write the full report here")

    synthetic = commands.add_parser(
        "synthetic", help="generated multi-service stream with injected incidents"
    )
    synthetic.add_argument("--seconds", type=float, default=1800.0, help="stream length")
    synthetic.add_argument("--seed", type=int, default=7)
    synthetic.add_argument("--json", type=Path, help="also write the full report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(arguments)

    from app.eval.replay import replayer
    from app.eval.report import run_info
    from app.schemas.events import MAX_LATENCY_MS

    info = run_info(arguments)
    if args.command == "nab":
        from app.eval import nab

        labels = args.labels or nab.default_labels(args.data_dir)
        floor = nab.DEFAULT_FLOOR_MS if args.floor_ms is None else args.floor_ms
        span = nab.DEFAULT_SPAN_MS if args.span_ms is None else args.span_ms
        if floor < 0 or span <= 0 or floor + span > MAX_LATENCY_MS:
            print(
                "error: need --floor-ms >= 0, --span-ms > 0, and their sum <= 1 day",
                file=sys.stderr,
            )
            return 2
        try:
            corpus = nab.load_corpus(args.data_dir, labels, args.only)
        except nab.NabDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with replayer() as engine:
            try:
                nab.run(
                    corpus, args.data_dir, args.out, labels, engine, info, floor, span, args.seed
                )
            except OSError as exc:
                print(f"error: cannot write results to {args.out}: {exc}", file=sys.stderr)
                return 2
        return 0
    if args.command == "bgl":
        from app.eval import bgl

        try:
            lines = bgl.read_structured(args.file)
        except bgl.BglDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with replayer() as engine:
            bgl.run(args.file, lines, engine, info, args.json)
        return 0
    from app.eval import synthetic

    if args.seconds < synthetic.MIN_EVAL_SECONDS:
        print(f"error: --seconds must be at least {synthetic.MIN_EVAL_SECONDS:g}", file=sys.stderr)
        return 2
    with replayer() as engine:
        synthetic.run(args.seconds, args.seed, engine, info, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
