"""POST /score and POST /score/batch."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from starlette.types import Scope, Send

from app.errors import problem_responses
from app.routers.fast_json import JSONBodyRoute, content_type
from app.schemas.columns import EventColumns, read_batch
from app.schemas.events import LogEvent
from app.schemas.scoring import ScoreBatchRequest, ScoreBatchResponse, ScoreResult
from app.state import EngineDep, ServiceState

router = APIRouter(tags=["scoring"], route_class=JSONBodyRoute)

_COLUMNS = "insighthub.columns"


_READ = "insighthub.batch_read"  # BatchShortcut has read this body already, and declined it


class ColumnarBatchRoute(JSONBodyRoute):
    """Reads a batch body column-wise (app/schemas/columns.py); pydantic validates whatever the
    fast path leaves to it, so error answers are unchanged."""

    async def validate_body(self, request: Request, adapter: TypeAdapter[Any], raw: bytes) -> Any:
        columns = None if request.scope.get(_READ) else read_batch(raw)
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


class ScoreShortcut:
    """POST /score's answer to a valid event, sent without FastAPI's request machinery.

    Routing, the dependency solver, two Request objects and the Response class cost more per
    request (~64 us in-process) than scoring the event does once concurrent requests are
    coalesced (~26-45 us; docs/benchmarks.md, "HTTP: POST /score answered from the guard").
    ``GuardMiddleware`` has applied the key, the body limit and the concurrency limit and read
    the body; this validates it with the route's own model, exactly as ``JSONBodyRoute`` does,
    and answers what ``score_log`` answers, byte for byte. Everything else it declines, and the
    request then takes the documented FastAPI route with the same body: a body that is not JSON
    or not a valid event (the 422 naming the field), no model loaded yet, or dependency
    overrides (tests replacing the engine).
    """

    _event = TypeAdapter(LogEvent)

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    async def __call__(self, scope: Scope, body: bytes, send: Send) -> bool:
        state = _shortcut_state(self._app, scope, body)
        if state is None:
            return False
        try:
            event = self._event.validate_json(body)
        except ValidationError:
            return False
        await _send_answer(send, await state.engine.coalescer.score(event))
        return True


def _shortcut_state(app: FastAPI, scope: Scope, body: bytes) -> ServiceState | None:
    """The service's state when a shortcut may answer this request: a model is being served,
    no test has replaced a dependency, and the body is non-empty JSON. Otherwise None, and the
    request goes to the route."""
    state: ServiceState | None = getattr(app.state, "insighthub", None)
    if state is None or app.dependency_overrides or not body:
        return None
    if not content_type(scope).startswith(b"application/json"):
        return None
    return state


async def _send_answer(send: Send, content: bytes | memoryview) -> None:
    """What ``_json(content)`` sends: the headers Starlette's Response writes, in its order.

    ``content`` may be a view of bytes (a flat one of single bytes, so its length is its size
    in bytes): uvicorn hands the body to ``transport.write``, which takes any buffer, and
    uvloop keeps the view until it is written; asyncio's transport copies what it cannot send
    at once. Either way the view is what holds its buffer from being written again."""
    headers = [
        (b"content-length", str(len(content)).encode("latin-1")),
        (b"content-type", b"application/json"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class BatchShortcut:
    """POST /score/batch's answer to a body the column-wise check accepts, sent without FastAPI's
    request machinery (routing, two ``Request`` objects, the dependency solver, ``Response``),
    as ``ScoreShortcut`` does for POST /score; the same bytes and headers as ``score_batch``.
    Everything else goes on to the route with the same body: whatever ``read_batch`` leaves to
    pydantic (errors, attributes, unusual timestamps), no model yet, dependency overrides. The
    route is told the body was read already, so a declined body is not read column-wise twice.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    async def __call__(self, scope: Scope, body: bytes, send: Send) -> bool:
        state = _shortcut_state(self._app, scope, body)
        if state is None:
            return False
        columns = read_batch(body)
        if columns is None:
            scope[_READ] = True
            return False
        # The engine writes the whole body: the answers go straight into it, no list of them
        # to join (the same bytes as ``_results_array`` of ``score_columns``), and it is sent
        # from where it was written, not copied into bytes first (~2.5 MB for 1,000 events).
        answer = state.engine.score_columns_view(columns, _RESULTS_BEFORE, _RESULTS_AFTER)
        await _send_answer(send, answer)
        return True


async def score_batch(
    request: ScoreBatchRequest, engine: EngineDep, columns: ColumnsDep
) -> Response:
    """Score up to 10,000 events in order, exactly as if they had been sent one by one."""
    results = (
        engine.score_columns(columns) if columns is not None else engine.score_json(request.logs)
    )  # a list of our own: _results_array may change it
    return _json(_results_array(results))


_RESULTS_BEFORE = b'{"results":['
_RESULTS_AFTER = b"]}"


def _results_array(results: list[bytes]) -> bytes:
    """``{"results":[...]}`` around the engine's JSON objects, with a single copy of them: a
    thousand events answer ~2 MB, and every extra concatenation of a buffer that size allocates
    fresh pages (a page fault each 4 KiB) and copies it again, ~1 ms apiece."""
    if not results:
        return _RESULTS_BEFORE + _RESULTS_AFTER
    results[0] = _RESULTS_BEFORE + results[0]
    results[-1] += _RESULTS_AFTER
    return b",".join(results)


# What @router.post does, with this route's own route class (the decorator cannot set it).
router.add_api_route(
    "/score/batch",
    score_batch,
    methods=["POST"],
    response_model=ScoreBatchResponse,
    responses={200: _stats_link("$request.body#/logs/0/service"), **problem_responses()},
    route_class_override=ColumnarBatchRoute,
)
