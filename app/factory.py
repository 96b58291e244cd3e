"""The application factory and the lifespan that owns every long-lived object."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app import __version__
from app.bootstrap import load_or_bootstrap
from app.engine import ScoringEngine
from app.errors import install_error_handlers
from app.model_store import ModelStore
from app.routers import health, models, scoring, stats, training
from app.settings import Settings
from app.state import ServiceState
from app.trainer import Trainer

log = logging.getLogger(__name__)

DESCRIPTION = """Scores every log event of a fleet of services: is it anomalous, how much, and why.

Scores are in [0, 1], higher is more anomalous; 0.5 means "as rare among normal events as the
target false-alarm rate" and is the default decision threshold (see the README)."""


def _operation_id(route: APIRoute) -> str:
    # SDK generators turn these into method names: scoring-score_log, training-start_training...
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    chosen = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ModelStore(chosen.artifacts_dir, chosen.keep_versions)
        model = await asyncio.to_thread(load_or_bootstrap, store, chosen)
        engine = ScoringEngine(chosen, model)
        # What is loaded by now (libraries, the model) lives as long as the process. gc.freeze
        # moves it out of the collector's generations, so full collections stop re-scanning
        # ~200k objects: that took a third of the time of scoring a batch of 1,000 events.
        gc.freeze()
        trainer = Trainer(chosen, store, engine)
        app.state.insighthub = ServiceState(chosen, store, engine, trainer)
        log.info("serving model %s from %s", model.version, store.root)
        try:
            yield
        finally:
            app.state.insighthub = None
            await trainer.close()

    app = FastAPI(
        title="InsightHub ML Engine",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    for module in (scoring, stats, training, models, health):
        app.include_router(module.router)
    return app
