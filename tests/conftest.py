"""Shared fixtures: settings on a temporary artifacts folder, and an HTTP client over the ASGI app
with its lifespan running (as uvicorn would run it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.factory import create_app
from app.settings import Settings

# A worktree outside the main checkout can point at the data with INSIGHTHUB_SHARED_DATA.
SHARED_DATA = Path(
    os.environ.get(
        "INSIGHTHUB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"artifacts_dir": tmp_path / "artifacts", "env": "test"}
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
def bootstrapped_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts folder holding the bootstrap model, fitted once per session (~1 s each time
    otherwise). Tests copy it (``copy_artifacts``) so they never share a folder."""
    root = tmp_path_factory.mktemp("bootstrapped") / "artifacts"
    from app.bootstrap import load_or_bootstrap
    from app.model_store import ModelStore

    settings = Settings(artifacts_dir=root, env="test")
    load_or_bootstrap(ModelStore(root, settings.keep_versions), settings)
    return root


def copy_artifacts(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


@pytest.fixture
def bootstrapped_settings(tmp_path: Path, bootstrapped_artifacts: Path) -> Settings:
    """Like ``settings`` but starting from a copy of the session's bootstrap model."""
    copy_artifacts(bootstrapped_artifacts, tmp_path / "artifacts")
    return make_settings(tmp_path)
