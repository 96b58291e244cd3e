"""Shared fixtures: settings on a temporary artifacts folder, and an HTTP client over the ASGI app
with its lifespan running (as uvicorn would run it)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.bootstrap import forest_parameters, load_or_bootstrap
from app.factory import create_app
from app.model import Model
from app.model_store import ModelStore
from app.settings import Settings

# A worktree outside the main checkout can point at the data with INSIGHTHUB_SHARED_DATA.
SHARED_DATA = Path(
    os.environ.get(
        "INSIGHTHUB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # Fits run niced ("low"), not in SCHED_IDLE (the default): with pytest-xdist's workers and
    # other work keeping both cores busy, an idle-class fit may get no CPU until a test's wait
    # for its job gives up. The tests of the idle class itself ask for it.
    values: dict[str, Any] = {
        "artifacts_dir": tmp_path / "artifacts",
        "env": "test",
        "train_priority": "low",
        # Pausing as the pause tests expect it, without a start-up measure in every test app
        # (tests/test_pausing.py tests "auto" itself).
        "train_pause_while_serving": True,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, which CI always has; a user's own clone may not, and then these skip.
    With INSIGHTHUB_TEST_REQUIRE_SHARED_DATA=1 (set by .ci/run) a missing folder fails instead."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("INSIGHTHUB_TEST_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"shared benchmark data missing at {SHARED_DATA}")
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


class RunningApp:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client


# Fitting the bootstrap model costs ~2.4 s; most tests start a service (start_app, the
# AnomalyDetector) on an empty artifacts folder only to have some model to serve. While a test
# runs, such a start finds a copy of a bootstrap model fitted once per session (per the settings
# the fit reads) and loads it as a restarted service would. Tests about the first start itself
# are marked ``first_start``: they fit the bootstrap model as a fresh install does.
_bootstrap_cache: dict[tuple[object, ...], Path] = {}
_bootstrap_lock = threading.Lock()  # lifespans load models in threads


@functools.cache
def _bootstrap_root() -> Path:
    # Not a tmp_path_factory folder: modules that build their app at import time use it too.
    root = Path(tempfile.mkdtemp(prefix="insighthub-bootstraps-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _bootstrap_key(settings: Settings) -> tuple[object, ...]:
    # Everything load_or_bootstrap's fit reads from the settings (forest_parameters + warm-up).
    return (*forest_parameters(settings).values(), settings.baseline_warmup_events)


def bootstrap_source(settings: Settings) -> Path:
    """The session's bootstrap model for these settings, fitted on first use: never write to it."""
    key = _bootstrap_key(settings)
    with _bootstrap_lock:
        source = _bootstrap_cache.get(key)
        if source is None:
            source = _bootstrap_root() / f"bootstrap-{len(_bootstrap_cache)}" / "artifacts"
            load_or_bootstrap(ModelStore(source, settings.keep_versions), settings)
            _bootstrap_cache[key] = source
    return source


def _load_or_copied_bootstrap(store: ModelStore, settings: Settings) -> Model:
    """load_or_bootstrap, with the session's bootstrap model copied into an empty store first."""
    untouched = {entry.name for entry in store.root.iterdir()} == {"versions"}
    if untouched and not any(store.versions_dir.iterdir()):
        shutil.copytree(bootstrap_source(settings), store.root, dirs_exist_ok=True)
    return load_or_bootstrap(store, settings)


@pytest.fixture(autouse=True)
def _bootstrap_copies(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("first_start") is None:
        for module in ("app.factory", "app.local"):
            monkeypatch.setattr(f"{module}.load_or_bootstrap", _load_or_copied_bootstrap)


async def start_app(settings: Settings) -> AsyncIterator[RunningApp]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield RunningApp(app, client)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[RunningApp]:
    async for running_app in start_app(settings):
        yield running_app


@pytest.fixture
async def client(running: RunningApp) -> httpx.AsyncClient:
    return running.client


@pytest.fixture(scope="session")
def bootstrapped_artifacts() -> Path:
    """An artifacts folder holding the bootstrap model, fitted once per session (~2.4 s each time
    otherwise). Tests copy it (``copy_artifacts``) so they never share a folder."""
    return bootstrap_source(Settings(artifacts_dir=_bootstrap_root() / "unused", env="test"))


def copy_artifacts(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


@pytest.fixture
def bootstrapped_settings(tmp_path: Path, bootstrapped_artifacts: Path) -> Settings:
    """Like ``settings`` but starting from a copy of the session's bootstrap model."""
    copy_artifacts(bootstrapped_artifacts, tmp_path / "artifacts")
    return make_settings(tmp_path)
