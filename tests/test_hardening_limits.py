"""Limits: body size on the bytes actually received, batch and training sizes, bounded service
state with an eviction metric, and a concurrency limit that answers 503 at once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningApp, start_app
from tests.hardening_support import API_KEY, CHUNK, endless_body, raw_request, seeded_settings

JSON = {"content-type": "application/json"}
EVENT = {"service": "api", "level": "INFO", "latency_ms": 12.0}


@pytest.fixture
async def running_small(tmp_path: Path) -> AsyncIterator[RunningApp]:
    settings = seeded_settings(
        tmp_path,
        max_concurrent_requests=2,
        max_services=3,
        train_max_rows=500,
        retry_after_seconds=7,
    )
    async for running_app in start_app(settings):
        yield running_app


def _problem(body: bytes, status: int) -> dict[str, object]:
    problem: dict[str, object] = json.loads(body)
    assert problem["status"] == status
    return problem


async def test_declared_oversize_body_is_refused_unread(running_small: RunningApp) -> None:
    limit = running_small.app.state.insighthub.settings.max_body_bytes_score
    response = await raw_request(
        running_small.app,
        "POST",
        "/score",
        headers=JSON | {"content-length": str(limit + 1)},
        body=endless_body(),
    )
    assert response.status == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.bytes_read == 0
    assert str(limit) in str(_problem(response.body, 413)["detail"])


async def test_chunked_upload_without_length_is_cut_at_the_limit(
    running_small: RunningApp,
) -> None:
    """No Content-Length, an endless stream: the guard counts and stops one chunk past."""
    limit = running_small.app.state.insighthub.settings.max_body_bytes_score
    response = await raw_request(
        running_small.app,
        "POST",
        "/score",
        headers=JSON | {"transfer-encoding": "chunked"},
        body=endless_body(),
    )
    assert response.status == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert limit < response.bytes_read <= limit + CHUNK
    _problem(response.body, 413)


async def test_a_lying_content_length_does_not_help(running_small: RunningApp) -> None:
    limit = running_small.app.state.insighthub.settings.max_body_bytes_score
    response = await raw_request(
        running_small.app,
        "POST",
        "/score",
        headers=JSON | {"content-length": "10"},
        body=endless_body(),
    )
    assert response.status == 413
    assert limit < response.bytes_read <= limit + CHUNK


async def test_limits_differ_per_route(running_small: RunningApp) -> None:
    client = running_small.client
    settings = running_small.app.state.insighthub.settings
    # ~70 KiB of events: too much for /score, fine for /score/batch.
    logs = [EVENT | {"message": "m" * 700}] * 100
    body = json.dumps({"logs": logs}).encode()
    assert settings.max_body_bytes_score < len(body) < settings.max_body_bytes_batch
    assert (await client.post("/score/batch", content=body, headers=JSON)).status_code == 200
    response = await client.post("/score", content=body, headers=JSON)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_more_than_10000_events_in_a_batch_is_422(running_small: RunningApp) -> None:
    response = await running_small.client.post("/score/batch", json={"logs": [EVENT] * 10_001})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "logs"


async def test_too_many_training_rows_is_422(running_small: RunningApp) -> None:
    response = await running_small.client.post("/train", json={"data": [[10.0, 0.0]] * 501})
    assert response.status_code == 422
    assert "data: 501 rows given" in response.json()["detail"]


async def test_training_takes_100k_events_in_one_request(tmp_path: Path) -> None:
    """The default /train limit holds 100,000 realistic log events (~15 MB of JSON)."""
    settings = seeded_settings(tmp_path, api_key=API_KEY)
    logs = [
        {
            "service": f"svc-{i % 50}",
            "level": "ERROR" if i % 97 == 0 else "INFO",
            "latency_ms": 10.0 + (i % 200),
            "timestamp": "2026-11-24T10:15:00Z",
            "message": "GET /api/v1/orders 200",
        }
        for i in range(100_000)
    ]
    body = json.dumps({"logs": logs, "activate": False}).encode()
    assert len(body) > settings.max_body_bytes_batch / 2
    async for running_app in start_app(settings):
        response = await running_app.client.post(
            "/train", content=body, headers=JSON | {"X-API-Key": API_KEY}
        )
        assert response.status_code == 202, response.text
        job = (await running_app.client.get(f"/train/{response.json()['job_id']}")).json()
        assert job["rows"] == 100_000


async def test_overload_is_answered_503_at_once(running_small: RunningApp) -> None:
    app = running_small.app
    release = asyncio.Event()
    body = json.dumps(EVENT).encode()

    def one_chunk() -> Iterator[bytes]:
        yield body

    # Two requests whose bodies have not arrived yet fill max_concurrent_requests=2.
    stuck = [
        asyncio.create_task(
            raw_request(app, "POST", "/score", headers=JSON, body=one_chunk(), hold=release)
        )
        for _ in range(2)
    ]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    refused = await raw_request(app, "POST", "/score", headers=JSON, body=body)
    waited = time.monotonic() - started
    assert refused.status == 503
    assert refused.headers["retry-after"] == "7"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.bytes_read == 0
    assert waited < 5.0  # not queued behind the stuck requests (generous: shared machine)
    # Probes and scrapes still answer while saturated.
    for path in ("/health", "/ready", "/metrics"):
        assert (await raw_request(app, "GET", path)).status == 200, path
    release.set()
    assert [r.status for r in await asyncio.gather(*stuck)] == [200, 200]
    assert (await raw_request(app, "POST", "/score", headers=JSON, body=body)).status == 200
    metrics = (await running_small.client.get("/metrics")).text
    assert 'insighthub_http_rejected_total{reason="overloaded"} 1.0' in metrics


async def test_service_state_is_bounded_and_evictions_are_counted(
    running_small: RunningApp,
) -> None:
    client = running_small.client
    logs = [EVENT | {"service": f"svc-{i}", "message": "GET /orders 200"} for i in range(5)]
    assert (await client.post("/score/batch", json={"logs": logs})).status_code == 200
    engine = running_small.app.state.insighthub.engine
    assert len(engine.windows) == 3
    assert len(engine.baselines) == 3
    # The least recently seen went first.
    assert (await client.get("/stats/svc-0")).status_code == 404
    assert (await client.get("/stats/svc-4")).status_code == 200
    metrics = (await client.get("/metrics")).text
    stores = ("baselines", "windows", "templates", "sequences", "forecasts", "patterns", "records")
    for store in stores:
        assert f'insighthub_service_evictions_total{{store="{store}"}} 2.0' in metrics, store
        assert f'insighthub_services_tracked{{store="{store}"}} 3.0' in metrics, store
    assert "insighthub_templates_tracked " in metrics
    assert "insighthub_template_evictions_total 0.0" in metrics


async def test_template_evictions_are_counted(tmp_path: Path) -> None:
    settings = seeded_settings(tmp_path, template_max=10)
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    logs = [EVENT | {"message": f"{word} request failed on node"} for word in words]
    async for running_app in start_app(settings):
        client = running_app.client
        assert (await client.post("/score/batch", json={"logs": logs})).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "insighthub_templates_tracked 10.0" in metrics
        evicted = next(
            line
            for line in metrics.splitlines()
            if line.startswith("insighthub_template_evictions_total ")
        )
        assert float(evicted.split()[-1]) >= 1.0


async def test_shutdown_cancels_running_and_queued_training_jobs(tmp_path: Path) -> None:
    """Several jobs queued behind one worker: closing cancels all of them cleanly (no thread
    exception from the process pool, which pytest would turn into an error) and stores nothing."""
    settings = seeded_settings(tmp_path)
    rows = [[float(10 + i % 50), 0.0] for i in range(200)]
    async for running_app in start_app(settings):
        state = running_app.app.state.insighthub
        trainer, store = state.trainer, state.store
        versions = store.versions()
        job_ids = []
        for _ in range(4):
            response = await running_app.client.post("/train", json={"data": rows})
            assert response.status_code == 202
            job_ids.append(response.json()["job_id"])
    jobs = [trainer.get(job_id) for job_id in job_ids]
    assert all(job is not None and job.status == "failed" for job in jobs), jobs
    assert all(job.error == "cancelled: the service shut down" for job in jobs if job), jobs
    assert store.versions() == versions
    assert list(settings.artifacts_dir.glob(".tmp-*")) == []
