"""Every class of bad input to /score and /score/batch is a 4xx problem+json naming the field,
never a 500, and never echoes the offending value back (a NaN cannot be written as JSON)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.helpers import assert_problem, event


@pytest.fixture
def settings(bootstrapped_settings: Settings) -> Settings:
    return bootstrapped_settings


GOOD = {"service": "api", "level": "INFO", "latency_ms": 12.5}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != field}


BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("missing service", without("service"), "service"),
    ("empty service", with_(service=""), "service"),
    ("service with space", with_(service="check out"), "service"),
    ("service with slash", with_(service="a/b"), "service"),
    ("service with dots up", with_(service="../etc"), "service"),
    ("service non-ascii", with_(service="paiement-é"), "service"),
    ("service newline", with_(service="api\n"), "service"),
    ("service too long", with_(service="s" * 129), "service"),
    ("service a number", with_(service=42), "service"),
    ("service null", with_(service=None), "service"),
    ("missing level", without("level"), "level"),
    ("unknown level", with_(level="LOUD"), "level"),
    ("empty level", with_(level=""), "level"),
    ("level a number", with_(level=2), "level"),
    ("level a list", with_(level=["ERROR"]), "level"),
    ("negative latency", with_(latency_ms=-1), "latency_ms"),
    ("absurd latency", with_(latency_ms=1e12), "latency_ms"),
    ("latency just past a day", with_(latency_ms=86_400_000.001), "latency_ms"),
    ("latency as text", with_(latency_ms="12"), "latency_ms"),
    ("latency a bool", with_(latency_ms=True), "latency_ms"),
    ("latency a list", with_(latency_ms=[1, 2]), "latency_ms"),
    ("latency an object", with_(latency_ms={"value": 1}), "latency_ms"),
    ("message a number", with_(message=5), "message"),
    ("message too long", with_(message="x" * 8193), "message"),
    ("unknown field", with_(host="web-1"), "host"),
    ("unknown field like a typo", with_(latency=12), "latency"),
    ("timestamp words", with_(timestamp="yesterday"), "timestamp"),
    ("timestamp date only", with_(timestamp="2026-11-24"), "timestamp"),
    ("timestamp epoch text", with_(timestamp="1700000000"), "timestamp"),
    ("timestamp epoch number", with_(timestamp=1700000000), "timestamp"),
    ("timestamp float", with_(timestamp=1.7e9), "timestamp"),
    ("timestamp bool", with_(timestamp=True), "timestamp"),
    ("timestamp year 3000", with_(timestamp="3000-01-01T00:00:00Z"), "timestamp"),
    ("timestamp before 1970", with_(timestamp="1969-12-31T23:59:59Z"), "timestamp"),
    ("timestamp month 13", with_(timestamp="2026-13-01T00:00:00Z"), "timestamp"),
    ("timestamp hour 25", with_(timestamp="2026-11-24T25:00:00Z"), "timestamp"),
    ("timestamp bad offset", with_(timestamp="2026-11-24T10:00:00+25:00"), "timestamp"),
    ("timestamp trailing text", with_(timestamp="2026-11-24T10:00:00Z and then"), "timestamp"),
    ("timestamp us style", with_(timestamp="11/24/2026 10:00"), "timestamp"),
    ("attributes a list", with_(attributes=["a", "b"]), "attributes"),
    ("attributes a string", with_(attributes="region=eu"), "attributes"),
    ("too many attributes", with_(attributes={f"k{i}": i for i in range(65)}), "attributes"),
    ("nested attribute", with_(attributes={"http": {"status": 500}}), "attributes.http"),
    ("list attribute", with_(attributes={"tags": ["a", "b"]}), "attributes.tags"),
    ("null attribute", with_(attributes={"user": None}), "attributes.user"),
    ("empty attribute key", with_(attributes={"": 1}), "attributes"),
    ("long attribute key", with_(attributes={"k" * 129: 1}), "attributes"),
    ("long attribute value", with_(attributes={"note": "v" * 1025}), "attributes.note"),
]


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_EVENTS, ids=[case for case, _, _ in BAD_EVENTS]
)
async def test_bad_event_is_422_naming_the_field(
    client: httpx.AsyncClient, case: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/score", json=body)
    assert_problem(response, 422, field)
    assert len(response.content) < 4000  # the input is never echoed back


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_EVENTS, ids=[case for case, _, _ in BAD_EVENTS]
)
async def test_bad_event_in_a_batch_names_its_index(
    client: httpx.AsyncClient, case: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/score/batch", json={"logs": [GOOD, GOOD, body, GOOD]})
    assert_problem(response, 422, f"logs.2.{field}")
    assert (await client.get("/stats/api")).status_code == 404  # nothing of the batch was scored


NON_FINITE = [
    ("NaN latency", b'{"service": "api", "level": "INFO", "latency_ms": NaN}', "latency_ms"),
    (
        "Infinity latency",
        b'{"service": "api", "level": "INFO", "latency_ms": Infinity}',
        "latency_ms",
    ),
    (
        "-Infinity latency",
        b'{"service": "api", "level": "INFO", "latency_ms": -Infinity}',
        "latency_ms",
    ),
    (
        "overflowing latency",
        b'{"service": "api", "level": "INFO", "latency_ms": 1e999}',
        "latency_ms",
    ),
    (
        "NaN attribute",
        b'{"service": "api", "level": "INFO", "attributes": {"x": NaN}}',
        "attributes.x",
    ),
    ("NaN unknown field", b'{"service": "api", "level": "INFO", "score": NaN}', "score"),
    ("NaN as service", b'{"service": NaN, "level": "INFO"}', "service"),
]


@pytest.mark.parametrize(("case", "raw", "field"), NON_FINITE, ids=[c for c, _, _ in NON_FINITE])
async def test_non_finite_numbers_in_raw_json_are_422(
    client: httpx.AsyncClient, case: str, raw: bytes, field: str
) -> None:
    headers = {"content-type": "application/json"}
    response = await client.post("/score", content=raw, headers=headers)
    assert_problem(response, 422, field)
    assert b"NaN" not in response.content
    assert b"Infinity" not in response.content
    batch = b'{"logs": [' + raw + b"]}"
    response = await client.post("/score/batch", content=batch, headers=headers)
    assert_problem(response, 422, f"logs.0.{field}")


MALFORMED_BODIES = [
    ("truncated", b'{"service": "api", "level": '),
    ("trailing comma", b'{"service": "api", "level": "INFO",}'),
    ("single quotes", b"{'service': 'api', 'level': 'INFO'}"),
    ("empty", b""),
    ("null", b"null"),
    ("array", b'[{"service": "api", "level": "INFO"}]'),
    ("string", b'"api INFO"'),
    ("number", b"42"),
    ("not utf-8", b'{"service": "\xff\xfe", "level": "INFO"}'),
    ("deeply nested", b'{"attributes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
]


@pytest.mark.parametrize(("case", "raw"), MALFORMED_BODIES, ids=[c for c, _ in MALFORMED_BODIES])
@pytest.mark.parametrize("path", ["/score", "/score/batch"])
async def test_malformed_json_is_a_client_error(
    client: httpx.AsyncClient, path: str, case: str, raw: bytes
) -> None:
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == response.status_code


async def test_json_with_a_wrong_content_type_is_a_client_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/score", content=json.dumps(GOOD), headers={"content-type": "text/plain"}
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("case", "body", "field"),
    [
        ("no logs", {}, "logs"),
        ("logs null", {"logs": None}, "logs"),
        ("logs an object", {"logs": GOOD}, "logs"),
        ("logs a string", {"logs": "api INFO"}, "logs"),
        ("empty batch", {"logs": []}, "logs"),
        ("unknown field", {"logs": [GOOD], "mode": "fast"}, "mode"),
        ("event not an object", {"logs": [GOOD, "api INFO"]}, "logs.1"),
    ],
)
async def test_bad_batch_shape_is_422(
    client: httpx.AsyncClient, case: str, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post("/score/batch", json=body), 422, field)


async def test_every_error_of_a_batch_is_listed(client: httpx.AsyncClient) -> None:
    body = {"logs": [with_(level="LOUD"), GOOD, with_(latency_ms=-5), without("service")]}
    response = await client.post("/score/batch", json=body)
    assert_problem(response, 422)
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["logs.0.level", "logs.2.latency_ms", "logs.3.service"]
    assert "(and 2 more)" in response.json()["detail"]


@pytest.mark.parametrize(
    ("given", "canonical", "level_score"),
    [
        ("warning", "WARN", 1.0),
        ("Warning", "WARN", 1.0),
        ("warn", "WARN", 1.0),
        ("Fatal", "CRITICAL", 3.0),
        ("critical", "CRITICAL", 3.0),
        ("error", "ERROR", 2.0),
        ("Info", "INFO", 0.0),
        ("debug", "DEBUG", 0.0),
    ],
)
async def test_level_aliases_and_any_case_are_accepted(
    client: httpx.AsyncClient, given: str, canonical: str, level_score: float
) -> None:
    response = await client.post("/score", json=with_(level=given))
    assert response.status_code == 200, response.text
    metrics = response.json()["methods"]["isolation_forest"]["metrics"]
    assert metrics["level_score"] == level_score
    explanation = response.json()["explanation"]
    assert (f"level {canonical}" in explanation) == (level_score >= 2.0)


@pytest.mark.parametrize(
    "body",
    [
        with_(latency_ms=0),
        with_(latency_ms=86_400_000),
        with_(latency_ms=None),
        with_(message="x" * 8192),
        with_(timestamp="2026-11-24T10:15:00Z"),
        with_(timestamp="2026-11-24T10:15:00.123456+05:30"),
        with_(timestamp="2026-11-24 10:15:00"),  # RFC 3339 allows a space; no offset means UTC
        with_(attributes={f"k{i}": i for i in range(64)}),
        with_(attributes={"region": "eu", "status": 504, "ok": False, "ratio": 0.5}),
        event(service="A.b_c-9", level="INFO"),
    ],
    ids=lambda body: ",".join(sorted(set(body) - {"service", "level"})) or "minimal",
)
async def test_edge_of_valid_is_accepted(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/score", json=body)
    assert response.status_code == 200, response.text
