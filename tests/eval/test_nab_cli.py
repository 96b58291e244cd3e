"""``python -m app.eval nab`` end to end: results files in NAB's format and a verified scorer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.eval.__main__ import main
from app.eval.nab import error_analysis, load_corpus, series_events, sliding_zscore, to_latency
from app.eval.nab_scoring import layout_series
from app.eval.replay import replayer

ROWS = 300


def tiny_corpus(root: Path) -> tuple[Path, Path]:
    """Two series of 5-minute rows, one with a level shift inside its window, one flat-ish."""
    data = root / "data"
    stamps = pd.date_range("2014-04-01", periods=ROWS, freq="5min")
    rng = np.random.default_rng(0)
    shift = 50.0 + rng.normal(0.0, 1.0, ROWS)
    shift[200:230] += 40.0
    for category, name, values in (
        ("artificialWithAnomaly", "shift", shift),
        ("realKnownCause", "noise", -5.0 + rng.normal(0.0, 1.0, ROWS)),
    ):
        (data / category).mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values})
        frame.to_csv(data / category / f"{name}.csv", index=False)
    labels = root / "labels" / "combined_windows.json"
    labels.parent.mkdir()
    window = [f"{stamps[190]}.000000", f"{stamps[240]}.000000"]
    labels.write_text(
        json.dumps({"artificialWithAnomaly/shift.csv": [window], "realKnownCause/noise.csv": []})
    )
    return data, labels


def test_values_map_into_the_latency_range() -> None:
    latency = to_latency(np.array([-5.0, 0.0, 15.0]), 100.0, 900.0)
    assert latency.tolist() == [100.0, 325.0, 1000.0]
    assert to_latency(np.array([3.0, 3.0]), 100.0, 900.0).tolist() == [100.0, 100.0]


def test_cli_writes_nab_results_and_verifies_the_scorer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = tiny_corpus(tmp_path)  # labels at the default DATA_DIR/../labels place
    out = tmp_path / "results"
    assert main(["nab", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "python -m app.eval nab" in printed
    for category, name in (("artificialWithAnomaly", "shift"), ("realKnownCause", "noise")):
        source = pd.read_csv(data / category / f"{name}.csv")
        written = pd.read_csv(out / "insighthub" / category / f"insighthub_{name}.csv")
        assert list(written.columns) == ["timestamp", "value", "anomaly_score"]
        assert written["timestamp"].tolist() == source["timestamp"].tolist()
        assert np.allclose(written["value"], source["value"])
        assert written["anomaly_score"].between(0.0, 1.0).all()
    summary = json.loads((out / "summary.json").read_text())
    scores = summary["scores"]
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert scores["null"][profile]["normalised"] == 0.0
        assert scores["perfect"][profile]["normalised"] == pytest.approx(100.0)
    assert summary["cost"]["events"] == 2 * ROWS
    assert summary["value_mapping"]["floor_ms"] == 100.0


def test_cli_refuses_missing_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, labels = tiny_corpus(tmp_path)
    labels.write_text(json.dumps({"realKnownCause/noise.csv": []}))
    assert main(["nab", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "no windows for artificialWithAnomaly/shift.csv" in capsys.readouterr().err


@pytest.mark.shared_data
def test_cli_on_two_shared_series(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    data = shared_data / "nab" / "data"
    only = ["--only", "art_daily_jumpsup", "--only", "art_daily_no_noise"]
    assert main(["nab", str(data), "--out", str(out), *only]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["series"] == 2
    assert summary["windows"] == 1
    assert summary["scores"]["perfect"]["standard"]["normalised"] == pytest.approx(100.0)
    written = out / "insighthub" / "artificialWithAnomaly" / "insighthub_art_daily_jumpsup.csv"
    assert len(pd.read_csv(written)) == len(
        pd.read_csv(data / "artificialWithAnomaly" / "art_daily_jumpsup.csv")
    )


def test_sliding_zscore_reference_uses_only_past_values() -> None:
    values = np.array([1.0, 1.0, 1.0, 3.0, 1.0, 2.0])
    scores = sliding_zscore(values, window=3)
    assert scores[:3].tolist() == [0.0, 0.0, 0.0]  # no spread yet, and nothing deviates
    assert scores[3] == 1.0  # deviates from a spread-free past
    # Row 5 against rows 2..4 = (1, 3, 1): mean 5/3, population std sqrt(8/9); z = 1/3 / that.
    z = (2.0 - 5.0 / 3.0) / math.sqrt(8.0 / 9.0)
    assert scores[5] == pytest.approx(math.erf(z / math.sqrt(2.0)))
    assert sliding_zscore(values[:4], window=3).tolist() == scores[:4].tolist()


def test_replay_scores_each_row_from_the_past_only(tmp_path: Path) -> None:
    """The scores of a prefix replayed alone equal the same rows' scores in the full replay."""
    data, labels = tiny_corpus(tmp_path)
    (series,) = load_corpus(data, labels, ["shift"])
    events = series_events(series, 100.0, 900.0)
    with replayer() as engine:
        full = engine.replay(events).scores
        prefix = engine.replay(events[:215]).scores
    assert prefix.tolist() == full[:215].tolist()


def test_error_analysis_names_each_loss() -> None:
    """False positives go to the method that scored them highest, with NAB's cost; a missed
    window is a repeat when one method alone reached the threshold, else below it."""
    # Rows 0-1 probation (floor(0.15 * 20) = 3), windows at rows 8-9 and 14-15.
    layout = layout_series("s", 20, [(8, 9), (14, 15)])
    combined = np.zeros(20)
    forecast, pattern = np.zeros(20), np.zeros(20)
    combined[[1, 4, 5]] = 0.9  # row 1 is in the probation period: not counted
    forecast[[1, 4]] = 0.9
    pattern[5] = 0.9
    combined[9], pattern[9] = 0.5, 0.95  # window 0: the method alarmed, the combination did not
    combined[14], forecast[14] = 0.3, 0.3  # window 1: below the threshold
    analysis = error_analysis(
        layout, combined, {"forecast": forecast, "pattern": pattern}, threshold=0.6
    )
    false_positives = analysis["false_positives_by_method"]
    assert false_positives.keys() == {"forecast", "pattern"}
    assert false_positives["forecast"]["rows"] == 1
    assert false_positives["pattern"]["rows"] == 1
    # Before the first window a false positive costs the full A_FP.
    assert false_positives["forecast"]["cost"] == pytest.approx(0.11)
    reasons = [(m["window"], m["reason"], m["best_method"]) for m in analysis["missed_windows"]]
    assert reasons == [
        (0, "ranked as a repeat", "pattern"),
        (1, "below the threshold", "forecast"),
    ]
    assert analysis["missed_windows"][1]["best_score"] == 0.3
