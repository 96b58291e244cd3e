"""Regression: a 0 ms latency after warm-up made the explanation divide by zero (a 500)."""

from __future__ import annotations

import httpx


async def test_zero_latency_after_warm_up_is_scored(client: httpx.AsyncClient) -> None:
    warm = [{"service": "api", "level": "INFO", "latency_ms": 100.0 + i} for i in range(30)]
    assert (await client.post("/score/batch", json={"logs": warm})).status_code == 200
    response = await client.post(
        "/score", json={"service": "api", "level": "INFO", "latency_ms": 0.0}
    )
    assert response.status_code == 200
    assert "below this service's median" in response.json()["explanation"]
