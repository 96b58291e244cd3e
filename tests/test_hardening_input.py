"""Hostile input: every class of bad body or path is a 4xx problem+json that names what is wrong,
never a 500, and never changes the service's state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import RunningApp, start_app
from tests.hardening_support import seeded_settings

JSON = "application/json"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async for running_app in start_app(seeded_settings(tmp_path)):
        yield running_app


BAD_SCORE_BODIES = [
    # (case, body, content type, expected status, text the problem must mention)
    ("nan", b'{"service":"a","level":"INFO","latency_ms":NaN}', JSON, 422, "latency_ms"),
    ("infinity", b'{"service":"a","level":"INFO","latency_ms":Infinity}', JSON, 422, "latency_ms"),
    (
        "-infinity",
        b'{"service":"a","level":"INFO","latency_ms":-Infinity}',
        JSON,
        422,
        "latency_ms",
    ),
    ("overflow", b'{"service":"a","level":"INFO","latency_ms":1e400}', JSON, 422, "latency_ms"),
    ("huge", b'{"service":"a","level":"INFO","latency_ms":1e300}', JSON, 422, "latency_ms"),
    ("negative", b'{"service":"a","level":"INFO","latency_ms":-1}', JSON, 422, "latency_ms"),
    (
        "5000 digits",
        b'{"service":"a","level":"INFO","latency_ms":' + b"9" * 5000 + b"}",
        JSON,
        422,
        "body",
    ),
    (
        "latency as text",
        b'{"service":"a","level":"INFO","latency_ms":"fast"}',
        JSON,
        422,
        "latency_ms",
    ),
    ("level as number", b'{"service":"a","level":3}', JSON, 422, "level"),
    ("unknown level", b'{"service":"a","level":"LOUD"}', JSON, 422, "level"),
    ("service as list", b'{"service":["a"],"level":"INFO"}', JSON, 422, "service"),
    ("service with slash", b'{"service":"../etc","level":"INFO"}', JSON, 422, "service"),
    ("missing service", b'{"level":"INFO"}', JSON, 422, "service"),
    ("unknown field", b'{"service":"a","level":"INFO","shell":"rm -rf /"}', JSON, 422, "shell"),
    (
        "timestamp as number",
        b'{"service":"a","level":"INFO","timestamp":1700000000}',
        JSON,
        422,
        "timestamp",
    ),
    (
        "timestamp year 9999",
        b'{"service":"a","level":"INFO","timestamp":"9999-01-01T00:00:00Z"}',
        JSON,
        422,
        "timestamp",
    ),
    (
        "oversize message",
        b'{"service":"a","level":"INFO","message":"' + b"x" * 9000 + b'"}',
        JSON,
        422,
        "message",
    ),
    (
        "too many attributes",
        b'{"service":"a","level":"INFO","attributes":{'
        + b",".join(b'"k%d":1' % i for i in range(65))
        + b"}}",
        JSON,
        422,
        "attributes",
    ),
    (
        "nested attribute",
        b'{"service":"a","level":"INFO","attributes":{"k":{"deep":[1,2]}}}',
        JSON,
        422,
        "attributes",
    ),
    (
        "attribute too long but numeric",
        b'{"service":"a","level":"INFO","attributes":{"k":"' + b"0" * 2000 + b'"}}',
        JSON,
        422,
        "attributes",
    ),
    ("deep nesting", b"[" * 30_000 + b"]" * 30_000, JSON, 422, ("nested too deep", "recursion")),
    (
        "deep nesting in a field",
        b'{"service":"a","level":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        JSON,
        422,
        ("nested too deep", "recursion"),
    ),
    ("truncated json", b'{"service":"a","level":"INF', JSON, 422, "JSON"),
    ("empty body", b"", JSON, 422, "body"),
    ("not utf-8", b'{"service":"\xff\xfe","level":"INFO"}', JSON, 422, "JSON"),
    ("array body", b'[{"service":"a","level":"INFO"}]', JSON, 422, "body"),
    ("text/plain", b'{"service":"a","level":"INFO"}', "text/plain", 422, "body"),
    ("form", b"service=a&level=INFO", "application/x-www-form-urlencoded", 422, "body"),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "mentions"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_SCORE_BODIES],
)
async def test_bad_score_bodies_are_named_4xx(
    running: RunningApp,
    body: bytes,
    content_type: str,
    status: int,
    mentions: str | tuple[str, ...],
) -> None:
    response = await running.client.post(
        "/score", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    named = [problem["detail"]] + [e["field"] for e in problem.get("errors", [])]
    alternatives = (mentions,) if isinstance(mentions, str) else mentions
    assert any(m in text for m in alternatives for text in named), problem
    assert len(response.content) < 4096, "a 4xx must not echo a large input back"


async def test_bad_events_deep_in_a_batch_are_named_by_index(running: RunningApp) -> None:
    logs = [{"service": "a", "level": "INFO"}] * 5 + [{"service": "a", "level": "NOPE"}]
    response = await running.client.post("/score/batch", json={"logs": logs})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "logs.5.level"


async def test_bad_training_rows_are_named(running: RunningApp) -> None:
    client = running.client
    cases = {
        b'{"data":[[1.0,0.0],[NaN,0.0]]}': "data.1.0",
        b'{"data":[[1.0,7.0]]}': "data[0][1]",
        b'{"data":[[1.0]]}': "data.0",
        b'{"data":[[1.0,0.0]],"logs":[]}': "exactly one",
        b'{"data":[[1.0,0.0]],"parameters":{"n_estimators":100000}}': "parameters.n_estimators",
    }
    for body, mentions in cases.items():
        response = await client.post(
            "/train", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, body
        assert mentions in response.text, (body, response.text)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/stats/..%2F..%2Fetc%2Fpasswd", 404),
        ("/stats/../../etc/passwd", 404),
        ("/stats/a%00b", 422),
        ("/stats/a%0Ab", 422),
        ("/stats/%3Cscript%3E", 422),
        ("/stats/" + "a" * 129, 422),
        ("/stats/a/b", 404),
        ("/stats/", 404),
        ("/stats/never-seen", 404),
    ],
)
async def test_path_tricks_in_stats_are_4xx(running: RunningApp, path: str, status: int) -> None:
    response = await running.client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert "root:" not in response.text


async def test_bad_input_changes_nothing(running: RunningApp) -> None:
    client = running.client
    for body, content_type, _status, _mentions in (case[1:] for case in BAD_SCORE_BODIES):
        await client.post("/score", content=body, headers={"content-type": content_type})
    engine = running.app.state.insighthub.engine
    assert len(engine.windows) == 0
    metrics = (await client.get("/metrics")).text
    assert 'status="500"' not in metrics
