"""The service's own log lines reach standard error when it runs as ``uvicorn app.main:app``
(uvicorn configures only its own loggers), at ``INSIGHTHUB_LOG_LEVEL``; a host that configured
logging keeps its own handlers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.factory import show_service_logs

SCRIPT = """
import logging
import app.main
logging.getLogger("app.trainer").debug("debug line")
logging.getLogger("app.trainer").info("info line")
logging.getLogger("app.trainer").warning("warning line")
"""


def _stderr(tmp_path: Path, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=os.environ | {"INSIGHTHUB_ARTIFACTS_DIR": str(tmp_path)} | env,
    )
    return done.stderr


def test_info_lines_are_written_as_uvicorn_writes_its_own(tmp_path: Path) -> None:
    written = _stderr(tmp_path)
    assert "INFO:     app.trainer: info line" in written
    assert "WARNING:  app.trainer: warning line" in written
    assert "debug line" not in written
    assert written.count("info line") == 1


def test_the_level_comes_from_the_environment(tmp_path: Path) -> None:
    quiet = _stderr(tmp_path, INSIGHTHUB_LOG_LEVEL="WARNING")
    assert "info line" not in quiet
    assert "warning line" in quiet
    assert "debug line" in _stderr(tmp_path, INSIGHTHUB_LOG_LEVEL="DEBUG")


def test_a_host_that_configured_logging_keeps_its_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = logging.getLogger("app")
    monkeypatch.setattr(service, "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    show_service_logs("INFO")
    assert service.handlers == []
