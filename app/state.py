"""The long-lived objects of one running service, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.engine import ScoringEngine
from app.errors import ModelNotReady
from app.model_store import ModelStore
from app.settings import Settings
from app.trainer import Trainer


@dataclass(frozen=True, slots=True)
class ServiceState:
    settings: Settings
    store: ModelStore
    engine: ScoringEngine
    trainer: Trainer


def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "insighthub", None)
    if state is None:
        raise ModelNotReady("the service is starting: no model is loaded yet")
    return state


async def get_engine(request: Request) -> ScoringEngine:
    # async although it never awaits: FastAPI runs a plain ``def`` dependency in its thread pool,
    # a thread hop (two context switches) on every scoring request.
    return get_state(request).engine


StateDep = Annotated[ServiceState, Depends(get_state)]
EngineDep = Annotated[ScoringEngine, Depends(get_engine)]
