"""RFC 9457 problem details, the body of every error response."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    loc: list[str | int] = Field(
        description="Path to the offending field, e.g. ['logs', 3, 'level']."
    )
    field: str = Field(description="The same path, dotted: 'logs.3.level'.")
    msg: str
    type: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
