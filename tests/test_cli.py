"""``python -m app train FILE`` and ``python -m app score '{...}'``: run as a user would (a
subprocess with INSIGHTHUB_ARTIFACTS_DIR), plus in-process runs of ``main`` for the file formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.__main__ import main
from tests.conftest import copy_artifacts


def run_cli(artifacts: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSIGHTHUB_ARTIFACTS_DIR": str(artifacts)}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=artifacts.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_events_csv(path: Path, n: int, bad_row: int | None = None) -> Path:
    rng = np.random.default_rng(1)
    lines = ["service,level,latency_ms,timestamp,message"]
    for i in range(n):
        service = ("web", "db")[i % 2]
        level = "LOUD" if bad_row == i + 1 else ("ERROR" if i % 25 == 0 else "info")
        latency = round(float((30.0, 4.0)[i % 2] * rng.lognormal(0, 0.3)), 3)
        lines.append(f"{service},{level},{latency},2026-11-24T10:{i // 60:02d}:{i % 60:02d}Z,ok")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def artifacts(tmp_path: Path, bootstrapped_artifacts: Path) -> Path:
    return copy_artifacts(bootstrapped_artifacts, tmp_path / "artifacts")


def active(artifacts: Path) -> str:
    return (artifacts / "ACTIVE").read_text(encoding="utf-8").strip()


def manifest(artifacts: Path, version: str) -> dict[str, object]:
    text = (artifacts / "versions" / version / "manifest.json").read_text(encoding="utf-8")
    loaded: dict[str, object] = json.loads(text)
    return loaded


def test_train_then_score_as_a_user_would(tmp_path: Path, artifacts: Path) -> None:
    trained = run_cli(artifacts, "train", str(write_events_csv(tmp_path / "events.csv", 200)))
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["rows"] == 200
    assert summary["activated"] is True
    version = summary["model_version"]
    assert active(artifacts) == version
    assert manifest(artifacts, version)["source"] == "logs"
    assert manifest(artifacts, version)["services"] == 2

    event = {"service": "web", "level": "ERROR", "latency_ms": 9000}
    scored = run_cli(artifacts, "score", json.dumps(event))
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert result["model_version"] == version
    assert result["baseline_ready"] is True  # web's baseline came with the trained model
    assert result["service_events_seen"] == 100
    assert result["anomaly_score"] > 0.0
    assert "x this service's median" in result["explanation"]


def test_bad_file_exits_2_naming_the_row_and_field(tmp_path: Path, artifacts: Path) -> None:
    before = active(artifacts)
    bad = run_cli(artifacts, "train", str(write_events_csv(tmp_path / "bad.csv", 100, bad_row=3)))
    assert bad.returncode == 2
    assert "row 3" in bad.stderr
    assert "level" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert active(artifacts) == before
    score = run_cli(artifacts, "score", '{"service": "web", "level": "INFO", "latency_ms": NaN}')
    assert score.returncode == 2
    assert "latency_ms" in score.stderr


def test_raw_rows_csv(tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    rows = [f"{rng.lognormal(4, 0.3):.3f},{rng.choice([0, 0, 0, 1, 2])}" for _ in range(150)]
    path = tmp_path / "rows.csv"
    path.write_text("latency_ms,level_score\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert main(["--artifacts", str(artifacts), "train", str(path)]) == 0
    version = json.loads(capsys.readouterr().out)["model_version"]
    assert active(artifacts) == version
    assert manifest(artifacts, version)["source"] == "raw_rows"
    assert manifest(artifacts, version)["rows"] == 150


def test_integer_latencies_in_a_csv(
    tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["service,level,latency_ms"] + [f"web,INFO,{100 + i % 9}" for i in range(80)]
    path = tmp_path / "ints.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["--artifacts", str(artifacts), "train", str(path)]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["rows"] == 80


def test_numeric_looking_service_names_in_a_csv(
    tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["service,level,latency_ms,message"] + [f"123,INFO,{5 + i % 3},{i}" for i in range(60)]
    path = tmp_path / "numeric.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["--artifacts", str(artifacts), "train", str(path)]) == 0, capsys.readouterr().err
    version = json.loads(capsys.readouterr().out)["model_version"]
    assert manifest(artifacts, version)["services"] == 1


def test_json_lines_of_events_and_of_rows(
    tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps({"service": "q", "level": "WARNING", "latency_ms": 10.0 + i % 4})
            for i in range(120)
        )
        + "\n\n",  # a blank line at the end is fine
        encoding="utf-8",
    )
    assert main(["--artifacts", str(artifacts), "train", "--no-activate", str(events)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["activated"] is False
    assert active(artifacts) != summary["model_version"]
    assert manifest(artifacts, summary["model_version"])["source"] == "logs"

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps([5.0 + i % 3, 0]) for i in range(120)), encoding="utf-8")
    assert main(["--artifacts", str(artifacts), "train", str(rows)]) == 0
    version = json.loads(capsys.readouterr().out)["model_version"]
    assert active(artifacts) == version
    assert manifest(artifacts, version)["source"] == "raw_rows"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.jsonl", '{"service": "a", "level": "INFO"}\n{"service": \n', "line 2"),
        ("mixed.jsonl", '{"service": "a", "level": "INFO"}\n[1, 0]\n', "must all be event objects"),
        (
            "badevent.jsonl",
            '{"service": "a", "level": "INFO"}\n{"service": "a b", "level": "INFO"}\n',
            "line 2: service",
        ),
        ("badrow.jsonl", "[1, 0]\n[1, 9]\n", "data[1][1]"),
        ("nanrow.jsonl", "[1, 0]\n[NaN, 0]\n", "data.1.0"),
        ("empty.jsonl", "\n\n", "no rows"),
        ("three.csv", "a,b,c\n1,2,3\n", "exactly two"),
        ("few.csv", "service,level,latency_ms\nweb,INFO,5\nweb,INFO,6\n", "2 rows given"),
    ],
)
def test_unusable_files_exit_2_with_a_message(
    tmp_path: Path,
    artifacts: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    message: str,
) -> None:
    before = sorted(p.name for p in (artifacts / "versions").iterdir())
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert main(["--artifacts", str(artifacts), "train", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (artifacts / "versions").iterdir()) == before


def test_missing_file_and_bad_event_text_exit_2(
    tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--artifacts", str(artifacts), "train", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--artifacts", str(artifacts), "score", "{not json"]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["--artifacts", str(artifacts), "score", '{"service": "a"}']) == 2
    assert "level" in capsys.readouterr().err
