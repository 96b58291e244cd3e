"""Body of /stats/{service}."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class WindowStats(BaseModel):
    """Aggregates of one service over the last ``window_minutes`` of event time."""

    service: str
    window_minutes: float
    window_end: datetime | None = Field(
        description="Newest event time of the service: the window is the span just before it."
    )
    total_logs: int
    error_count: int
    error_rate: float
    avg_latency: float | None
    max_latency: float | None
    min_latency: float | None
