"""Record detector: a latency outside the whole range the service has ever shown."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output


class RecordDetector(Detector):
    """A breakout of the service's latency range by more than ``RECORD_TOLERANCE`` of it, from
    ``app.records`` (the "spatial anomaly" of Numenta's HTM detector for NAB, from its published
    description). It sees a latency far beyond every spike the service has made, which the
    forecast, taught by those spikes that the service is wild, may score below the alarm. Its
    rarity is already a frequency of the service's own history (the chance that the newest of
    its latencies is the most extreme, squared for the margin), so it is not recalibrated; a
    service is judged from its ``app.records.RECORD_MIN_EVENTS``-th latency on."""

    name: ClassVar[str] = "record"
    method: ClassVar[str] = "Latency beyond the service's whole range so far (HTM-style spatial)"
    kind: ClassVar[Literal["batch", "online"]] = "online"
    requires: ClassVar[tuple[str, ...]] = ("latency_ms",)
    recalibrated: ClassVar[bool] = False

    def get_params(self) -> dict[str, Any]:
        # Its constants (RECORD_TOLERANCE, RECORD_MIN_EVENTS in app.records) belong to the
        # record store, which judges while it learns; the detector itself has no parameters.
        return {}

    def rarity(self, context: ScoringContext) -> MethodOutput:
        view = context.records
        if view is None:
            raise RuntimeError("record detector needs the engine's record view")
        return MethodOutput(
            rarity=view.rarity,
            metrics={
                "range_margin": view.margin,
                "range_low_ms": view.low_ms,
                "range_high_ms": view.high_ms,
            },
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        view = context.records
        if view is None:
            raise RuntimeError("record detector needs the engine's record view")
        return one_output(
            (
                view.rarity.item(),
                {
                    "range_margin": view.margin.item(),
                    "range_low_ms": view.low_ms.item(),
                    "range_high_ms": view.high_ms.item(),
                },
            )
        )
