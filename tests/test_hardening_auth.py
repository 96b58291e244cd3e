"""Access control: the API key on mutating endpoints, checked before the body is read and in
constant time; settings that refuse to start unsafe; CORS off unless configured."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.settings import Settings
from tests.conftest import RunningApp, make_settings, start_app
from tests.hardening_support import API_KEY, endless_body, raw_request, seeded_settings

BAD_TRAIN_BODY = {"data": [[1.0, 0.0]]}  # passes the guard, then fails validation: no job starts


@pytest.fixture
async def open_app(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async for running_app in start_app(seeded_settings(tmp_path)):
        yield running_app


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async for running_app in start_app(seeded_settings(tmp_path, api_key=API_KEY)):
        yield running_app


def _assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401
    assert "Authorization: Bearer" in body["detail"]
    assert API_KEY not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"X-API-Key": "wrong-key-0123456789abcdef"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": API_KEY},
        {"X-API-Key": API_KEY[:-1]},
        {"X-API-Key": API_KEY + "x"},
        {"Authorization": "Bearer "},
        {"X-Api-Token": API_KEY},
    ],
)
async def test_train_without_the_right_key_is_401(
    keyed: RunningApp, headers: dict[str, str]
) -> None:
    _assert_unauthorized(await keyed.client.post("/train", json=BAD_TRAIN_BODY, headers=headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"bearer {API_KEY}"},
        {"X-API-Key": API_KEY},
        {"Authorization": "Bearer wrong-key-0123456789abcdef", "X-API-Key": API_KEY},
    ],
)
async def test_train_with_the_key_reaches_the_route(
    keyed: RunningApp, headers: dict[str, str]
) -> None:
    response = await keyed.client.post("/train", json=BAD_TRAIN_BODY, headers=headers)
    assert response.status_code == 422  # validation ran: the guard let it through


async def test_activation_needs_the_key(keyed: RunningApp) -> None:
    version = (await keyed.client.get("/models")).json()["active"]
    _assert_unauthorized(await keyed.client.post(f"/models/{version}/activate"))
    _assert_unauthorized(await keyed.client.post("/models/v9999-20260101T000000Z/activate"))
    response = await keyed.client.post(
        f"/models/{version}/activate", headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 200
    assert response.json()["active"] is True


async def test_reads_and_scoring_stay_open_by_default(keyed: RunningApp) -> None:
    client = keyed.client
    event = {"service": "api", "level": "INFO", "latency_ms": 12.0}
    assert (await client.post("/score", json=event)).status_code == 200
    assert (await client.post("/score/batch", json={"logs": [event]})).status_code == 200
    for path in ("/models", "/detectors", "/stats/api", "/health", "/ready", "/metrics"):
        assert (await client.get(path)).status_code == 200, path


async def test_scoring_can_require_the_key(tmp_path: Path) -> None:
    settings = seeded_settings(tmp_path, api_key=API_KEY, require_key_for_scoring=True)
    event = {"service": "api", "level": "INFO", "latency_ms": 12.0}
    async for running_app in start_app(settings):
        client = running_app.client
        _assert_unauthorized(await client.post("/score", json=event))
        _assert_unauthorized(await client.post("/score/batch", json={"logs": [event]}))
        keyed = {"Authorization": f"Bearer {API_KEY}"}
        assert (await client.post("/score", json=event, headers=keyed)).status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_without_a_configured_key_mutations_are_open(open_app: RunningApp) -> None:
    assert (await open_app.client.post("/train", json=BAD_TRAIN_BODY)).status_code == 422


async def test_unauthorized_request_body_is_never_read(keyed: RunningApp) -> None:
    """A client streaming an endless body gets its 401 at once; not one byte is pulled."""
    response = await raw_request(
        keyed.app,
        "POST",
        "/train",
        headers={"content-type": "application/json", "transfer-encoding": "chunked"},
        body=endless_body(),
    )
    assert response.status == 401
    assert response.bytes_read == 0
    assert response.receive_calls == 0
    assert json.loads(response.body)["title"] == "Unauthorized"


async def test_authorized_request_body_is_read(keyed: RunningApp) -> None:
    body = json.dumps(BAD_TRAIN_BODY).encode()
    response = await raw_request(
        keyed.app,
        "POST",
        "/train",
        headers={"content-type": "application/json", "x-api-key": API_KEY},
        body=body,
    )
    assert response.status == 422
    assert response.bytes_read == len(body)


async def test_keys_are_compared_in_constant_time(
    keyed: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    await keyed.client.post("/train", json=BAD_TRAIN_BODY, headers={"X-API-Key": "guess" * 4})
    assert calls, "the key was not compared with hmac.compare_digest"
    # Digests of equal length whatever the guess: the time cannot depend on the guess's length.
    assert all(len(a) == len(b) == 32 for a, b in calls)


async def test_openapi_declares_the_security_schemes(keyed: RunningApp) -> None:
    spec = (await keyed.client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["BearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["BearerKey"]["description"],
    }
    assert schemes["ApiKeyHeader"]["in"] == "header"
    assert schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    either: list[dict[str, list[str]]] = [{"BearerKey": []}, {"ApiKeyHeader": []}]
    assert spec["paths"]["/train"]["post"]["security"] == either
    assert spec["paths"]["/models/{version}/activate"]["post"]["security"] == either
    assert "401" in spec["paths"]["/train"]["post"]["responses"]
    assert "security" not in spec["paths"]["/score"]["post"]
    assert "security" not in spec["paths"]["/models"]["get"]
    docs = await keyed.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text


def test_production_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="INSIGHTHUB_API_KEY must be set"):
        make_settings(tmp_path, env="production")
    assert make_settings(tmp_path, env="production", api_key=API_KEY).api_key is not None


def test_production_reads_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSIGHTHUB_ENV", "production")
    monkeypatch.setenv("INSIGHTHUB_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    with pytest.raises(ValidationError, match="INSIGHTHUB_API_KEY must be set"):
        Settings()
    monkeypatch.setenv("INSIGHTHUB_API_KEY", API_KEY)
    settings = Settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == API_KEY
    assert API_KEY not in repr(settings)


def test_a_short_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(tmp_path, api_key="hunter2-short")
    assert "at least 16 characters" in str(raised.value)
    assert "hunter2-short" not in str(raised.value)


def test_wildcard_cors_with_credentials_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="may not contain '\\*'"):
        make_settings(tmp_path, cors_origins="*", cors_allow_credentials=True)
    assert make_settings(tmp_path, cors_origins="*").cors_origins == ["*"]
    split = make_settings(tmp_path, cors_origins="https://a.example, https://b.example")
    assert split.cors_origins == ["https://a.example", "https://b.example"]


PREFLIGHT = {
    "Origin": "https://ops.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key,content-type",
}


async def test_cors_is_off_by_default(open_app: RunningApp) -> None:
    client = open_app.client
    preflight = await client.options("/train", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    response = await client.get("/health", headers={"Origin": "https://ops.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_only_configured_origins(tmp_path: Path) -> None:
    settings = seeded_settings(
        tmp_path, api_key=API_KEY, cors_origins="https://ops.example", cors_allow_credentials=True
    )
    async for running_app in start_app(settings):
        client = running_app.client
        preflight = await client.options("/train", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://ops.example"
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        # A browser can read the 401, so the page can tell its user to sign in.
        refused = await client.post("/train", json={}, headers={"Origin": "https://ops.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://ops.example"
        foreign = await client.options(
            "/train", headers=PREFLIGHT | {"Origin": "https://evil.example"}
        )
        assert foreign.headers.get("access-control-allow-origin") != "https://evil.example"
