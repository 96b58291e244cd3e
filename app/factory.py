"""The application factory and the lifespan that owns every long-lived object."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from uvicorn.logging import DefaultFormatter

from app import __version__
from app.bootstrap import load_or_bootstrap
from app.engine import ScoringEngine
from app.errors import (
    GUARD_RESPONSES,
    PROBE_RESPONSES,
    UNAUTHORIZED_RESPONSE,
    install_error_handlers,
    use_problem_media_type,
)
from app.metrics import Metrics
from app.metrics import router as metrics_router
from app.middleware import GuardMiddleware, Shortcut
from app.model_store import ModelStore
from app.pausing import TrainingPause, neighbour_slowdown
from app.routers import health, models, scoring, stats, training
from app.security import KeyChecker, RequireApiKey
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
    # Shared by the guard, which counts the requests being served, and the trainer, which
    # registers its processes: while any request is served, they stand still.
    # "auto" pauses until the start-up measure says whether it pays (app/pausing.py).
    pause = TrainingPause(enabled=chosen.train_pause_while_serving is not False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ModelStore(chosen.artifacts_dir, chosen.keep_versions)
        model = await asyncio.to_thread(load_or_bootstrap, store, chosen)
        engine = ScoringEngine(chosen, model)
        # What is loaded by now (libraries, the model) lives as long as the process. gc.freeze
        # moves it out of the collector's generations, so full collections stop re-scanning
        # ~200k objects: that took a third of the time of scoring a batch of 1,000 events.
        gc.freeze()
        trainer = Trainer(chosen, store, engine, pause)
        app.state.insighthub = ServiceState(chosen, store, engine, trainer)
        log.info("serving model %s from %s", model.version, store.root)
        measuring = (
            asyncio.create_task(_decide_pause(pause))
            if chosen.train_pause_while_serving == "auto"
            else None
        )
        try:
            yield
        finally:
            app.state.insighthub = None
            if measuring is not None:
                measuring.cancel()
            await trainer.close()

    app = FastAPI(
        title="InsightHub ML Engine",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    # Include-level responses document what the guard middleware may answer on every route.
    scoring_key = chosen.require_key_for_scoring
    app.include_router(
        scoring.router,
        dependencies=[RequireApiKey] if scoring_key else [],
        responses={**GUARD_RESPONSES, **(UNAUTHORIZED_RESPONSE if scoring_key else {})},
    )
    for module in (stats, training, models):
        app.include_router(module.router, responses=GUARD_RESPONSES)
    app.include_router(health.router, responses=PROBE_RESPONSES)
    shortcuts: dict[tuple[str, str], Shortcut] = {
        ("POST", "/score"): scoring.ScoreShortcut(app),
        ("POST", "/score/batch"): scoring.BatchShortcut(app),
    }
    install_guards(app, chosen, shortcuts, pause)
    return app


async def _decide_pause(pause: TrainingPause) -> None:
    """``train_pause_while_serving = "auto"``: measure, in a thread, whether a neighbour slows
    this machine's CPUs enough for pausing the fits to pay."""
    slowdown = await asyncio.to_thread(neighbour_slowdown)
    pause.decide(slowdown)
    log.info(
        "a CPU-bound neighbour slows scoring by %s: training processes %s while requests are "
        "served (train_pause_while_serving=auto)",
        "an unknown factor" if slowdown is None else f"x{slowdown:.2f}",
        "pause" if pause.enabled else "keep running",
    )


def show_service_logs(level: str) -> None:
    """uvicorn configures its own loggers only, so without a handler the service's INFO lines
    (the model served, training jobs, the pause decision) would go nowhere. Nothing is added
    when the root logger or ``app`` has handlers already: a host that configured logging keeps
    its own."""
    service = logging.getLogger("app")
    if logging.getLogger().handlers or service.handlers:
        return
    handler = logging.StreamHandler()
    # As uvicorn writes its own lines ("INFO:     ..."), without colours.
    line = "%(levelprefix)s %(name)s: %(message)s"
    handler.setFormatter(DefaultFormatter(line, use_colors=False))
    service.addHandler(handler)
    service.setLevel(level)


def install_guards(
    app: FastAPI,
    settings: Settings,
    shortcuts: Mapping[tuple[str, str], Shortcut] | None = None,
    pause: TrainingPause | None = None,
) -> None:
    """API key, body and concurrency limits, metrics, CORS, and the OpenAPI that declares them."""
    metrics = Metrics()
    metrics.watch(lambda: getattr(app.state, "insighthub", None))
    app.state.metrics = metrics
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    app.state.key_checker = KeyChecker(key)
    app.include_router(metrics_router, responses=PROBE_RESPONSES)
    app.add_middleware(
        GuardMiddleware,
        openapi=lambda: app.openapi(),
        settings=settings,
        keys=app.state.key_checker,
        metrics=metrics,
        shortcuts=shortcuts,
        pause=pause,
    )
    if settings.cors_origins:
        # Outside the guard, so preflights are answered and a 401 still carries CORS headers.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
        )

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return use_problem_media_type(generate_openapi())  # idempotent; FastAPI caches the rest

    app.openapi = openapi  # type: ignore[method-assign]
