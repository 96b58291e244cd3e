"""Bodies of /score and /score/batch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.events import LogEvent

MAX_BATCH_EVENTS = 10_000


class MethodResult(BaseModel):
    """One detector's view of one event."""

    anomaly_score: float = Field(ge=0.0, le=1.0, description="Calibrated: 0.5 = alarm-rate rare.")
    is_anomaly: bool
    method: str = Field(description="Human name of the method.")
    metrics: dict[str, float | None] | None = Field(
        default=None, description="The numbers the method judged by."
    )
    degraded: str | None = Field(
        default=None, description="Set when the method failed on this request and was left out."
    )


class ScoreResult(BaseModel):
    """The verdict on one event."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "is_anomaly": True,
                    "anomaly_score": 0.93,
                    "methods": {
                        "isolation_forest": {
                            "anomaly_score": 0.93,
                            "is_anomaly": True,
                            "method": "Isolation Forest",
                            "metrics": {"latency_ratio": 14.2, "level_score": 2.0},
                        },
                        "sliding_window": {
                            "anomaly_score": 0.41,
                            "is_anomaly": False,
                            "method": "Sliding window",
                            "metrics": {
                                "error_rate": 0.04,
                                "latency_zscore": 3.1,
                                "total_logs": 250.0,
                            },
                        },
                    },
                    "model_version": "20261124T101500Z-0001",
                    "explanation": "latency 2500 ms is 14.2x this service's median of 176 ms",
                    "service": "checkout-api",
                    "service_events_seen": 1250,
                    "baseline_ready": True,
                    "confidence": 0.93,
                }
            ]
        }
    )

    is_anomaly: bool
    anomaly_score: float = Field(ge=0.0, le=1.0)
    methods: dict[str, MethodResult]
    model_version: str
    explanation: str
    service: str
    service_events_seen: int = Field(
        ge=0, description="Events of this service seen before this one (training included)."
    )
    baseline_ready: bool = Field(
        description="False while the service has too few events for its latency to be judged."
    )
    confidence: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "How well this service is known: events seen / (events seen + "
            "INSIGHTHUB_CONFIDENCE_EVENTS); 0 for a new service, 0.5 at that many events. "
            "Detectors warm up on their own; this says how much history their verdict rests on."
        ),
    )


class ScoreBatchRequest(BaseModel):
    """Events to score in order, as if they had arrived one by one."""

    model_config = ConfigDict(extra="forbid")

    logs: list[LogEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class ScoreBatchResponse(BaseModel):
    results: list[ScoreResult]
