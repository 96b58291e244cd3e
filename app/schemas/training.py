"""Bodies of /train and /train/{job_id}."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from app.schemas.events import MAX_LATENCY_MS, LogEvent

MAX_TRAIN_ROWS = 2_000_000

RawRow = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False, strict=True)]],
    Field(min_length=2, max_length=2, description="[latency_ms, level_score]"),
]


class IsolationForestParams(BaseModel):
    """Overrides of the Isolation Forest's settings for one training job."""

    model_config = ConfigDict(extra="forbid")

    # strict: numbers only, no true/false or numeric strings (lax mode would take them)
    contamination: float | None = Field(default=None, gt=0.0, le=0.5, strict=True)
    n_estimators: int | None = Field(default=None, ge=1, le=2000, strict=True)
    max_samples: int | None = Field(default=None, ge=2, le=100_000, strict=True)
    # scikit-learn seeds numpy's RandomState, which takes 0 <= seed < 2**32 only; anything else
    # would pass here and fail later inside the training worker.
    random_state: int | None = Field(default=None, ge=0, le=2**32 - 1, strict=True)


class TrainRequest(BaseModel):
    """Training data: raw ``[latency_ms, level_score]`` rows or log events, not both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # Valid as they stand (the default minimum is 50 rows), so Swagger UI's "Try it out"
            # starts a real job instead of answering 422.
            "examples": [
                {"data": [[100.0 + 7.0 * (i % 9), 2 if i % 25 == 0 else 0] for i in range(60)]},
                {
                    "logs": [
                        {"service": "api", "level": "INFO", "latency_ms": 80.0 + (i % 11)}
                        for i in range(60)
                    ]
                },
            ]
        },
    )

    data: list[RawRow] | None = Field(default=None, max_length=MAX_TRAIN_ROWS)
    logs: list[LogEvent] | None = Field(default=None, max_length=MAX_TRAIN_ROWS)
    parameters: IsolationForestParams = Field(default_factory=IsolationForestParams)
    activate: bool = Field(
        default=True, strict=True, description="Make the new version active when done."
    )
    # A large body is validated in another process and arrives as a TrainingInput (rows as
    # arrays, app.training_data): data and logs are then None. Any: schemas import no models.
    _prepared: Any = PrivateAttr(default=None)
    # Set once the checks below have passed. FastAPI validates the body model it is handed (by
    # JSONBodyRoute, already validated from bytes) again; pydantic passes the instance through
    # but runs the "after" validator on it again, which would walk every row a second time.
    _checked: bool = PrivateAttr(default=False)

    @classmethod
    def from_prepared(cls, prepared: Any) -> TrainRequest:
        """A request standing for a body already validated and converted elsewhere."""
        request = cls.model_construct(activate=prepared.activate)
        request._prepared = prepared
        request._checked = True
        return request

    def prepared_input(self) -> Any:
        """The TrainingInput made in another process, or None when the fields hold the rows."""
        return self._prepared

    @model_validator(mode="after")
    def _exactly_one_source(self) -> TrainRequest:
        if self._checked:
            return self
        if (self.data is None) == (self.logs is None):
            raise ValueError("give exactly one of 'data' (raw rows) or 'logs' (events)")
        if self.data is not None:
            check_raw_rows(self.data)
        self._checked = True
        return self


def check_raw_rows(data: list[list[float]]) -> None:
    """Raises ValueError naming the first row whose latency or level score is out of range."""
    for index, (latency, level_score) in enumerate(data):
        if not 0.0 <= latency <= MAX_LATENCY_MS:
            raise ValueError(f"data[{index}][0] (latency_ms) must lie in [0, {MAX_LATENCY_MS:.0f}]")
        if level_score not in (0.0, 1.0, 2.0, 3.0):
            raise ValueError(f"data[{index}][1] (level_score) must be 0, 1, 2 or 3")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class TrainAccepted(BaseModel):
    job_id: str
    status: JobStatus


class TrainingJob(BaseModel):
    job_id: str
    status: JobStatus
    model_version: str | None = None
    error: str | None = None
    rows: int
    created_at: datetime
    finished_at: datetime | None = None
