"""New detectors persist with the model: arrays and JSON only, equal after a store round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.engine import ScoringEngine
from app.model import TrainingData, bootstrap_training_data, fit_model
from app.model_store import ModelStore
from app.schemas.events import Level, LogEvent
from tests.conftest import make_settings

PARAMS = {"contamination": 0.02, "n_estimators": 20, "max_samples": 64, "random_state": 1}


def _logs(n: int = 600) -> TrainingData:
    rng = np.random.default_rng(5)
    services = ["api" if i % 2 else "db" for i in range(n)]
    messages = [
        f"GET /orders/{i} ok" if s == "api" else f"query {i} took {i % 9} ms"
        for i, s in enumerate(services)
    ]
    return TrainingData.from_columns(
        services,
        [Level.INFO] * n,
        50.0 * np.exp(0.3 * rng.standard_normal(n)),
        source="logs",
        messages=messages,
    )


def test_autoencoder_and_templates_survive_the_store(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    fitted = store.save(fit_model(_logs(), PARAMS, warmup=20))
    loaded = store.load(fitted.version)
    assert loaded.autoencoder is not None
    assert fitted.autoencoder is not None
    probe = np.random.default_rng(0).standard_normal((20, 3))
    np.testing.assert_array_equal(
        loaded.autoencoder.reconstruction_error(probe),
        fitted.autoencoder.reconstruction_error(probe),
    )
    assert loaded.templates is not None
    assert sorted(loaded.templates["text"].tolist()) == ["GET <*> ok", "query <*> took <*> ms"]
    assert {seed.service for seed in loaded.template_seeds} == {"api", "db"}
    manifest = json.loads((tmp_path / "versions" / fitted.version / "manifest.json").read_text())
    assert manifest["autoencoder_parameters"]["bottleneck"] == 2


def test_trained_templates_are_known_to_a_fresh_engine(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    model = store.save(fit_model(_logs(4000), PARAMS, warmup=20))
    engine = ScoringEngine(make_settings(tmp_path), store.load(model.version))
    known, new = engine.score(
        [
            LogEvent(service="api", level=Level.INFO, message="GET /orders/99999 ok"),
            LogEvent(service="api", level=Level.INFO, message="payment provider unreachable"),
        ]
    )
    assert known["methods"]["templates"]["anomaly_score"] == 0.0
    assert new["methods"]["templates"]["metrics"]["novelty_rarity"] < 0.001
    assert known["confidence"] > 0.9


def test_models_stored_before_the_autoencoder_still_load(tmp_path: Path) -> None:
    result = fit_model(bootstrap_training_data(), PARAMS, warmup=20)
    arrays = {k: v for k, v in result.arrays.items() if not k.startswith("autoencoder_")}
    description = {k: v for k, v in result.description.items() if k != "autoencoder_parameters"}
    old = type(result)(arrays, description)
    model = ModelStore(tmp_path).save(old)
    assert model.autoencoder is None
    engine = ScoringEngine(make_settings(tmp_path), model)
    result_dict = engine.score([LogEvent(service="x", level=Level.INFO, latency_ms=5.0)])[0]
    assert "autoencoder" not in result_dict["methods"]
