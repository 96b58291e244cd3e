"""The service starts on an empty artifacts folder and answers on every route family."""

from __future__ import annotations

import httpx
import pytest

from app.schemas import ScoreResult

pytestmark = pytest.mark.first_start  # the bootstrap fit of a fresh install, not a session copy


async def test_fresh_service_is_ready_and_scores(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    response = await client.post(
        "/score", json={"service": "api", "level": "INFO", "latency_ms": 120.0}
    )
    assert response.status_code == 200
    result = ScoreResult.model_validate(response.json())
    assert 0.0 <= result.anomaly_score <= 1.0
    assert {"isolation_forest", "sliding_window"} <= set(result.methods)
    assert result.model_version == ready.json()["model_version"]
