"""Versioned, crash-safe artifacts: what is written, what is refused, what survives a crash."""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import numpy as np
import pytest

from app.model import FitResult, Model, TrainingData, fit_model
from app.model_store import ModelStore, ModelStoreError
from app.schemas.events import Level

PARAMS = {"contamination": 0.02, "n_estimators": 5, "max_samples": 64, "random_state": 0}


@pytest.fixture(scope="module")
def fitted() -> FitResult:
    rng = np.random.default_rng(0)
    n = 200
    data = TrainingData.from_columns(
        ["a", "b"] * (n // 2), [Level.INFO] * n, rng.lognormal(3, 0.3, n), "logs"
    )
    return fit_model(data, PARAMS, 20)


def test_save_writes_a_whole_version_without_activating_it(
    tmp_path: Path, fitted: FitResult
) -> None:
    store = ModelStore(tmp_path)
    model = store.save(fitted)
    assert store.active_version() is None
    folder = tmp_path / "versions" / model.version
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.npz"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["checksum"] == sha256((folder / "model.npz").read_bytes()).hexdigest()
    assert manifest["rows"] == 200
    assert manifest["services"] == 2
    assert manifest["parameters"] == PARAMS
    store.activate(model.version)
    assert store.active_version() == model.version
    loaded = store.load_active()
    assert loaded is not None
    assert loaded.version == model.version
    assert [b.service for b in loaded.baselines] == ["a", "b"]


def test_leftovers_of_an_interrupted_save_are_removed(tmp_path: Path, fitted: FitResult) -> None:
    store = ModelStore(tmp_path)
    store.save(fitted)
    leftover = tmp_path / ".tmp-crashed"
    leftover.mkdir()
    (leftover / "model.npz").write_bytes(b"half")
    ModelStore(tmp_path)
    assert not leftover.exists()
    assert len(store.versions()) == 1


def test_damaged_active_version_falls_back_to_the_newest_good_one(
    tmp_path: Path, fitted: FitResult
) -> None:
    store = ModelStore(tmp_path)
    good = store.save(fitted).version
    bad = store.save(fitted).version
    store.activate(bad)
    (tmp_path / "versions" / bad / "model.npz").write_bytes(b"not a model")
    with pytest.raises(ModelStoreError, match="checksum"):
        store.load(bad)
    loaded = store.load_active()
    assert loaded is not None
    assert loaded.version == good
    assert store.active_version() == good


def test_unloadable_versions_cannot_be_activated(tmp_path: Path, fitted: FitResult) -> None:
    store = ModelStore(tmp_path)
    version = store.save(fitted).version
    manifest_path = tmp_path / "versions" / version / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest_path.write_text(json.dumps({**manifest, "version": "v0042-20261124T000000Z"}))
    with pytest.raises(ModelStoreError, match="does not describe"):
        store.activate(version)
    assert store.active_version() is None
    for name in ("../ACTIVE", "versions", "v1", ""):
        with pytest.raises(ModelStoreError):
            store.load(name)


def test_a_checked_model_is_activated_without_reading_it_back(
    tmp_path: Path, fitted: FitResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path)
    saved = store.save(fitted)
    other = store.save(fitted)
    reads: list[str] = []
    load = store.load

    def counted(version: str) -> Model:
        reads.append(version)
        return load(version)

    monkeypatch.setattr(store, "load", counted)
    store.activate(saved.version, saved)
    assert store.active_version() == saved.version
    assert reads == []
    # A model of another version proves nothing about this one: it is read back.
    store.activate(other.version, saved)
    assert store.active_version() == other.version
    assert reads == [other.version]


def test_a_version_stored_without_the_forest_step_tables_loads_and_scores_alike(
    tmp_path: Path, fitted: FitResult
) -> None:
    """Versions written before the tables were stored (main's) load, building the tables."""
    older = FitResult(
        {k: v for k, v in fitted.arrays.items() if not k.startswith("forest_steps_")},
        fitted.description,
    )
    store = ModelStore(tmp_path)
    old, new = store.save(older), store.save(fitted)
    features = np.array([[z, level, 0.0] for z in np.linspace(-8, 8, 97) for level in (0, 1, 2)])
    loaded = [store.load(model.version).isolation_forest for model in (old, new)]
    steps = [detector._steps for detector in loaded]
    assert steps[0] is not None
    assert steps[1] is not None
    assert steps[0].tables == steps[1].tables
    assert all(
        detector.paper_scores(features).tobytes() == loaded[0].paper_scores(features).tobytes()
        for detector in loaded
    )


def test_old_versions_are_pruned_but_never_the_active_one(
    tmp_path: Path, fitted: FitResult
) -> None:
    store = ModelStore(tmp_path, keep_versions=2)
    first = store.save(fitted).version
    store.activate(first)
    saved = [store.save(fitted).version for _ in range(3)]
    versions = store.versions()
    assert len(versions) == 2
    assert first in versions
    assert saved[-1] in versions
