"""Typed request and response bodies of the HTTP API (and of the Python API that mirrors it)."""

from app.schemas.events import Level, LogEvent
from app.schemas.models import DetectorInfo, DetectorList, ModelInfo, ModelList
from app.schemas.problem import Problem
from app.schemas.scoring import MethodResult, ScoreBatchRequest, ScoreBatchResponse, ScoreResult
from app.schemas.stats import WindowStats
from app.schemas.training import (
    IsolationForestParams,
    JobStatus,
    TrainAccepted,
    TrainingJob,
    TrainRequest,
)

__all__ = [
    "DetectorInfo",
    "DetectorList",
    "IsolationForestParams",
    "JobStatus",
    "Level",
    "LogEvent",
    "MethodResult",
    "ModelInfo",
    "ModelList",
    "Problem",
    "ScoreBatchRequest",
    "ScoreBatchResponse",
    "ScoreResult",
    "TrainAccepted",
    "TrainRequest",
    "TrainingJob",
    "WindowStats",
]
