"""What the service process no longer does while a job runs: the worker writes and hashes the
model file (``fit_and_pack``), ``AnomalyDetector.train`` activates what it saved without reading
it back, and ``train_cpus`` keeps the training processes off the other CPUs."""

from __future__ import annotations

import io
import os
import sys
from hashlib import sha256
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from app.model import FitResult, Model, TrainingData, fit_model, model_from_arrays
from app.model_store import ModelStore, PackedFit, fit_and_pack, pack
from app.settings import Settings
from app.trainer import Trainer
from tests.hardening_support import small_fit


def arrays_of(payload: bytes) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def same_arrays(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def test_a_packed_fit_is_stored_as_the_fit_itself_would_be(tmp_path: Path) -> None:
    result = small_fit(seed=4)
    packed = pack(result)
    assert packed.checksum == sha256(packed.payload).hexdigest()
    assert same_arrays(arrays_of(packed.payload), result.arrays)
    store = ModelStore(tmp_path)
    from_packed, from_result = store.save(packed), store.save(result)
    for model in (from_packed, from_result):
        folder = tmp_path / "versions" / model.version
        stored = (folder / "model.npz").read_bytes()
        assert sha256(stored).hexdigest() == model.manifest["checksum"]
        assert same_arrays(arrays_of(stored), result.arrays)
        loaded = store.load(model.version)
        assert [b.service for b in loaded.baselines] == [b.service for b in model.baselines]
    assert from_packed.manifest["checksum"] == packed.checksum


def test_fit_and_pack_runs_the_fit_within_its_limit_and_packs_it() -> None:
    rng = np.random.default_rng(1)
    data = TrainingData.from_raw_rows(
        np.column_stack([rng.lognormal(4, 0.5, 300), np.zeros(300)]).tolist()
    )
    parameters = {"contamination": 0.02, "n_estimators": 5, "max_samples": 64, "random_state": 0}
    packed = fit_and_pack(60.0, fit_model, data, parameters, 20)
    assert isinstance(packed, PackedFit)
    direct = fit_model(data, parameters, 20)
    assert same_arrays(packed.result.arrays, direct.arrays)
    assert same_arrays(arrays_of(packed.payload), direct.arrays)


def test_local_train_activates_without_reading_the_model_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bootstrapped_artifacts: Path
) -> None:
    from app import AnomalyDetector
    from tests.conftest import copy_artifacts

    copy_artifacts(bootstrapped_artifacts, tmp_path / "artifacts")
    local = AnomalyDetector(artifacts_dir=tmp_path / "artifacts")

    def refuse(version: str) -> Model:
        raise AssertionError(f"{version} was read back")

    monkeypatch.setattr(local.store, "load", refuse)
    rng = np.random.default_rng(2)
    data = TrainingData.from_raw_rows(
        np.column_stack([rng.lognormal(4, 0.5, 300), np.zeros(300)]).tolist()
    )
    version = local.train(data, {"n_estimators": 5, "max_samples": 64})
    assert local.model_version == version
    assert local.store.active_version() == version
    monkeypatch.undo()
    assert local.store.load(version).version == version


def worker_affinities() -> list[set[int]]:
    """The CPUs each thread of the calling process may run on."""
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread affinity is Linux's")
@pytest.mark.parametrize("cpus", [0, 1, 4096])
def test_train_cpus_confines_every_thread_of_a_worker(cpus: int) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    trainer = Trainer(Settings(train_cpus=cpus), cast(Any, None), cast(Any, None))
    with trainer._parser() as pool:
        threads = pool.submit(worker_affinities).result(timeout=60)
    expected = set(allowed[-cpus:]) if 0 < cpus < len(allowed) else set(allowed)
    assert threads
    assert all(cpu_set == expected for cpu_set in threads)


def test_train_cpus_defaults_to_any_cpu_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().train_cpus == 0
    monkeypatch.setenv("INSIGHTHUB_TRAIN_CPUS", "1")
    assert Settings().train_cpus == 1
    monkeypatch.setenv("INSIGHTHUB_TRAIN_CPUS", "-1")
    with pytest.raises(ValueError, match="train_cpus"):
        Settings()


def test_model_from_packed_arrays_validates_before_storing(tmp_path: Path) -> None:
    # A worker's result is checked by model_from_arrays before anything is written, as before.
    broken = FitResult({}, small_fit(seed=5).description)
    store = ModelStore(tmp_path)
    with pytest.raises((ValueError, KeyError)):
        store.save(pack(broken))
    assert store.versions() == []
    with pytest.raises((ValueError, KeyError)):
        model_from_arrays("v0001-20260101T000000Z", broken.arrays, broken.description)
