"""Helpers of the hardening tests: raw ASGI calls that see exactly how much of a body the app read,
and small fitted models for the model-store tests."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.types import ASGIApp, Message

from app.model import FitResult, TrainingData, fit_model
from app.settings import Settings
from tests.conftest import bootstrap_source, make_settings

API_KEY = "test-key-0123456789abcdef"
CHUNK = 16 * 1024


@dataclass
class RawResponse:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    bytes_read: int = 0  # request body bytes the app pulled through receive()
    receive_calls: int = 0


def endless_body(chunk: bytes = b"x" * CHUNK) -> Iterator[bytes]:
    while True:
        yield chunk


async def raw_request(
    app: ASGIApp,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Iterator[bytes] | bytes = b"",
    hold: asyncio.Event | None = None,
    limit_seconds: float = 20.0,
) -> RawResponse:
    """One HTTP request straight into the ASGI app. ``body`` may be an endless iterator (sent
    with ``more_body=True`` forever); ``hold`` makes the first receive() wait for the event, so
    the request stays in flight until the test releases it."""
    chunks = iter([body]) if isinstance(body, bytes) else body
    result = RawResponse()
    done = asyncio.Event()
    finished_body = False

    async def receive() -> Message:
        nonlocal finished_body
        result.receive_calls += 1
        if hold is not None:
            await hold.wait()
        if finished_body:
            await done.wait()
            return {"type": "http.disconnect"}
        chunk = next(chunks, None)
        if chunk is None:
            finished_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        result.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")
            if not message.get("more_body", False):
                done.set()

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), limit_seconds)
    return result


def small_fit(seed: int = 0, rows: int = 400) -> FitResult:
    """A real fitted model, small enough to fit in milliseconds."""
    rng = np.random.default_rng(seed)
    data = TrainingData(
        latency_ms=rng.lognormal(4.0, 0.4, rows),
        level_scores=rng.choice([0.0, 1.0, 2.0], rows, p=[0.95, 0.04, 0.01]),
        service_codes=rng.integers(0, 2, rows).astype(np.int64),
        service_names=["svc-a", "svc-b"],
        source="raw_rows",
    )
    parameters = {"contamination": 0.02, "n_estimators": 8, "max_samples": 64, "random_state": seed}
    return fit_model(data, parameters, warmup=20)


def seeded_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """``make_settings`` on an artifacts folder that already holds the bootstrap model."""
    # The session's bootstrap model, as the folder's fit would be with the default settings.
    source = bootstrap_source(make_settings(tmp_path))
    shutil.copytree(source, tmp_path / "artifacts", dirs_exist_ok=True)
    return make_settings(tmp_path, **overrides)
