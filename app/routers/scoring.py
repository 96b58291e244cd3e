"""POST /score and POST /score/batch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from app.errors import problem_responses
from app.routers.fast_json import JSONBodyRoute
from app.schemas.events import LogEvent
from app.schemas.scoring import ScoreBatchRequest, ScoreBatchResponse, ScoreResult
from app.state import EngineDep

router = APIRouter(tags=["scoring"], route_class=JSONBodyRoute)


def _json(content: bytes) -> Response:
    # The engine writes the response schema's JSON itself (app/rendering.py), instead of
    # building objects that the response model would validate and serialise again.
    return Response(content, media_type="application/json")


def _stats_link(service: str) -> dict[str, Any]:
    # Scoring feeds the service's window: its statistics are the natural next read.
    return {
        "description": "Scored.",
        "links": {
            "GetServiceStats": {
                "operationId": "stats-service_stats",
                "parameters": {"service": service},
            }
        },
    }


@router.post(
    "/score",
    response_model=ScoreResult,
    responses={200: _stats_link("$request.body#/service"), **problem_responses()},
)
async def score_log(event: LogEvent, engine: EngineDep) -> Response:
    """Score one log event: combined verdict, per-method breakdown and an explanation."""
    return _json(await engine.coalescer.score(event))


@router.post(
    "/score/batch",
    response_model=ScoreBatchResponse,
    responses={200: _stats_link("$request.body#/logs/0/service"), **problem_responses()},
)
async def score_batch(request: ScoreBatchRequest, engine: EngineDep) -> Response:
    """Score up to 10,000 events in order, exactly as if they had been sent one by one."""
    return _json(b'{"results":[' + b",".join(engine.score_json(request.logs)) + b"]}")
