"""``python -m app.eval.trained``: a model trained on messages, replayed with and without its
LSTM, with each next-template method's own flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.detectors.lstm_sequence import torch_missing_reason
from app.eval.trained import main
from tests.eval.test_bgl import LINES, write


@pytest.mark.slow
def test_bgl_split_reports_with_and_without_the_lstm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LINES * 80)
    assert main(["bgl", str(path), "--train-on", "last", "--train-fraction", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "trained on lines 161-400, scored lines 1-160" in out
    for row in (
        "engine without the LSTM",
        "engine with the LSTM",
        "lstm_sequence alone",
        "sequence top-k rule alone",
        "us CPU per event",
    ):
        assert row in out
    if torch_missing_reason() is None:
        assert "lstm: {'window': 10" in out
    else:
        assert "PyTorch" in out
