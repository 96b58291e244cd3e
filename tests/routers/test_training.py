"""POST /train and GET /train/{job_id}: background fits in a worker process, validation that
leaves the active model untouched, failures that leave it serving, and restarts.

One app (and so one worker pool, ~2 s to spawn) serves most tests of this module; each test reads
the active version it starts from instead of assuming an order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from app.schemas.training import JobStatus, check_raw_rows
from tests import fakes
from tests.conftest import RunningApp, copy_artifacts, make_settings, start_app
from tests.helpers import (
    FINAL_STATUSES,
    active_version,
    assert_problem,
    event,
    raw_rows,
    stored_versions,
    wait_for_job,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(
    tmp_path_factory: pytest.TempPathFactory, bootstrapped_artifacts: Path
) -> AsyncIterator[RunningApp]:
    root = tmp_path_factory.mktemp("training")
    copy_artifacts(bootstrapped_artifacts, root / "artifacts")
    async for running in start_app(make_settings(root)):
        yield running


def events(n: int, services: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    medians = np.geomspace(2.0, 5000.0, services)
    codes = rng.integers(0, services, n)
    latency = np.round(medians[codes] * rng.lognormal(0.0, 0.3, n), 3).tolist()
    errors = (rng.random(n) < 0.01).tolist()
    return [
        {"service": f"svc-{c}", "level": "ERROR" if e else "INFO", "latency_ms": lat}
        for c, lat, e in zip(codes.tolist(), latency, errors, strict=True)
    ]


async def test_train_on_raw_rows(service: RunningApp) -> None:
    client = service.client
    before = await active_version(client)
    response = await client.post("/train", json={"data": raw_rows(500)})
    assert response.status_code == 202
    accepted = response.json()
    assert set(accepted) == {"job_id", "status"}
    assert accepted["status"] in {"queued", "running"}
    job = await wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job
    assert job["error"] is None
    assert job["rows"] == 500
    assert job["finished_at"] is not None
    version = job["model_version"]
    assert version
    assert version != before
    models = (await client.get("/models")).json()
    assert models["active"] == version
    info = next(v for v in models["versions"] if v["version"] == version)
    assert info["source"] == "raw_rows"
    assert info["rows"] == 500
    assert info["services"] == 0  # raw rows carry no service: no baseline is kept
    scored = (await client.post("/score", json=event())).json()
    assert scored["model_version"] == version


async def test_train_on_logs_keeps_service_baselines(service: RunningApp) -> None:
    client = service.client
    body = {"logs": events(600, services=3), "parameters": {"n_estimators": 25}}
    response = await client.post("/train", json=body)
    assert response.status_code == 202
    job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    models = (await client.get("/models")).json()
    info = next(v for v in models["versions"] if v["version"] == job["model_version"])
    assert models["active"] == job["model_version"]
    assert info["source"] == "logs"
    assert info["services"] == 3
    assert info["parameters"]["n_estimators"] == 25
    assert info["parameters"]["contamination"] == 0.02  # the settings' default fills the rest
    # A trained service is judged from its first live event: its baseline came with the model.
    scored = (await client.post("/score", json=event("svc-0", "INFO", 2.0))).json()
    assert scored["baseline_ready"] is True
    assert scored["service_events_seen"] > 0


async def test_model_trained_without_missing_latency_takes_an_event_without_one_calmly(
    service: RunningApp,
) -> None:
    """latency_ms is optional live. A model trained on logs that always carry one must judge a
    normal event without it on its level (and message) alone: before the autoencoder was shown
    such rows, it reconstructed them ~330,000 squared spreads off and flagged every one."""
    client = service.client
    body = {"logs": events(600, services=3, seed=21), "parameters": {"n_estimators": 25}}
    response = await client.post("/train", json=body)
    job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    for missing in ({"latency_ms": None}, {}):
        scored = await client.post("/score", json=event("svc-1", "INFO", None) | missing)
        answer = scored.json()
        assert scored.status_code == 200, answer
        assert answer["model_version"] == job["model_version"]
        for method in ("autoencoder", "isolation_forest"):
            assert answer["methods"][method]["is_anomaly"] is False, answer["methods"][method]
        assert answer["methods"]["autoencoder"]["anomaly_score"] < 0.5, answer
        assert answer["is_anomaly"] is False, answer


async def test_train_without_activation_keeps_serving_the_old_version(
    service: RunningApp,
) -> None:
    client = service.client
    before = await active_version(client)
    response = await client.post("/train", json={"data": raw_rows(200, 5), "activate": False})
    job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded"
    assert job["model_version"] in await stored_versions(client)
    assert await active_version(client) == before


async def test_unknown_job_is_404(service: RunningApp) -> None:
    response = await service.client.get("/train/0123456789abcdef")
    assert_problem(response, 404)
    assert "0123456789abcdef" in response.json()["detail"]


ENOUGH = raw_rows(60)
BAD_TRAIN_BODIES: list[tuple[str, Any, str | None]] = [
    ("both sources", {"data": ENOUGH, "logs": events(60)}, "exactly one"),
    ("neither source", {}, "exactly one"),
    ("only parameters", {"parameters": {"n_estimators": 5}}, "exactly one"),
    ("short row", {"data": [*ENOUGH, [1.0]]}, "data.60"),
    ("long row", {"data": [[1.0, 0.0, 3.0], *ENOUGH]}, "data.0"),
    ("text in row", {"data": [["fast", 0.0], *ENOUGH]}, "data.0.0"),
    ("bools in row", {"data": [[True, False], *ENOUGH]}, "data.0.0"),
    ("numeric text in row", {"data": [*ENOUGH, ["12", 0.0]]}, "data.60.0"),
    ("row not a list", {"data": [*ENOUGH, 5]}, "data.60"),
    ("data not a list", {"data": "1,0"}, "data"),
    ("negative latency", {"data": [*ENOUGH, [-1.0, 0.0]]}, "data[60][0]"),
    ("absurd latency", {"data": [[1e12, 0.0], *ENOUGH]}, "data[0][0]"),
    ("unknown level score", {"data": [*ENOUGH, [10.0, 7.0]]}, "data[60][1]"),
    ("fractional level score", {"data": [*ENOUGH, [10.0, 0.5]]}, "data[60][1]"),
    ("too few rows", {"data": ENOUGH[:10]}, "data"),
    ("too few events", {"logs": events(10)}, "logs"),
    ("bad event", {"logs": [*events(3), {"service": "x", "level": "LOUD"}]}, "logs.3.level"),
    ("event with unknown field", {"logs": [*events(60), {**event(), "host": "a"}]}, "logs.60.host"),
    ("unknown top-level field", {"data": ENOUGH, "dataset": "prod"}, "dataset"),
    ("contamination too high", {"data": ENOUGH, "parameters": {"contamination": 0.9}}, None),
    ("zero trees", {"data": ENOUGH, "parameters": {"n_estimators": 0}}, None),
    ("unknown parameter", {"data": ENOUGH, "parameters": {"max_depth": 3}}, None),
    ("negative random_state", {"data": ENOUGH, "parameters": {"random_state": -1}}, None),
    ("random_state past 2**32", {"data": ENOUGH, "parameters": {"random_state": 2**40}}, None),
    ("activate not a bool", {"data": ENOUGH, "activate": "later"}, "activate"),
]
BAD_PARAMETER_FIELDS = {
    "contamination too high": "parameters.contamination",
    "zero trees": "parameters.n_estimators",
    "unknown parameter": "parameters.max_depth",
    "negative random_state": "parameters.random_state",
    "random_state past 2**32": "parameters.random_state",
}


@pytest.mark.parametrize(
    ("case", "body", "named"), BAD_TRAIN_BODIES, ids=[c[0] for c in BAD_TRAIN_BODIES]
)
async def test_rejected_training_leaves_the_model_untouched(
    service: RunningApp, case: str, body: Any, named: str | None
) -> None:
    client = service.client
    before_active = await active_version(client)
    before_versions = await stored_versions(client)
    response = await client.post("/train", json=body)
    assert_problem(response, 422, BAD_PARAMETER_FIELDS.get(case, named))
    assert await active_version(client) == before_active
    assert await stored_versions(client) == before_versions


async def test_a_small_body_has_its_rows_checked_once(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSONBodyRoute validates the body from bytes; FastAPI then validates the model it is handed
    again, and pydantic re-runs the "after" validator on it. The row checks must not run twice,
    and a bad row must still be a 422 naming it."""
    checked: list[int] = []

    def counting(data: list[list[float]]) -> None:
        checked.append(len(data))
        check_raw_rows(data)

    monkeypatch.setattr("app.schemas.training.check_raw_rows", counting)
    client = service.client
    response = await client.post("/train", json={"data": raw_rows(80), "activate": False})
    assert response.status_code == 202, response.text
    assert checked == [80]
    job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    checked.clear()
    response = await client.post("/train", json={"data": [*raw_rows(80), [10.0, 7.0]]})
    assert_problem(response, 422, "data[80][1]")
    assert checked == [81]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"data": [[NaN, 0]' + b", [1, 0]" * 60 + b"]}",
        b'{"data": [[Infinity, 0]' + b", [1, 0]" * 60 + b"]}",
        b'{"data": [[1, -Infinity]' + b", [1, 0]" * 60 + b"]}",
        b'{"data": [[1, 0],',
        b"[[1, 0], [2, 0]]",
        b"",
    ],
    ids=["nan", "infinity", "minus-infinity-level", "truncated-json", "bare-array", "empty-body"],
)
async def test_malformed_train_json_is_422(service: RunningApp, raw: bytes) -> None:
    client = service.client
    before = await active_version(client)
    response = await client.post(
        "/train", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422)
    assert await active_version(client) == before


async def test_failed_training_job_leaves_the_active_model_serving(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = service.client
    before_active = await active_version(client)
    before_versions = await stored_versions(client)
    monkeypatch.setattr("app.trainer.fit_model", fakes.failing_fit)
    response = await client.post("/train", json={"data": raw_rows(100)})
    assert response.status_code == 202
    job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "failed"
    assert job["model_version"] is None
    assert fakes.INJECTED_MESSAGE in job["error"]
    assert job["error"].startswith("ValueError")
    assert await active_version(client) == before_active
    assert await stored_versions(client) == before_versions
    scored = await client.post("/score", json=event())
    assert scored.status_code == 200
    assert scored.json()["model_version"] == before_active
    assert (await client.get("/ready")).json()["model_version"] == before_active


async def test_dead_training_worker_fails_the_job_and_the_pool_recovers(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = service.client
    before_active = await active_version(client)
    with monkeypatch.context() as patch:
        patch.setattr("app.trainer.fit_model", fakes.dying_fit)
        response = await client.post("/train", json={"data": raw_rows(100)})
        job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "failed"
    assert "died" in job["error"]
    assert await active_version(client) == before_active
    assert (await client.post("/score", json=event())).status_code == 200
    # The next job gets a fresh worker pool and succeeds.
    response = await client.post("/train", json={"data": raw_rows(100, 9)})
    job = await wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert await active_version(client) == job["model_version"]


async def test_scoring_goes_on_while_100k_events_train(service: RunningApp) -> None:
    """The issue's size: 100,000 events in one request. While the worker fits, /score keeps
    answering with the old model; the job's status, read after each answer, proves the overlap."""
    client = service.client
    before = await active_version(client)
    response = await client.post("/train", json={"logs": events(100_000, services=5, seed=3)})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    answered_while_training = 0
    statuses_seen: set[str] = set()
    for i in range(1_000_000):
        scored = await client.post("/score", json=event("live", "INFO", 40.0 + i % 9, i * 0.1))
        assert scored.status_code == 200
        status = (await client.get(f"/train/{job_id}")).json()["status"]
        if status in FINAL_STATUSES:
            break
        statuses_seen.add(status)
        # The new model is swapped in before the job says succeeded, so this answer was old.
        assert scored.json()["model_version"] == before
        answered_while_training += 1
        await asyncio.sleep(0.01)  # a steady trickle, not a busy loop competing with the fit
    assert answered_while_training >= 1
    assert statuses_seen <= {JobStatus.queued.value, JobStatus.running.value}
    job = await wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["rows"] == 100_000
    new_version = job["model_version"]
    assert await active_version(client) == new_version
    scored = (await client.post("/score", json=event("svc-4", "INFO", 5000.0))).json()
    assert scored["model_version"] == new_version
    assert scored["baseline_ready"] is True


async def test_restart_serves_the_active_version(
    tmp_path: Path, bootstrapped_artifacts: Path
) -> None:
    copy_artifacts(bootstrapped_artifacts, tmp_path / "artifacts")
    settings = make_settings(tmp_path)
    async for running in start_app(settings):
        response = await running.client.post("/train", json={"logs": events(300)})
        job = await wait_for_job(running.client, response.json()["job_id"])
        assert job["status"] == "succeeded"
        trained = job["model_version"]
        first_life_score = (await running.client.post("/score", json=event("svc-1"))).json()
    assert first_life_score["model_version"] == trained

    async for running in start_app(settings):
        assert (await running.client.get("/ready")).json()["model_version"] == trained
        assert await active_version(running.client) == trained
        scored = (await running.client.post("/score", json=event("svc-1"))).json()
        assert scored["model_version"] == trained

    # What is on disk: ACTIVE names the version, and its manifest describes it exactly.
    root = settings.artifacts_dir
    assert (root / "ACTIVE").read_text(encoding="utf-8").strip() == trained
    folder = root / "versions" / trained
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.npz"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["version"] == trained
    assert manifest["checksum"] == sha256((folder / "model.npz").read_bytes()).hexdigest()
    assert manifest["rows"] == 300
    assert manifest["source"] == "logs"
    assert manifest["parameters"] == {
        "contamination": 0.02,
        "n_estimators": 100,
        "max_samples": 256,
        "random_state": 42,
    }
    assert {"python", "numpy", "scikit-learn", "insighthub"} <= set(manifest["library_versions"])
    assert manifest["created_at"]
    assert not list(root.glob(".tmp-*"))  # no staging leftovers
