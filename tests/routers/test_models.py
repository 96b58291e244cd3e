"""GET /detectors, GET /models and POST /models/{version}/activate (rollback)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from app.local import AnomalyDetector
from app.model import TrainingData
from app.settings import Settings
from tests.helpers import assert_problem, event

UNAVAILABLE = {"lstm_sequence"}
SCORING = {
    "isolation_forest",
    "sliding_window",
    "templates",
    "sequence",
    "forecast",
    "likelihood",
    "pattern",
    "record",
    "autoencoder",
}


@pytest.fixture
def settings(bootstrapped_settings: Settings) -> Settings:
    return bootstrapped_settings


def raw_rows(n: int, seed: int) -> TrainingData:
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(4.0, 0.3, n)
    levels = rng.choice([0.0, 1.0, 2.0], n, p=[0.95, 0.04, 0.01])
    return TrainingData.from_raw_rows(np.column_stack([latency, levels]).tolist())


async def test_detectors_lists_every_registered_method(client: httpx.AsyncClient) -> None:
    response = await client.get("/detectors")
    assert response.status_code == 200
    detectors = {d["name"]: d for d in response.json()["detectors"]}
    assert set(detectors) == SCORING | UNAVAILABLE
    forest = detectors["isolation_forest"]
    assert forest["available"] is True
    assert forest["kind"] == "batch"
    assert forest["weight"] == 1.0
    assert forest["parameters"] == {
        "contamination": 0.02,
        "n_estimators": 100,
        "max_samples": 256,
        "random_state": 42,
    }
    window = detectors["sliding_window"]
    assert window["available"] is True
    assert window["kind"] == "online"
    assert window["parameters"]["window_minutes"] == 5.0
    for name in UNAVAILABLE:
        assert detectors[name]["available"] is False
        assert detectors[name]["reason"]
        # The bootstrap model has no LSTM (it is fitted on events with messages, with torch).
        assert "the active model has none" in detectors[name]["reason"] or (
            "PyTorch" in detectors[name]["reason"]
        )
    scored = (await client.post("/score", json=event())).json()
    assert UNAVAILABLE.isdisjoint(scored["methods"])


async def test_detector_settings_show_in_detectors(tmp_path: Path) -> None:
    from tests.conftest import make_settings, start_app

    settings = make_settings(
        tmp_path, if_n_estimators=20, window_minutes=2.0, weight_sliding_window=0.5
    )
    async for running in start_app(settings):
        detectors = {
            d["name"]: d for d in (await running.client.get("/detectors")).json()["detectors"]
        }
        assert detectors["isolation_forest"]["parameters"]["n_estimators"] == 20
        assert detectors["sliding_window"]["parameters"]["window_minutes"] == 2.0
        assert detectors["sliding_window"]["weight"] == 0.5


async def test_models_lists_the_bootstrap_version(client: httpx.AsyncClient) -> None:
    body = (await client.get("/models")).json()
    assert len(body["versions"]) == 1
    info = body["versions"][0]
    assert body["active"] == info["version"]
    assert info["active"] is True
    assert info["source"] == "bootstrap"
    assert info["rows"] == 20_000
    assert len(info["checksum"]) == 64
    assert {"python", "numpy", "scikit-learn"} <= set(info["library_versions"])
    assert info["parameters"]["n_estimators"] == 100


async def test_rollback_to_an_older_version(settings: Settings) -> None:
    # Two more versions stored by the Python API (in-process, no worker pool needed).
    local = AnomalyDetector(settings)
    bootstrap_version = local.model_version
    newer = local.train(raw_rows(300, 1), {"n_estimators": 10})
    newest = local.train(raw_rows(300, 2), {"n_estimators": 12})
    from tests.conftest import start_app

    async for running in start_app(settings):
        client = running.client
        models = (await client.get("/models")).json()
        assert [v["version"] for v in models["versions"]] == [bootstrap_version, newer, newest]
        assert models["active"] == newest
        assert (await client.post("/score", json=event())).json()["model_version"] == newest

        response = await client.post(f"/models/{newer}/activate")
        assert response.status_code == 200
        assert response.json()["version"] == newer
        assert response.json()["active"] is True
        assert (await client.get("/models")).json()["active"] == newer
        assert (await client.get("/ready")).json()["model_version"] == newer
        assert (await client.post("/score", json=event())).json()["model_version"] == newer
        batch = (await client.post("/score/batch", json={"logs": [event(), event()]})).json()
        assert {r["model_version"] for r in batch["results"]} == {newer}
        detectors = (await client.get("/detectors")).json()["detectors"]
        forest = next(d for d in detectors if d["name"] == "isolation_forest")
        assert forest["parameters"]["n_estimators"] == 10
        assert (settings.artifacts_dir / "ACTIVE").read_text() == newer

        await client.post(f"/models/{bootstrap_version}/activate")
        scored = (await client.post("/score", json=event())).json()
        assert scored["model_version"] == bootstrap_version


@pytest.mark.parametrize(
    "version",
    ["v9999-20261124T101500Z", "latest", "..%2F..%2FACTIVE", "v0001", "x" * 300],
)
async def test_activating_an_unknown_version_is_404(
    client: httpx.AsyncClient, version: str
) -> None:
    before = (await client.get("/models")).json()["active"]
    response = await client.post(f"/models/{version}/activate")
    assert_problem(response, 404)
    assert (await client.get("/models")).json()["active"] == before


async def test_activating_a_damaged_version_is_409(settings: Settings) -> None:
    local = AnomalyDetector(settings)
    bootstrap_version = local.model_version
    damaged = local.train(raw_rows(200, 3), activate=False)
    model_file = settings.artifacts_dir / "versions" / damaged / "model.npz"
    model_file.write_bytes(model_file.read_bytes()[:-10] + b"0123456789")
    from tests.conftest import start_app

    async for running in start_app(settings):
        response = await running.client.post(f"/models/{damaged}/activate")
        assert_problem(response, 409)
        assert "checksum" in response.json()["detail"]
        assert (await running.client.get("/models")).json()["active"] == bootstrap_version
