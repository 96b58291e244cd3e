"""Untrusted files in artifacts/: tampered, truncated, foreign (pickles, object arrays, random
bytes, even with a forged checksum) or manifest-less versions are refused with a clear log line,
and the previous good version serves. A detector that raises degrades only that method."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.detectors.isolation_forest import IsolationForestDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.model_store import ModelStore
from tests.conftest import start_app
from tests.hardening_support import seeded_settings, small_fit

CANARY = "insighthub-pwned"


class _RunsCode:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (os.system, (f"touch {self.target}", ""))  # never executed by a correct loader


def _forge_checksum(version_dir: Path) -> None:
    """An attacker who can write files can also rewrite the manifest's checksum."""
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["checksum"] = hashlib.sha256((version_dir / "model.npz").read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def _tamper(path: Path) -> None:
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(_RunsCode(path.parent / CANARY)))
    _forge_checksum(path.parent)


def _object_array_npz(path: Path) -> None:
    buffer = io.BytesIO()
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["baseline_services"] = np.array([_RunsCode(path.parent / CANARY)], dtype=object)
    np.savez(buffer, allow_pickle=True, **arrays)
    path.write_bytes(buffer.getvalue())
    _forge_checksum(path.parent)


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))
    _forge_checksum(path.parent)


def _missing_manifest(path: Path) -> None:
    (path.parent / "manifest.json").unlink()


def _manifest_for_another_version(path: Path) -> None:
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = "v0001-20200101T000000Z"
    manifest_path.write_text(json.dumps(manifest))


def _garbage_manifest(path: Path) -> None:
    (path.parent / "manifest.json").write_bytes(b"\x00{not json")


def _missing_model(path: Path) -> None:
    path.unlink()


DAMAGES = {
    "tampered": (_tamper, "does not match its manifest checksum"),
    "truncated": (_truncate, "does not match its manifest checksum"),
    "pickle with forged checksum": (_pickle, "not a valid model"),
    "object array with forged checksum": (_object_array_npz, "not a valid model"),
    "random bytes with forged checksum": (_random_bytes, "not a valid model"),
    "no manifest": (_missing_manifest, "does not exist"),
    "manifest of another version": (_manifest_for_another_version, "does not describe"),
    "garbage manifest": (_garbage_manifest, "unreadable"),
    "no model file": (_missing_model, "unreadable"),
}


def _two_versions(root: Path) -> tuple[ModelStore, str, str]:
    store = ModelStore(root)
    good = store.save(small_fit(seed=1)).version
    store.activate(good)
    newer = store.save(small_fit(seed=2)).version
    store.activate(newer)
    return store, good, newer


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_active_version_is_refused_and_the_previous_serves(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    apply, reason = DAMAGES[damage]
    store, good, newer = _two_versions(tmp_path / "artifacts")
    apply(store.versions_dir / newer / "model.npz")
    with caplog.at_level(logging.WARNING, logger="app.model_store"):
        model = ModelStore(store.root).load_active()
    assert model is not None
    assert model.version == good
    assert store.active_version() == good
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(newer in line and reason in line for line in refusals), refusals
    assert not (store.versions_dir / newer / CANARY).exists(), "loading ran code"


def test_np_load_refuses_object_arrays_without_pickle(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    np.savez(path, allow_pickle=True, evil=np.array([_RunsCode(tmp_path / CANARY)], dtype=object))
    with np.load(path, allow_pickle=False) as archive, pytest.raises(ValueError, match="pickle"):
        archive["evil"]
    assert not (tmp_path / CANARY).exists()


async def test_service_starts_on_the_previous_good_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = seeded_settings(tmp_path)
    store = ModelStore(settings.artifacts_dir)
    good = store.active_version()
    newer = store.save(small_fit(seed=3)).version
    store.activate(newer)
    _pickle(store.versions_dir / newer / "model.npz")
    with caplog.at_level(logging.WARNING, logger="app.model_store"):
        async for running_app in start_app(settings):
            ready = (await running_app.client.get("/ready")).json()
            assert ready["model_version"] == good
            listed = (await running_app.client.get("/models")).json()
            assert newer in [v["version"] for v in listed["versions"]]  # listed, not served
            activate = await running_app.client.post(f"/models/{newer}/activate")
            assert activate.status_code == 409
            assert activate.headers["content-type"] == "application/problem+json"
    assert any(f"refusing model version {newer}" in r.getMessage() for r in caplog.records)


def test_every_version_damaged_means_no_model(tmp_path: Path) -> None:
    store, good, newer = _two_versions(tmp_path / "artifacts")
    for version in (good, newer):
        _tamper(store.versions_dir / version / "model.npz")
    assert ModelStore(store.root).load_active() is None


def test_a_foreign_folder_name_is_never_loaded(tmp_path: Path) -> None:
    store, _good, newer = _two_versions(tmp_path / "artifacts")
    (store.versions_dir / "..evil").mkdir()
    (store.root / "ACTIVE").write_text("../../etc/passwd")
    assert store.active_version() is None
    model = ModelStore(store.root).load_active()
    assert model is not None
    assert model.version == newer  # the newest loadable version


def test_leftover_staging_files_are_cleaned(tmp_path: Path) -> None:
    store, _good, _newer = _two_versions(tmp_path / "artifacts")
    (store.root / ".tmp-abc").mkdir()
    (store.root / ".tmp-abc" / "model.npz").write_bytes(b"half")
    (store.root / ".tmp-active-123").write_text("v0001")
    ModelStore(store.root)
    assert list(store.root.glob(".tmp-*")) == []


# -- a detector that raises ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "name"),
    [(IsolationForestDetector, "isolation_forest"), (SlidingWindowDetector, "sliding_window")],
)
async def test_a_raising_detector_is_reported_degraded(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    detector: type[IsolationForestDetector | SlidingWindowDetector],
    name: str,
) -> None:
    def broken(self: object, context: object) -> object:
        raise FloatingPointError("simulated failure inside the detector")

    # Both entry points: a batch's and the batch of one's (``rarity_one``).
    monkeypatch.setattr(detector, "rarity", broken)
    monkeypatch.setattr(detector, "rarity_one", broken)
    event = {"service": "api", "level": "WARN", "latency_ms": 5000.0}
    async for running_app in start_app(seeded_settings(tmp_path)):
        client = running_app.client
        response = await client.post("/score", json=event)
        assert response.status_code == 200
        result = response.json()
        assert "FloatingPointError" in result["methods"][name]["degraded"]
        assert result["methods"][name]["anomaly_score"] == 0.0
        others = [m for key, m in result["methods"].items() if key != name]
        assert others
        assert all(m.get("degraded") is None for m in others)
        assert 0.0 <= result["anomaly_score"] <= 1.0
        batch = await client.post("/score/batch", json={"logs": [event] * 3})
        assert batch.status_code == 200
        metrics = (await client.get("/metrics")).text
        assert f'insighthub_detector_failures_total{{detector="{name}"}} 2.0' in metrics
