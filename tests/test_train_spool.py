"""Large training bodies travel from the parsing process to the fitting process as a
``.tmp-train-`` file in the artifacts folder (app/training_data.py, ``SpooledTrainingData``): the
data read back is the data parsed, and the file is gone once the job ends however it ends (done,
failed, its worker killed, refused at 422, the request cancelled while parsing) and at start-up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
import pytest_asyncio

from app.model_store import ModelStore
from app.routers.training import OFFLOAD_BODY_BYTES
from app.schemas.events import Level
from app.trainer import _pids
from app.training_data import (
    SpooledTrainingData,
    TrainingData,
    TrainingInput,
    parse_training_body,
    spool,
)
from tests import fakes
from tests.conftest import RunningApp, start_app
from tests.hardening_support import seeded_settings
from tests.helpers import assert_problem, raw_rows, wait_for_job

JSON = {"content-type": "application/json"}
LARGE_ROWS = 30_000  # ~0.5 MB of JSON: above OFFLOAD_BODY_BYTES

module_loop = pytest.mark.asyncio(loop_scope="module")


def large_body(**extra: Any) -> bytes:
    raw = json.dumps({"data": raw_rows(LARGE_ROWS), **extra}).encode()
    assert len(raw) >= OFFLOAD_BODY_BYTES
    return raw


def spooled(root: Path) -> list[Path]:
    return sorted(root.glob(".tmp-train-*"))


def dying_before_reading(*args: Any) -> NoReturn:
    """Stands in for ``fit_and_pack``: the worker is killed before it reads the spooled file."""
    os._exit(137)


def assert_same(loaded: TrainingData, data: TrainingData) -> None:
    for name in ("latency_ms", "level_scores", "service_codes"):
        expected, got = getattr(data, name), getattr(loaded, name)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert loaded.service_names == data.service_names
    assert loaded.source == data.source
    assert loaded.keep_baselines == data.keep_baselines
    assert loaded.messages == data.messages


def test_logs_read_back_as_written_and_the_file_goes(tmp_path: Path) -> None:
    data = TrainingData.from_columns(
        ["checkout", "api", "Zürich-edge", "api"],
        [Level.INFO, Level.ERROR, Level.WARN, Level.INFO],
        np.array([12.5, np.nan, 3.0, 7.25]),
        source="logs",
        messages=["ok", "", "naïve ✓ message", "a, b"],
    )
    path = tmp_path / ".tmp-train-logs.npz"
    handle = spool(data, str(path))
    assert len(handle) == 4
    assert path.exists()
    assert_same(handle.load(), data)
    assert not path.exists()


def test_raw_rows_read_back_as_written(tmp_path: Path) -> None:
    data = TrainingData.from_raw_rows(raw_rows(1_000))
    handle = spool(data, str(tmp_path / ".tmp-train-raw.npz"))
    loaded = handle.load()
    assert_same(loaded, data)
    assert loaded.messages is None
    assert not loaded.keep_baselines


def test_the_parser_spools_rows_but_not_errors(tmp_path: Path) -> None:
    path = tmp_path / ".tmp-train-x.npz"
    parsed = parse_training_body(b'{"data": [[1.0, 0.0], [2.0, 1.0]]}', str(path))
    assert isinstance(parsed, TrainingInput)
    assert isinstance(parsed.data, SpooledTrainingData)
    assert parsed.data.path == str(path)
    assert len(parsed.data) == 2
    np.testing.assert_array_equal(parsed.data.load().latency_ms, [1.0, 2.0])
    errors = parse_training_body(b'{"data": [[1.0]]}', str(path))
    assert isinstance(errors, list)
    assert errors
    assert not path.exists()


def test_a_spool_that_cannot_be_written_keeps_the_arrays(tmp_path: Path) -> None:
    missing_folder = tmp_path / "gone" / ".tmp-train-x.npz"
    parsed = parse_training_body(b'{"data": [[1.0, 0.0], [2.0, 1.0]]}', str(missing_folder))
    assert isinstance(parsed, TrainingInput)
    assert isinstance(parsed.data, TrainingData)
    assert len(parsed.data) == 2


def test_start_up_removes_a_leftover_spool(tmp_path: Path) -> None:
    (tmp_path / ".tmp-train-0123.npz").write_bytes(b"half a file")
    store = ModelStore(tmp_path)
    assert spooled(store.root) == []


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningApp]:
    root = tmp_path_factory.mktemp("train-spool")
    async for running in start_app(seeded_settings(root, train_max_row_trees=200_000)):
        yield running


def artifacts(service: RunningApp) -> Path:
    root: Path = service.app.state.insighthub.store.root
    return root


@module_loop
async def test_a_large_body_trains_and_leaves_no_file(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[TrainingData | SpooledTrainingData] = []
    trainer = service.app.state.insighthub.trainer
    submit = trainer.submit

    def recording_submit(data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(data)
        assert Path(data.path).exists()  # still there when handed on
        return submit(data, *args, **kwargs)

    monkeypatch.setattr(trainer, "submit", recording_submit)
    body = large_body(parameters={"n_estimators": 5}, activate=False)
    response = await service.client.post("/train", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    job = await wait_for_job(service.client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["rows"] == LARGE_ROWS
    (data,) = seen
    assert isinstance(data, SpooledTrainingData)
    manifest = service.app.state.insighthub.store.manifest(job["model_version"])
    assert manifest["rows"] == LARGE_ROWS
    assert spooled(artifacts(service)) == []


@module_loop
async def test_a_failed_fit_leaves_no_file(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.trainer.fit_model", fakes.failing_fit)
    body = large_body(parameters={"n_estimators": 5}, activate=False)
    response = await service.client.post("/train", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    job = await wait_for_job(service.client, response.json()["job_id"])
    assert job["status"] == "failed"
    assert fakes.INJECTED_MESSAGE in job["error"]
    assert spooled(artifacts(service)) == []


@module_loop
async def test_a_worker_killed_before_reading_leaves_no_file(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.trainer.fit_and_pack", dying_before_reading)
    body = large_body(parameters={"n_estimators": 5}, activate=False)
    response = await service.client.post("/train", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    job = await wait_for_job(service.client, response.json()["job_id"])
    assert job["status"] == "failed"
    assert "died" in job["error"]
    assert spooled(artifacts(service)) == []


@module_loop
async def test_a_refused_body_leaves_no_file(service: RunningApp) -> None:
    # 30,000 rows x 100 trees is above the fixture's 200,000 row-trees.
    response = await service.client.post("/train", content=large_body(), headers=JSON)
    assert_problem(response, 422, "parameters.n_estimators")
    assert spooled(artifacts(service)) == []


@module_loop
async def test_a_body_whose_parser_dies_still_trains(
    service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.trainer.parse_training_body", fakes.parse_dying_in_worker)
    body = large_body(parameters={"n_estimators": 5}, activate=False)
    response = await service.client.post("/train", content=body, headers=JSON)
    assert response.status_code == 202, response.text
    job = await wait_for_job(service.client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["rows"] == LARGE_ROWS
    assert spooled(artifacts(service)) == []


@module_loop
async def test_a_parse_cancelled_midway_leaves_no_file(service: RunningApp) -> None:
    trainer = service.app.state.insighthub.trainer
    # The parsing process, started by a small parse and then held still, so the large body is
    # surely still being parsed when its request is cancelled (waiting 50 ms was not enough on
    # a fast machine: the parse had finished).
    await trainer.parse(b'{"data": [[1.0]]}')
    (parser,) = _pids(trainer._parser())
    os.kill(parser, signal.SIGSTOP)
    try:
        parsing = asyncio.ensure_future(trainer.parse(large_body()))
        await asyncio.sleep(0.05)  # submitted: the body is queued for the held parser
        assert not parsing.done()
        parsing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await parsing
    finally:
        os.kill(parser, signal.SIGCONT)
    # The one parsing process takes bodies in turn: once this one is answered (errors, so no
    # file of its own), the first one was finished before it, and its file removed as it finished.
    errors = await trainer.parse(b'{"data": [[1.0]]}')
    assert isinstance(errors, list)
    assert errors
    assert spooled(artifacts(service)) == []
