"""Bodies of /models and /detectors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    version: str
    created_at: datetime
    source: str = Field(description="'bootstrap', 'raw_rows' or 'logs'.")
    rows: int
    services: int = Field(description="Services whose baselines the version carries.")
    parameters: dict[str, Any]
    library_versions: dict[str, str]
    checksum: str
    active: bool


class ModelList(BaseModel):
    active: str | None
    versions: list[ModelInfo]


class DetectorInfo(BaseModel):
    name: str
    method: str
    kind: str = Field(description="'batch' (fitted by /train) or 'online' (learns as it scores).")
    available: bool
    reason: str | None = Field(default=None, description="Why it is unavailable, if it is.")
    weight: float = Field(description="Weight in the combined score; 0 leaves the method out.")
    requires: list[str] = Field(description="What of an event the method needs.")
    parameters: dict[str, Any]


class DetectorList(BaseModel):
    detectors: list[DetectorInfo]
