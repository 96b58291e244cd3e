"""POST /score's shortcut (app/routers/scoring.py, ``ScoreShortcut``) answers exactly what the
documented FastAPI route answers: the same bytes and headers for the same event sequence, and every
other answer (422 naming the field, 413, 401, non-JSON bodies) left to the route itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from app.routers.scoring import ScoreShortcut
from app.settings import Settings
from app.state import get_engine
from tests.conftest import RunningApp, make_settings, start_app
from tests.hardening_support import API_KEY, raw_request
from tests.helpers import assert_problem, event
from tests.routers.shortcut_support import Answer, both_ways, fresh_app
from tests.routers.test_scoring import mixed_stream

JSON = {"content-type": "application/json"}


async def answers(running: RunningApp, bodies: list[bytes], concurrent: bool) -> list[Answer]:
    async def one(body: bytes) -> Answer:
        response = await raw_request(running.app, "POST", "/score", headers=JSON, body=body)
        return response.status, response.headers, response.body

    if concurrent:  # coalesced into shared engine calls, in arrival order
        return list(await asyncio.gather(*(one(body) for body in bodies)))
    return [await one(body) for body in bodies]


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-by-one", "concurrent"])
async def test_same_bytes_and_headers_as_the_route_for_the_same_events(
    tmp_path: Path,
    bootstrapped_artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
    concurrent: bool,
) -> None:
    bodies = [orjson.dumps(log) for log in mixed_stream()]

    async def send(running: RunningApp) -> list[Answer]:
        return await answers(running, bodies, concurrent)

    fast, route, answered = await both_ways(
        ScoreShortcut, tmp_path, bootstrapped_artifacts, monkeypatch, send
    )
    assert answered == len(bodies)
    assert [status for status, _, _ in fast] == [200] * len(bodies)
    assert fast == route
    assert {json.loads(body)["is_anomaly"] for _, _, body in fast} == {True, False}


async def test_invalid_and_non_json_bodies_get_the_routes_own_answers(
    tmp_path: Path, bootstrapped_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[tuple[dict[str, str], bytes]] = [
        (JSON, orjson.dumps(event(latency_ms=-1.0))),
        (JSON, orjson.dumps(event(level="LOUD"))),
        (JSON, orjson.dumps({**event(), "extra": 1})),
        (JSON, b'{"service": "api", "level": "INFO", "latency_ms": '),
        (JSON, b""),
        ({"content-type": "text/plain"}, orjson.dumps(event())),
        ({}, orjson.dumps(event())),
    ]

    async def send(running: RunningApp) -> list[Answer]:
        sent = []
        for headers, body in requests:
            response = await raw_request(running.app, "POST", "/score", headers=headers, body=body)
            sent.append((response.status, response.headers, response.body))
        return sent

    fast, route, answered = await both_ways(
        ScoreShortcut, tmp_path, bootstrapped_artifacts, monkeypatch, send
    )
    assert answered == 0
    assert fast == route
    assert [status for status, _, _ in fast] == [422] * len(requests)
    fields = [json.loads(body)["errors"][0]["field"] for _, _, body in fast[:3]]
    assert fields == ["latency_ms", "level", "extra"]


async def test_a_body_in_several_chunks_is_scored_like_one(running: RunningApp) -> None:
    body = orjson.dumps(event("chunks", seconds=5.0))
    parts = [body[:7], body[7:20], body[20:]]
    response = await raw_request(running.app, "POST", "/score", headers=JSON, body=iter(parts))
    assert response.status == 200
    assert json.loads(response.body)["service"] == "chunks"


async def test_scoring_needs_the_key_when_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_key=API_KEY, require_key_for_scoring=True)
    body = orjson.dumps(event())
    async for running in start_app(settings):
        refused = await running.client.post("/score", content=body, headers=JSON)
        assert_problem(refused, 401)
        wrong = await running.client.post(
            "/score", content=body, headers=JSON | {"x-api-key": API_KEY + "x"}
        )
        assert_problem(wrong, 401)
        allowed = await running.client.post(
            "/score", content=body, headers=JSON | {"authorization": f"Bearer {API_KEY}"}
        )
        assert allowed.status_code == 200


async def test_shortcut_answers_are_counted_in_the_metrics(running: RunningApp) -> None:
    for _ in range(3):
        assert (await running.client.post("/score", json=event())).status_code == 200
    metrics = (await running.client.get("/metrics")).text
    assert (
        'insighthub_http_requests_total{method="POST",route="/score",status="200"} 3.0' in metrics
    )
    assert 'insighthub_http_request_duration_seconds_count{route="/score"} 3.0' in metrics
    assert "insighthub_http_requests_in_flight 0.0" in metrics


async def test_dependency_overrides_still_apply(running: RunningApp) -> None:
    """Tests that replace the engine through FastAPI keep working: the shortcut steps aside."""

    async def replaced(_: object) -> bytes:
        return b'{"replaced":true}'

    stand_in = SimpleNamespace(coalescer=SimpleNamespace(score=replaced))
    running.app.dependency_overrides[get_engine] = lambda: stand_in
    try:
        response = await running.client.post("/score", json=event())
    finally:
        running.app.dependency_overrides.clear()
    assert response.status_code == 200
    assert response.json() == {"replaced": True}


async def test_no_model_yet_is_the_routes_503(settings: Settings) -> None:
    async for running in start_app(settings):
        state = running.app.state.insighthub
        running.app.state.insighthub = None
        try:
            response = await running.client.post("/score", json=event())
        finally:
            running.app.state.insighthub = state
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "1"


async def test_batch_answer_is_the_single_answers_byte_for_byte(
    tmp_path: Path, bootstrapped_artifacts: Path
) -> None:
    """The batch body is ``{"results":[`` + the one-by-one answers joined by commas + ``]}``."""
    bodies = [orjson.dumps(log) for log in mixed_stream()]
    async with fresh_app(tmp_path, bootstrapped_artifacts, "single") as running:
        singles = [body for _, _, body in await answers(running, bodies, concurrent=False)]
    batch_body = b'{"logs":[' + b",".join(bodies) + b"]}"
    async with fresh_app(tmp_path, bootstrapped_artifacts, "batch") as running:
        response = await raw_request(
            running.app, "POST", "/score/batch", headers=JSON, body=batch_body
        )
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.body == b'{"results":[' + b",".join(singles) + b"]}"
