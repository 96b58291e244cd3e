"""GET /health and GET /ready."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.errors import ModelNotReady, problem_responses
from app.state import get_state

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model_version: str
    services_tracked: int


@router.get("/health")
async def health() -> Health:
    """Liveness: the process answers. Does no work."""
    return Health(status="ok")


@router.get("/ready", responses=problem_responses(ModelNotReady))
async def ready(request: Request) -> Readiness:
    """Readiness: 503 until a model is loaded and scoring works."""
    state = get_state(request)
    return Readiness(
        status="ready",
        model_version=state.engine.model.version,
        services_tracked=len(state.engine.windows),
    )
