"""The service's errors and how every error becomes an RFC 9457 problem+json response."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas.problem import FieldError, Problem

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class InsightHubError(Exception):
    status: int = 500
    title: str = "Internal error"
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelNotReady(InsightHubError):
    status = 503
    title = "Model not ready"
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}


class UnknownService(InsightHubError):
    status = 404
    title = "Unknown service"


class UnknownJob(InsightHubError):
    status = 404
    title = "Unknown training job"


class UnknownModelVersion(InsightHubError):
    status = 404
    title = "Unknown model version"


class UnusableModelVersion(InsightHubError):
    status = 409
    title = "Model version cannot be loaded"


class TrainingRejected(InsightHubError):
    status = 422
    title = "Training data rejected"


class PayloadTooLarge(InsightHubError):
    status = 413
    title = "Content too large"


class Overloaded(InsightHubError):
    status = 503
    title = "Service overloaded"


# Answered by app/middleware.py before any route runs, so every route can answer them.
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
GUARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "The request body is larger than this route accepts."},
    503: {
        "model": Problem,
        "description": "Too many requests in flight, or no model loaded yet: retry later.",
        "headers": RETRY_AFTER_HEADER,
    },
}
# Probes are never refused for load (see app/middleware.py); a body is still limited.
PROBE_RESPONSES: dict[int | str, dict[str, Any]] = {413: GUARD_RESPONSES[413]}
UNAUTHORIZED_RESPONSE: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "The API key is missing or wrong."}
}


def problem_body(status: int, title: str, detail: str) -> bytes:
    """A problem+json body for code that answers below FastAPI (pure ASGI middleware)."""
    return (
        Problem(title=title, status=status, detail=detail)
        .model_dump_json(exclude_none=True)
        .encode("utf-8")
    )


def use_problem_media_type(openapi: dict[str, Any]) -> dict[str, Any]:
    """Declare error bodies as application/problem+json, the type they are sent with.

    FastAPI files every ``responses=`` model under application/json; clients and schema checkers
    (schemathesis) compare the declared type with the sent one, so move Problem bodies over.
    """
    problem_ref = "#/components/schemas/Problem"
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                body = content.get("application/json")
                if body is not None and body.get("schema", {}).get("$ref") == problem_ref:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return openapi


def problem_responses(*errors: type[InsightHubError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries so generated SDKs know each route's typed errors."""
    responses: dict[int | str, dict[str, Any]] = {
        422: {"model": Problem, "description": "A field is invalid; `errors` names each one."}
    }
    for error in errors:
        responses[error.status] = {"model": Problem, "description": error.title}
    return responses


def _problem(
    status: int, title: str, detail: str, errors: list[FieldError] | None = None
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_MEDIA_TYPE
    )


def field_errors(raw_errors: Sequence[Any]) -> list[FieldError]:
    """Pydantic errors without the offending input: it may be huge, secret or a NaN that JSON
    cannot carry (which would turn a 422 into a 500)."""
    result = []
    for error in raw_errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        shown = loc[1:] if loc and loc[0] == "body" else loc
        result.append(
            FieldError(
                loc=loc,
                field=".".join(str(part) for part in shown) or "body",
                msg=str(error.get("msg", "invalid value")),
                type=str(error.get("type", "value_error")),
            )
        )
    return result


def summarise(errors: list[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.field}: {first.msg}{more}"


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not parse a JSON body it reports as a bare 400, if we know.

    json.loads raises RecursionError on very deep nesting and ValueError on integers of more
    than 4300 digits; both are bad input like any other JSON error, so they get the same 422.
    """
    if exc.status_code != 400:
        return None
    if isinstance(exc.__cause__, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc.__cause__, ValueError):
        return f"JSON could not be parsed: {exc.__cause__}"
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InsightHubError)
    async def _insighthub_error(request: Request, exc: InsightHubError) -> JSONResponse:
        response = _problem(exc.status, exc.title, exc.detail)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc.errors())
        return _problem(422, "Invalid request", summarise(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unparsable = _unparsable_body(exc)
        if unparsable is not None:
            error = FieldError(loc=["body"], field="body", msg=unparsable, type="json_invalid")
            return _problem(422, "Invalid request", f"body: {unparsable}", [error])
        title = {
            404: "Not found",
            405: "Method not allowed",
            413: PayloadTooLarge.title,
        }.get(exc.status_code, "HTTP error")
        response = _problem(exc.status_code, title, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _problem(500, "Internal error", "an unexpected error occurred; it has been logged")
