"""Command line: ``python -m app train FILE``, ``score '{...}'`` and ``serve``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument(
        "--artifacts", type=Path, help="model folder (default: INSIGHTHUB_ARTIFACTS_DIR)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train on a CSV or JSON-lines file and store a version"
    )
    train.add_argument("file", type=Path)
    train.add_argument("--no-activate", action="store_true", help="store without serving it")
    score = commands.add_parser("score", help="score one event given as JSON")
    score.add_argument(
        "event", help='e.g. \'{"service": "api", "level": "ERROR", "latency_ms": 900}\''
    )
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        import uvicorn

        uvicorn.run("app.main:app", host=args.host, port=args.port)
        return 0

    from app.datasets import DataFileError, load_training_file
    from app.errors import field_errors, summarise
    from app.local import AnomalyDetector

    detector = AnomalyDetector(artifacts_dir=args.artifacts)
    if args.command == "train":
        try:
            data = load_training_file(args.file)
        except DataFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        settings = detector.settings
        # The same bounds as POST /train: a model fitted on a handful of rows is not a model.
        if not settings.train_min_rows <= len(data) <= settings.train_max_rows:
            print(
                f"error: {args.file}: {len(data)} rows given; between {settings.train_min_rows} "
                f"and {settings.train_max_rows} are needed",
                file=sys.stderr,
            )
            return 2
        version = detector.train(data, activate=not args.no_activate)
        print(
            json.dumps(
                {"model_version": version, "rows": len(data), "activated": not args.no_activate}
            )
        )
        return 0
    try:
        payload = json.loads(args.event)
        result = detector.predict(payload)
    except json.JSONDecodeError as exc:
        print(f"error: event is not JSON: {exc.msg}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"error: {summarise(field_errors(exc.errors()))}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
