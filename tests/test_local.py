"""The Python API: ``AnomalyDetector`` answers exactly as POST /score does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from app.model import TrainingData
from tests.conftest import copy_artifacts, make_settings, start_app
from tests.helpers import event


def stream() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    logs = [
        event(
            ("api", "db", "batch")[i % 3],
            "ERROR" if i % 13 == 0 else "INFO",
            float(round((5.0, 40.0, 9000.0)[i % 3] * rng.lognormal(0, 0.3), 3)),
            i * 0.7,
        )
        for i in range(120)
    ]
    logs.append(event("api", "FATAL", 4000.0, 90.0, message="pool exhausted"))
    logs.append(event("db", "INFO", None, 91.0, attributes={"shard": 3}))
    return logs


async def test_predict_equals_post_score(tmp_path: Path, bootstrapped_artifacts: Path) -> None:
    from app import AnomalyDetector

    copy_artifacts(bootstrapped_artifacts, tmp_path / "local" / "artifacts")
    copy_artifacts(bootstrapped_artifacts, tmp_path / "http" / "artifacts")
    local = AnomalyDetector(artifacts_dir=tmp_path / "local" / "artifacts")
    logs = stream()
    direct = [json.loads(json.dumps(local.predict(log))) for log in logs]
    async for running in start_app(make_settings(tmp_path / "http")):
        over_http = [(await running.client.post("/score", json=log)).json() for log in logs]
        stats = (await running.client.get("/stats/api")).json()
    assert direct == over_http
    local_stats = local.stats("api")
    assert local_stats is not None
    assert json.loads(local_stats.model_dump_json()) == stats
    assert any(r["is_anomaly"] for r in direct)


def test_predict_batch_equals_predict_one_by_one(
    tmp_path: Path, bootstrapped_artifacts: Path
) -> None:
    from app import AnomalyDetector

    logs = stream()
    one = AnomalyDetector(artifacts_dir=copy_artifacts(bootstrapped_artifacts, tmp_path / "a"))
    many = AnomalyDetector(artifacts_dir=copy_artifacts(bootstrapped_artifacts, tmp_path / "b"))
    assert [one.predict(log) for log in logs] == many.predict_batch(logs)


def test_predict_validates_like_the_api(tmp_path: Path, bootstrapped_artifacts: Path) -> None:
    from app import AnomalyDetector

    detector = AnomalyDetector(artifacts_dir=copy_artifacts(bootstrapped_artifacts, tmp_path / "a"))
    with pytest.raises(ValidationError, match="latency_ms"):
        detector.predict({"service": "api", "level": "INFO", "latency_ms": float("nan")})
    with pytest.raises(ValidationError, match="level"):
        detector.predict({"service": "api", "level": "LOUD"})
    with pytest.raises(ValidationError, match="host"):
        detector.predict({"service": "api", "level": "INFO", "host": "a"})
    assert detector.stats("api") is None  # nothing invalid was counted


def test_the_original_designs_call_works(
    tmp_path: Path, bootstrapped_artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import AnomalyDetector

    artifacts = copy_artifacts(bootstrapped_artifacts, tmp_path / "env-artifacts")
    monkeypatch.setenv("INSIGHTHUB_ARTIFACTS_DIR", str(artifacts))
    detector = AnomalyDetector()
    result = detector.predict({"service": "api", "latency_ms": 1500, "level": "ERROR"})
    assert set(result) >= {"is_anomaly", "anomaly_score", "methods", "model_version", "explanation"}
    assert result["model_version"] == (artifacts / "ACTIVE").read_text().strip()


def test_train_stores_activates_and_serves(tmp_path: Path, bootstrapped_artifacts: Path) -> None:
    from app import AnomalyDetector

    artifacts = copy_artifacts(bootstrapped_artifacts, tmp_path / "a")
    detector = AnomalyDetector(artifacts_dir=artifacts)
    before = detector.model_version
    rng = np.random.default_rng(0)
    data = TrainingData.from_raw_rows(
        np.column_stack([rng.lognormal(3, 0.2, 300), np.zeros(300)]).tolist()
    )
    kept = detector.train(data, {"n_estimators": 15}, activate=False)
    assert detector.model_version == before
    version = detector.train(data, {"n_estimators": 15})
    assert version != kept
    assert detector.model_version == version
    assert detector.predict(event())["model_version"] == version
    assert (artifacts / "ACTIVE").read_text().strip() == version
    restarted = AnomalyDetector(artifacts_dir=artifacts)
    assert restarted.model_version == version
