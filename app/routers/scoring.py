"""POST /score and POST /score/batch."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.types import Receive, Scope

from app.errors import problem_responses
from app.schemas.events import LogEvent
from app.schemas.scoring import ScoreBatchRequest, ScoreBatchResponse, ScoreResult
from app.state import EngineDep


class _ValidatedRequest(Request):
    """The request with its JSON body already turned into the route's body model."""

    def __init__(self, scope: Scope, receive: Receive, raw: bytes, parsed: Any) -> None:
        super().__init__(scope, receive)
        self._raw = raw
        self._parsed = parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


class JSONBodyRoute(APIRoute):
    """Validates a JSON body straight from bytes with pydantic-core (``validate_json``).

    FastAPI would ``json.loads`` the body into dicts and lists and then validate those; going
    from bytes to the model in one pass is much cheaper for a batch of events. The endpoint keeps
    its typed body parameter, so the OpenAPI document (and SDKs generated from it) is unchanged;
    FastAPI receives the finished model, which pydantic passes through without validating again.
    Bodies that are empty or not declared as JSON take FastAPI's own path, errors included.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        annotation = self.body_field.field_info.annotation if self.body_field else None
        if annotation is None:
            return handler
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)

        async def validate_then_handle(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            raw = await request.body()
            if not raw or not content_type.startswith("application/json"):
                return await handler(request)
            try:
                parsed = adapter.validate_json(raw)
            except ValidationError as exc:
                # Same shape as FastAPI's own errors (loc starts with "body"); no input echoed.
                raise RequestValidationError(
                    [
                        {**error, "loc": ("body", *error["loc"])}
                        for error in exc.errors(include_url=False, include_input=False)
                    ]
                ) from None
            return await handler(_ValidatedRequest(request.scope, request.receive, raw, parsed))

        return validate_then_handle


router = APIRouter(tags=["scoring"], route_class=JSONBodyRoute)


def _json(content: object) -> Response:
    # The engine builds plain dicts in the response schema's shape; orjson writes them directly
    # instead of validating each one again through the response model.
    return Response(orjson.dumps(content), media_type="application/json")


@router.post("/score", response_model=ScoreResult, responses=problem_responses())
async def score_log(event: LogEvent, engine: EngineDep) -> Response:
    """Score one log event: combined verdict, per-method breakdown and an explanation."""
    return _json(await engine.coalescer.score(event))


@router.post("/score/batch", response_model=ScoreBatchResponse, responses=problem_responses())
async def score_batch(request: ScoreBatchRequest, engine: EngineDep) -> Response:
    """Score up to 10,000 events in order, exactly as if they had been sent one by one."""
    return _json({"results": engine.score(request.logs)})
