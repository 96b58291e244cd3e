"""Reading Loghub's BGL structured CSV and replaying it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.eval.__main__ import main
from app.eval.bgl import BglDataError, read_structured
from app.eval.metrics import Confusion

HEADER = (
    "LineId,Label,Timestamp,Date,Node,Time,NodeRepeat,Type,Component,Level,Content,EventId,"
    "EventTemplate"
)
LINES = [
    "1,-,1117838570,2005.06.03,R02,2005-06-03-15.42.50.675872,R02,RAS,KERNEL,INFO,"
    "instruction cache parity error corrected,E77,instruction cache parity error corrected",
    "2,KERNDTLB,1117838573,2005.06.03,R02,2005-06-03-15.42.53.276129,R02,RAS,KERNEL,FATAL,"
    "data TLB error interrupt,E1,data TLB error interrupt",
    "3,-,1117838600,2005.06.03,R02,,R02,RAS,APP,SEVERE,ciod: failed to read message prefix,E2,x",
    '4,-,1117838601,2005.06.03,R02,2005-06-03-15.43.21.000001,R02,RAS,MMCS/x,WARNING,"a, b",E3,x',
    "5,-,1117838602,2005.06.03,R02,2005-06-03-15.43.22.000000,R02,RAS,KERNEL,FAILURE,down,E4,x",
]


def write(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "bgl.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_lines_map_onto_log_events(tmp_path: Path) -> None:
    lines = read_structured(write(tmp_path, LINES))
    events = lines.events
    assert [e["service"] for e in events] == ["KERNEL", "KERNEL", "APP", "MMCS_x", "KERNEL"]
    assert [e["level"] for e in events] == ["INFO", "CRITICAL", "ERROR", "WARN", "CRITICAL"]
    assert events[3]["message"] == "a, b"
    assert events[0]["timestamp"] == datetime(2005, 6, 3, 15, 42, 50, 675872, tzinfo=UTC)
    # No Time on line 3: the Unix Timestamp column is used.
    assert events[2]["timestamp"] == datetime.fromtimestamp(1117838600, UTC)
    assert lines.anomalous.tolist() == [False, True, False, False, False]
    assert lines.labels[1] == "KERNDTLB"


def test_unknown_level_names_its_line(tmp_path: Path) -> None:
    bad = [*LINES[:2], LINES[2].replace("SEVERE", "LOUD")]
    with pytest.raises(BglDataError, match="line 3: Level 'LOUD'"):
        read_structured(write(tmp_path, bad))


def test_missing_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(BglDataError, match="missing column"):
        read_structured(write(tmp_path, ["1,-,1"], header="LineId,Label,Timestamp"))


def test_confusion_rates() -> None:
    c = Confusion.of(
        [True, True, False, False, False],
        [True, False, True, False, False],
    )
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 2)
    assert c.precision == 0.5
    assert c.recall == 0.5
    assert c.f1 == 0.5
    assert c.false_alarm_rate == pytest.approx(1 / 3)


def test_cli_runs_on_a_small_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    assert main(["bgl", str(write(tmp_path, LINES * 4)), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "every FATAL line" in out
    assert "python -m app.eval bgl" in out
    assert '"every_fatal_line"' in report.read_text()


def test_cli_refuses_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bgl", str(tmp_path / "absent.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.shared_data
def test_cli_on_the_shared_sample(shared_data: Path, tmp_path: Path) -> None:
    report = tmp_path / "bgl.json"
    path = shared_data / "bgl" / "BGL_2k_dev.log_structured.csv"
    assert main(["bgl", str(path), "--json", str(report)]) == 0
    import json

    summary = json.loads(report.read_text())
    assert summary["lines"] == 1400
    assert summary["anomalous_lines"] == 109
    # The FATAL rule on this sample, by hand: 109 of its 257 FATAL lines are labelled anomalous.
    fatal = summary["every_fatal_line"]
    assert (fatal["tp"], fatal["fp"], fatal["fn"]) == (109, 148, 0)
    assert fatal["f1"] == pytest.approx(2 * 109 / (2 * 109 + 148))
    engine = summary["insighthub"]
    assert engine["tp"] + engine["fn"] == 109


def test_reproducing_command_carries_engine_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.eval.report import run_info

    monkeypatch.setenv("INSIGHTHUB_WINDOW_MINUTES", "30")
    monkeypatch.setenv("INSIGHTHUB_SHARED_DATA", "/elsewhere")  # not an engine setting
    info = run_info(["bgl", "my file.csv"])
    assert info["command"] == "INSIGHTHUB_WINDOW_MINUTES=30 python -m app.eval bgl 'my file.csv'"
