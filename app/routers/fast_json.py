"""A route class that validates JSON request bodies straight from bytes (pydantic-core)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope


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


def _declares_json(scope: Scope) -> bool:
    return content_type(scope).startswith(b"application/json")


def content_type(scope: Scope) -> bytes:
    # Straight from the raw header list: building starlette's Headers here would be done again
    # by FastAPI on the request handed on, and this runs for every event.
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).lower()
    return b""


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
            try:
                raw = await request.body()
            except ClientDisconnect:
                # What FastAPI answers when it cannot read a body (nobody is listening anyway).
                raise HTTPException(400, "There was an error parsing the body") from None
            if not raw or not self.reads_as_json(request.scope):
                return await handler(request)
            parsed = await self.validate_body(request, adapter, raw)
            return await handler(_ValidatedRequest(request.scope, request.receive, raw, parsed))

        return validate_then_handle

    def reads_as_json(self, scope: Scope) -> bool:
        """Whether this route validates the body itself; the rest take FastAPI's path."""
        return _declares_json(scope)

    async def validate_body(self, request: Request, adapter: TypeAdapter[Any], raw: bytes) -> Any:
        """The body model from the raw JSON; a subclass may validate elsewhere (another process)."""
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            raise body_validation_error(
                exc.errors(include_url=False, include_input=False)
            ) from None


def body_validation_error(errors: Sequence[Any]) -> RequestValidationError:
    # Same shape as FastAPI's own errors (loc starts with "body"); no input echoed.
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors])
