"""``python -m app.eval bgl``: the engine on a Loghub BGL structured log, scored per line.

Each line becomes one event, in file order: ``service`` = ``Component``, ``message`` = ``Content``,
``timestamp`` = ``Time`` (``2005-06-03-15.42.50.675872``, microseconds kept; the Unix
``Timestamp`` column when ``Time`` is absent or unreadable), ``level`` = ``Level`` mapped onto our
levels (``LEVELS`` below). No latency: BGL lines have none. ``Label`` is read only to score: ``-``
means normal, anything else (an alert tag such as ``KERNDTLB``) anomalous. The engine learns
online from what it scores, as in service; nothing is trained on the labels.

The report gives precision, recall and F1 per line, and the trivial rule "flag every FATAL line"
computed on the same lines as the floor to beat.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.eval.metrics import Confusion
from app.eval.replay import Replayer
from app.eval.report import describe_run, explanation_kind, publish, table
from app.schemas.events import MAX_MESSAGE_CHARS, Level

# BGL's severities (Oliner & Stearley 2007) onto ours. FAILURE and FATAL both mean a component
# stopped; SEVERE is a serious error that did not stop it.
LEVELS: dict[str, Level] = {
    "DEBUG": Level.DEBUG,
    "INFO": Level.INFO,
    "WARNING": Level.WARN,
    "WARN": Level.WARN,
    "ERROR": Level.ERROR,
    "SEVERE": Level.ERROR,
    "FAILURE": Level.CRITICAL,
    "FATAL": Level.CRITICAL,
}
REQUIRED = ("Label", "Component", "Level", "Content")
TIME_FORMAT = "%Y-%m-%d-%H.%M.%S.%f"


class BglDataError(ValueError):
    """The file cannot be replayed; the message names the line and the column."""


@dataclass(frozen=True, slots=True)
class BglLines:
    events: list[dict[str, Any]]
    anomalous: npt.NDArray[np.bool_]
    labels: list[str]  # the alert tag, "-" for a normal line
    raw_levels: list[str]


def _service(component: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", component.strip())[:128]
    return cleaned or "unknown"


def _timestamp(row: dict[Any, Any], line: int) -> datetime:
    text = str(row.get("Time", "") or "").strip()
    if text:
        try:
            return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    unix = str(row.get("Timestamp", "") or "").strip()
    if unix:
        try:
            return datetime.fromtimestamp(float(unix), UTC)
        except (ValueError, OverflowError, OSError):
            pass
    raise BglDataError(f"line {line}: neither Time nor Timestamp is a readable time")


def read_structured(path: Path) -> BglLines:
    """Read a ``*.log_structured.csv`` of Loghub's BGL (any length)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BglDataError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise BglDataError(f"{path}: missing column(s) {', '.join(missing)}")
    if "Time" not in frame.columns and "Timestamp" not in frame.columns:
        raise BglDataError(f"{path}: needs a Time or Timestamp column")
    events = []
    raw_levels = []
    for number, record in enumerate(frame.to_dict("records"), start=1):
        raw_level = str(record["Level"]).strip().upper()
        level = LEVELS.get(raw_level)
        if level is None:
            raise BglDataError(
                f"line {number}: Level {record['Level']!r} is not one of {', '.join(LEVELS)}"
            )
        raw_levels.append(raw_level)
        events.append(
            {
                "service": _service(str(record["Component"])),
                "level": level.value,
                "message": str(record["Content"])[:MAX_MESSAGE_CHARS],
                "timestamp": _timestamp(record, number),
            }
        )
    labels = [str(v).strip() for v in frame["Label"]]
    anomalous = np.array([label != "-" for label in labels], dtype=bool)
    return BglLines(events, anomalous, labels, raw_levels)


def run(
    path: Path, lines: BglLines, replayer: Replayer, info: dict[str, Any], json_out: Path | None
) -> dict[str, Any]:
    replay = replayer.replay(lines.events, keep_explanations=True)
    engine = Confusion.of(lines.anomalous, replay.flagged)
    fatal_rule = np.array([level in ("FATAL", "FAILURE") for level in lines.raw_levels])
    reference = Confusion.of(lines.anomalous, fatal_rule)

    by_tag = {}
    for tag in sorted({label for label in lines.labels if label != "-"}):
        rows = np.array([label == tag for label in lines.labels])
        by_tag[tag] = {"lines": int(rows.sum()), "flagged": int(replay.flagged[rows].sum())}
    by_level = {}
    for level in sorted(set(lines.raw_levels)):
        rows = np.array([lv == level for lv in lines.raw_levels])
        by_level[level] = {
            "lines": int(rows.sum()),
            "anomalous": int(lines.anomalous[rows].sum()),
            "flagged": int(replay.flagged[rows].sum()),
            "flagged_anomalous": int((replay.flagged & lines.anomalous)[rows].sum()),
        }
    false_alarms = Counter(
        explanation_kind(replay.explanations[i], 100)
        for i in np.flatnonzero(replay.flagged & ~lines.anomalous)
    )
    missed = Counter(
        (lines.raw_levels[i], lines.events[i]["message"][:60])
        for i in np.flatnonzero(~replay.flagged & lines.anomalous)
    )
    summary = {
        "run": info,
        "file": str(path),
        "lines": len(lines.events),
        "anomalous_lines": int(lines.anomalous.sum()),
        "level_mapping": {k: v.value for k, v in LEVELS.items()},
        "settings": replayer.settings_summary(),
        "insighthub": engine.as_dict(),
        "every_fatal_line": reference.as_dict(),
        "recall_by_alert_tag": by_tag,
        "by_level": by_level,
        "false_alarm_reasons": dict(false_alarms.most_common(10)),
        "missed_examples": [f"{lvl}: {msg}" for (lvl, msg), _ in missed.most_common(10)],
        "cost": replayer.cost.as_dict(),
    }
    publish(summary, json_out, render(summary))
    return summary


def render(summary: dict[str, Any]) -> str:
    rows = []
    for name, key in (("insighthub", "insighthub"), ("every FATAL line", "every_fatal_line")):
        c = summary[key]
        rows.append(
            [
                name,
                f"{c['precision']:.3f}",
                f"{c['recall']:.3f}",
                f"{c['f1']:.3f}",
                str(c["tp"]),
                str(c["fp"]),
                str(c["fn"]),
            ]
        )
    lines = [
        f"BGL: {summary['lines']} lines, {summary['anomalous_lines']} anomalous "
        f"({summary['file']})",
        "",
        table(["detector", "precision", "recall", "F1", "TP", "FP", "FN"], rows),
        "",
        "insighthub by BGL level (lines / anomalous / flagged / flagged anomalous):",
        table(
            ["level", "lines", "anomalous", "flagged", "flagged anomalous"],
            [
                [
                    lv,
                    str(v["lines"]),
                    str(v["anomalous"]),
                    str(v["flagged"]),
                    str(v["flagged_anomalous"]),
                ]
                for lv, v in summary["by_level"].items()
            ],
        ),
        "",
        "recall by alert tag: "
        + ", ".join(
            f"{tag} {v['flagged']}/{v['lines']}"
            for tag, v in summary["recall_by_alert_tag"].items()
        ),
        "most frequent false-alarm explanations: "
        + "; ".join(f"{n}x {r}" for r, n in summary["false_alarm_reasons"].items())
        if summary["false_alarm_reasons"]
        else "no false alarms",
        "",
        f"engine cost: {summary['cost']['events']} events, "
        f"{summary['cost']['wall_us_per_event']:.1f} us/event wall, "
        f"{summary['cost']['cpu_us_per_event']:.1f} us/event CPU",
        describe_run(summary["run"]),
    ]
    return "\n".join(lines)
