"""POST /score and POST /score/batch."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from app.errors import problem_responses
from app.routers.fast_json import JSONBodyRoute
from app.schemas.columns import EventColumns, read_batch
from app.schemas.events import LogEvent
from app.schemas.scoring import ScoreBatchRequest, ScoreBatchResponse, ScoreResult
from app.state import EngineDep

router = APIRouter(tags=["scoring"], route_class=JSONBodyRoute)

_COLUMNS = "insighthub.columns"


class ColumnarBatchRoute(JSONBodyRoute):
    """Reads a batch body column-wise (app/schemas/columns.py); pydantic validates whatever the
    fast path leaves to it, so error answers are unchanged."""

    async def validate_body(self, request: Request, adapter: TypeAdapter[Any], raw: bytes) -> Any:
        columns = read_batch(raw)
        if columns is None:
            return await super().validate_body(request, adapter, raw)
        request.scope[_COLUMNS] = columns
        # The endpoint scores the columns; FastAPI gets a stand-in for its typed body parameter,
        # built without validation (pydantic passes a model instance through as it is).
        return ScoreBatchRequest.model_construct(logs=[])


async def _columns(request: Request) -> EventColumns | None:
    columns: EventColumns | None = request.scope.get(_COLUMNS)
    return columns


ColumnsDep = Annotated[EventColumns | None, Depends(_columns)]


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


async def score_batch(
    request: ScoreBatchRequest, engine: EngineDep, columns: ColumnsDep
) -> Response:
    """Score up to 10,000 events in order, exactly as if they had been sent one by one."""
    results = (
        engine.score_columns(columns) if columns is not None else engine.score_json(request.logs)
    )
    return _json(b'{"results":[' + b",".join(results) + b"]}")


# What @router.post does, with this route's own route class (the decorator cannot set it).
router.add_api_route(
    "/score/batch",
    score_batch,
    methods=["POST"],
    response_model=ScoreBatchResponse,
    responses={200: _stats_link("$request.body#/logs/0/service"), **problem_responses()},
    route_class_override=ColumnarBatchRoute,
)
