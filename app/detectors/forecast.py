"""Forecast detector: latency and error rate against each service's seasonal forecast."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output
from app.forecasts import SEASON_HALFLIFE_DAYS


class ForecastDetector(Detector):
    """Two tests per event from ``app.forecasts.ForecastStore``, each an exact tail probability
    under the forecast's normal model: the latency residual (two-sided: a sudden drop is as much a
    change as a rise) and the error count of the event's time bucket (error events only). The
    rarity is the smaller times two (Bonferroni)."""

    name: ClassVar[str] = "forecast"
    method: ClassVar[str] = "Seasonal forecast of latency and error rate (Holt-Winters-style)"
    kind: ClassVar[Literal["batch", "online"]] = "online"
    requires: ClassVar[tuple[str, ...]] = ("timestamp", "latency_ms", "level")

    def __init__(
        self,
        slots: int = 48,
        halflife_minutes: float = 1440.0,
        season_halflife_days: float = SEASON_HALFLIFE_DAYS,
        bucket_seconds: float = 10.0,
    ) -> None:
        self.slots = slots
        self.halflife_minutes = halflife_minutes
        self.season_halflife_days = season_halflife_days
        self.bucket_seconds = bucket_seconds

    def get_params(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "halflife_minutes": self.halflife_minutes,
            "season_halflife_days": self.season_halflife_days,
            "bucket_seconds": self.bucket_seconds,
        }

    def rarity(self, context: ScoringContext) -> MethodOutput:
        view = context.forecasts
        if view is None:
            raise RuntimeError("forecast detector needs the engine's forecast view")
        return MethodOutput(
            rarity=np.minimum(1.0, 2.0 * np.minimum(view.latency_rarity, view.error_rarity)),
            metrics={
                "latency_forecast_ms": view.latency_forecast_ms,
                "latency_interval_low_ms": view.latency_low_ms,
                "latency_interval_high_ms": view.latency_high_ms,
                "latency_residual_z": view.latency_residual_z,
                "error_rate_forecast": view.error_rate_forecast,
                "bucket_errors": view.bucket_errors,
                "bucket_events": view.bucket_events,
            },
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        view = context.forecasts
        if view is None:
            raise RuntimeError("forecast detector needs the engine's forecast view")
        # NaN propagates as through np.minimum.
        latency, error = view.latency_rarity.item(), view.error_rarity.item()
        smallest = latency if latency != latency or latency < error else error
        return one_output(
            (
                min(1.0, 2.0 * smallest) if smallest == smallest else smallest,
                {
                    "latency_forecast_ms": view.latency_forecast_ms.item(),
                    "latency_interval_low_ms": view.latency_low_ms.item(),
                    "latency_interval_high_ms": view.latency_high_ms.item(),
                    "latency_residual_z": view.latency_residual_z.item(),
                    "error_rate_forecast": view.error_rate_forecast.item(),
                    "bucket_errors": view.bucket_errors.item(),
                    "bucket_events": view.bucket_events.item(),
                },
            )
        )
