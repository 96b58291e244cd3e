"""Anomaly-likelihood detector: a run of surprising latencies, judged against the service's own
history of surprise (Ahmad et al. 2017)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output


class LikelihoodDetector(Detector):
    """HTM's "anomaly likelihood" post-processing applied to the seasonal forecast's residuals
    (``app.forecasts``): the short average of the residuals' size against the mean and spread of
    that average over the service's longer past, by the normal upper tail. The forecast detector
    judges one residual; this one judges a few in a row (and, with a slow average, a few dozen),
    so it sees a noisier stretch, a pattern that stops fitting, or spikes coming denser than
    usual, where no single event is extreme. Its
    state lives in the engine's forecast store; the method needs latencies and ~300 events of a
    service (the forecast's warm-up and settling, then 200 short averages) before it judges."""

    name: ClassVar[str] = "likelihood"
    method: ClassVar[str] = "Anomaly likelihood of the forecast residuals (Ahmad et al. 2017)"
    kind: ClassVar[Literal["batch", "online"]] = "online"
    requires: ClassVar[tuple[str, ...]] = ("timestamp", "latency_ms")

    def get_params(self) -> dict[str, Any]:
        # Its constants (LIKELIHOOD_* in app.forecasts) belong to the forecast store, which
        # computes the likelihood while it learns; the detector itself has no parameters.
        return {}

    def rarity(self, context: ScoringContext) -> MethodOutput:
        view = context.forecasts
        if view is None:
            raise RuntimeError("likelihood detector needs the engine's forecast view")
        return MethodOutput(
            rarity=view.likelihood_rarity, metrics={"likelihood_z": view.likelihood_z}
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        view = context.forecasts
        if view is None:
            raise RuntimeError("likelihood detector needs the engine's forecast view")
        return one_output(
            (view.likelihood_rarity.item(), {"likelihood_z": view.likelihood_z.item()})
        )
