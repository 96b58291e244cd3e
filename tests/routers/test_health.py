"""GET /health (liveness) and GET /ready (readiness: 503 until a model is loaded)."""

from __future__ import annotations

import httpx
import pytest

from app.factory import create_app
from app.settings import Settings
from tests.helpers import assert_problem, event


@pytest.fixture
def settings(bootstrapped_settings: Settings) -> Settings:
    return bootstrapped_settings


async def test_health_and_ready_when_running(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["model_version"] == (await client.get("/models")).json()["active"]
    assert body["services_tracked"] == 0
    await client.post("/score/batch", json={"logs": [event("a"), event("b"), event("a")]})
    assert (await client.get("/ready")).json()["services_tracked"] == 2


async def test_not_ready_before_the_lifespan_has_loaded_a_model(settings: Settings) -> None:
    app = create_app(settings)  # lifespan deliberately not started
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert_problem(await client.get("/ready"), 503)
        assert_problem(await client.post("/score", json=event()), 503)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404)
    assert_problem(await client.get("/score"), 405)


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (
        "/score",
        "/score/batch",
        "/stats/{service}",
        "/train",
        "/train/{job_id}",
        "/health",
        "/ready",
        "/detectors",
        "/models",
        "/models/{version}/activate",
    ):
        assert path in schema["paths"], path
    assert (await client.get("/docs")).status_code == 200
