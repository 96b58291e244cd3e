"""POST /score/batch's shortcut (app/routers/scoring.py, ``BatchShortcut``) answers exactly what
the documented FastAPI route answers: the same bytes and headers for the same batches, and every
other answer (422 naming the field and its index, bodies left to pydantic, non-JSON bodies, 503,
dependency overrides) left to the route itself."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from app.routers.scoring import BatchShortcut
from app.settings import Settings
from app.state import get_engine
from tests.conftest import RunningApp, start_app
from tests.hardening_support import raw_request
from tests.helpers import assert_problem, event
from tests.routers.shortcut_support import Answer, both_ways
from tests.routers.test_scoring import mixed_stream

JSON = {"content-type": "application/json"}


async def send_all(
    running: RunningApp, requests: list[tuple[dict[str, str], bytes]]
) -> list[Answer]:
    sent = []
    for headers, body in requests:
        response = await raw_request(
            running.app, "POST", "/score/batch", headers=headers, body=body
        )
        sent.append((response.status, response.headers, response.body))
    return sent


def _batch(logs: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"logs": logs})


async def test_same_bytes_and_headers_as_the_route_for_the_same_batches(
    tmp_path: Path, bootstrapped_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = mixed_stream()
    cuts = [0, 1, 6, 40, 41, 120, len(logs)]
    requests = [(JSON, _batch(logs[a:b])) for a, b in pairwise(cuts)]

    async def send(running: RunningApp) -> list[Answer]:
        return await send_all(running, requests)

    fast, route, answered = await both_ways(
        BatchShortcut, tmp_path, bootstrapped_artifacts, monkeypatch, send
    )
    assert answered == len(requests)
    assert [status for status, _, _ in fast] == [200] * len(requests)
    assert fast == route
    flags = {r["is_anomaly"] for _, _, body in fast for r in json.loads(body)["results"]}
    assert flags == {True, False}


async def test_bodies_left_to_pydantic_get_the_routes_own_answers(
    tmp_path: Path, bootstrapped_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = event()
    requests: list[tuple[dict[str, str], bytes]] = [
        (JSON, _batch([good, event(latency_ms=-1.0)])),
        (JSON, _batch([good, good, event(level="LOUD")])),
        (JSON, _batch([{**good, "extra": 1}])),
        (JSON, b'{"logs":[]}'),
        (JSON, b'{"logs": [{"service": "api", "level": "INFO", "latency_ms": '),
        (JSON, b""),
        ({"content-type": "text/plain"}, _batch([good])),
        ({}, _batch([good])),
        # Valid, but not read column-wise: pydantic validates them and the route scores them.
        (JSON, _batch([good, {**good, "attributes": {"region": "eu"}}])),
        (JSON, _batch([{**good, "timestamp": "2026-11-24 10:15:00Z"}])),
    ]

    async def send(running: RunningApp) -> list[Answer]:
        return await send_all(running, requests)

    fast, route, answered = await both_ways(
        BatchShortcut, tmp_path, bootstrapped_artifacts, monkeypatch, send
    )
    assert answered == 0
    assert fast == route
    assert [status for status, _, _ in fast] == [422] * 8 + [200] * 2
    fields = [json.loads(body)["errors"][0]["field"] for _, _, body in fast[:3]]
    assert fields == ["logs.1.latency_ms", "logs.2.level", "logs.0.extra"]


async def test_a_declined_body_is_read_column_wise_once(
    running: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.routers.scoring as scoring
    from app.schemas.columns import read_batch

    reads: list[bytes] = []
    original = read_batch

    def counted(body: bytes) -> Any:
        reads.append(body)
        return original(body)

    monkeypatch.setattr(scoring, "read_batch", counted)
    response = await running.client.post("/score/batch", json={"logs": [event(level="LOUD")]})
    assert_problem(response, 422)
    assert len(reads) == 1
    response = await running.client.post("/score/batch", json={"logs": [event()]})
    assert response.status_code == 200
    assert len(reads) == 2


async def test_dependency_overrides_still_apply(running: RunningApp) -> None:
    stand_in = SimpleNamespace(score_columns=lambda columns: [b'{"replaced":true}'] * len(columns))
    running.app.dependency_overrides[get_engine] = lambda: stand_in
    try:
        response = await running.client.post("/score/batch", json={"logs": [event(), event()]})
    finally:
        running.app.dependency_overrides.clear()
    assert response.status_code == 200
    assert response.json() == {"results": [{"replaced": True}, {"replaced": True}]}


async def test_no_model_yet_is_the_routes_503(settings: Settings) -> None:
    async for running in start_app(settings):
        state = running.app.state.insighthub
        running.app.state.insighthub = None
        try:
            response = await running.client.post("/score/batch", json={"logs": [event()]})
        finally:
            running.app.state.insighthub = state
        assert_problem(response, 503)


async def test_shortcut_answers_are_counted_in_the_metrics(running: RunningApp) -> None:
    for _ in range(2):
        response = await running.client.post("/score/batch", json={"logs": [event()]})
        assert response.status_code == 200
    metrics = (await running.client.get("/metrics")).text
    assert (
        'insighthub_http_requests_total{method="POST",route="/score/batch",status="200"} 2.0'
        in metrics
    )
