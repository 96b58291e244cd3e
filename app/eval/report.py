"""What every evaluation report records: when, on which commit, with which command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def settings_env() -> list[str]:
    """The engine settings given in the environment: part of the command that reproduces a run."""
    from app.settings import Settings

    # The replay always uses a temporary artifacts folder, so that setting plays no part.
    fields = {f"INSIGHTHUB_{name.upper()}" for name in Settings.model_fields} - {
        "INSIGHTHUB_ARTIFACTS_DIR"
    }
    return [
        f"{name}={shlex.quote(value)}"
        for name, value in sorted(os.environ.items())
        if name.upper() in fields
    ]


def run_info(argv: list[str]) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(status) if status is not None else None,
        "command": " ".join([*settings_env(), "python -m app.eval", shlex.join(argv)]),
        "python": sys.version.split()[0],
    }


def describe_run(info: dict[str, Any]) -> str:
    dirty = " (with uncommitted changes)" if info.get("git_dirty") else ""
    return f"run {info['date']} on commit {info['git_commit']}{dirty}\nreproduce: {info['command']}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, readable as plain text too."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def explanation_kind(explanation: str, width: int) -> str:
    """An explanation with its numbers masked, so that false alarms group by kind."""
    return re.sub(r"\d+(\.\d+)?", "N", explanation)[:width]


def publish(summary: dict[str, Any], json_out: Path | None, rendered: str) -> None:
    """Write the summary as JSON where asked, and print its tables."""
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(rendered)
