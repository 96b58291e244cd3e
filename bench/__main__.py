"""``make bench`` / ``python -m bench``: every benchmark, one table, each figure with its ratio to
a baseline measured in the same run. Results go to bench/results/ (JSON and Markdown).

    python -m bench                 # everything (a few minutes)
    python -m bench --only a,f      # just the in-process sections
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Row, machine
from bench.http import Missing, bench_http
from bench.inprocess import bench_detectors, bench_predict

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = {
    "a": "in-process, one event",
    "b": "POST /score over HTTP",
    "c": "POST /score/batch over HTTP",
    "d": "memory",
    "e": "scoring while a 1M-event fit runs",
    "f": "cost per event of each stage and detector",
}


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    lines = [
        "| | figure | value | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        baseline = (
            f"{row.baseline_name}: {_number(row.baseline)} {row.unit}"
            if row.baseline is not None
            else row.baseline_name
        )
        ratio = row.ratio
        if row.better == "neutral" and row.baseline:
            shown = f"{row.value / row.baseline:.2f}x of baseline"
        elif ratio is None:
            shown = ""
        elif row.better == "higher":
            shown = f"{ratio:.2f} of baseline"
        else:
            shown = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        lines.append(
            f"| {row.section} | {row.name} | {_number(row.value)} {row.unit} | {baseline} | "
            f"{shown} | {row.target} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="abcdef", help="sections to run, e.g. a,f")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per HTTP test")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per HTTP run")
    args = parser.parse_args()
    wanted = set(args.only.replace(",", ""))
    started = time.monotonic()
    info = machine()
    print("machine:", json.dumps(info))
    rows: list[Row] = []
    missing: list[str] = []
    if "a" in wanted:
        rows += bench_predict()
    if "f" in wanted:
        rows += bench_detectors()
    if wanted & set("bcde"):
        try:
            rows += [
                row
                for row in bench_http(args.rounds, args.seconds, "".join(sorted(wanted)))
                if row.section in wanted
            ]
        except Missing as exc:
            missing.append(str(exc))
    rows.sort(key=lambda row: row.section)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    elapsed = time.monotonic() - started
    markdown = "\n".join(
        [
            table(rows),
            "",
            *(f"- {row.section} / {row.name}: {row.note}" for row in rows if row.note),
            *(f"- NOT MEASURED: {message}" for message in missing),
            "",
            f"Machine: {json.dumps(info)}; whole run {elapsed:.0f} s.",
        ]
    )
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "machine": info,
                "seconds": elapsed,
                "missing": missing,
                "rows": [row.as_dict() for row in rows],
            },
            indent=2,
        )
    )
    (RESULTS / "latest.md").write_text(markdown + "\n")
    print()
    print(markdown)
    print(f"\nwritten: {RESULTS / (stamp + '.json')} and {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
