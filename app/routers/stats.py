"""GET /stats/{service}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.errors import UnknownService, problem_responses
from app.schemas.stats import WindowStats
from app.state import EngineDep

router = APIRouter(tags=["stats"])

ServicePath = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$", examples=["checkout-api"])
]


@router.get("/stats/{service}", responses=problem_responses(UnknownService))
async def service_stats(service: ServicePath, engine: EngineDep) -> WindowStats:
    """Window statistics of one service over the last ``window_minutes`` of its event time."""
    stats = engine.stats(service)
    if stats is None:
        raise UnknownService(f"no events of service {service!r} have been seen")
    return stats
