"""Every registered detector through the HTTP API: listed honestly, scored in order, and one
request of many events equals the same events one request at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.schemas import ScoreResult
from tests.conftest import make_settings, start_app


def _events() -> list[dict[str, Any]]:
    events = []
    for i in range(120):
        service = ("api", "db", "cache")[i % 3]
        events.append(
            {
                "service": service,
                "level": "ERROR" if i % 17 == 0 else "INFO",
                "message": f"handled request {i} for user {i % 7}" if i % 5 else "cache miss",
                "latency_ms": float(10 + (i * 37) % 50) if i % 11 else None,
                "timestamp": f"2026-11-24T10:{i // 60:02d}:{i % 60:02d}Z",
            }
        )
    events.append({**events[0], "message": "kernel panic on node 7", "latency_ms": 5000.0})
    return events


async def _client(tmp_path: Path) -> AsyncGenerator[httpx.AsyncClient, None]:
    async for running in start_app(make_settings(tmp_path)):
        yield running.client


@pytest.fixture
async def two_clients(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    # Two services on one artifacts folder: the second serves the model the first started with,
    # each with its own online state.
    one = _client(tmp_path)
    two = _client(tmp_path)
    first = await anext(one)
    second = await anext(two)
    yield first, second
    for generator in (one, two):
        await generator.aclose()


async def test_batch_equals_one_by_one_with_every_detector(
    two_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    batch_client, single_client = two_clients
    events = _events()
    batch = (await batch_client.post("/score/batch", json={"logs": events})).json()["results"]
    single = [(await single_client.post("/score", json=e)).json() for e in events]
    assert batch == single
    last = ScoreResult.model_validate(batch[-1])
    assert {"templates", "sequence", "forecast", "autoencoder"} <= set(last.methods)
    assert all(m.degraded is None for m in last.methods.values())
    assert 0.0 <= last.confidence <= 1.0
    assert set(batch[0]["methods"]["sliding_window"]["metrics"]) >= {
        "error_rate",
        "latency_zscore",
        "total_logs",
    }


async def test_detectors_list_says_what_is_built(client: httpx.AsyncClient) -> None:
    detectors = {d["name"]: d for d in (await client.get("/detectors")).json()["detectors"]}
    for name in (
        "isolation_forest",
        "sliding_window",
        "templates",
        "sequence",
        "forecast",
        "autoencoder",
    ):
        assert detectors[name]["available"], name
    # The bootstrap model is fitted without messages, so it has no LSTM (it needs templates);
    # without torch the reason names PyTorch instead.
    assert not detectors["lstm_sequence"]["available"]
    assert "the active model has none" in detectors["lstm_sequence"]["reason"] or (
        "PyTorch" in detectors["lstm_sequence"]["reason"]
    )
