"""INSIGHTHUB_WINDOW_STORE: the Redis store of the design is not built, and says so at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_memory_is_the_default_and_the_only_store() -> None:
    assert Settings().window_store == "memory"
    assert Settings(window_store="memory").window_store == "memory"


def test_redis_is_refused_with_a_message_that_says_it_is_not_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INSIGHTHUB_WINDOW_STORE", "redis")
    with pytest.raises(ValidationError) as caught:
        Settings()
    (error,) = caught.value.errors()
    assert error["loc"] == ("window_store",)
    assert "Redis window store is not built yet" in error["msg"]


def test_anything_else_is_refused_naming_the_choice() -> None:
    with pytest.raises(ValidationError, match="must be 'memory'"):
        Settings(window_store="postgres")


def test_the_service_does_not_start_on_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing the ASGI app (what uvicorn does) fails with the message, instead of serving
    # with per-process windows the user did not ask for.
    monkeypatch.setenv("INSIGHTHUB_WINDOW_STORE", "redis")
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "window_store" in result.stderr
    assert "not built yet" in result.stderr
