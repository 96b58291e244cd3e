"""Pattern detector: a run of latency patterns the service has never made (contextual)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output


class PatternDetector(Detector):
    """Novel patterns of quantised latency levels, counted per service by ``app.patterns``
    (the contextual idea of CAD OSE and relative-entropy detection, not their algorithms): the
    event's level after the few levels before it is new to the service, and so are more of the
    recent patterns than the service's own rate of novelty explains (binomial tail). It sees a
    change of shape where no single latency is extreme for its time of day. Its state lives in
    the engine's pattern store; a service is judged after ~400 latencies (200 fix its levels,
    200 more its rate of novelty)."""

    name: ClassVar[str] = "pattern"
    method: ClassVar[str] = "Novel patterns of recent latency levels (contextual, CAD-style)"
    kind: ClassVar[Literal["batch", "online"]] = "online"
    requires: ClassVar[tuple[str, ...]] = ("latency_ms",)

    def get_params(self) -> dict[str, Any]:
        # Its constants (app.patterns) belong to the pattern store, which judges while it
        # learns; the detector itself has no parameters.
        return {}

    def rarity(self, context: ScoringContext) -> MethodOutput:
        view = context.patterns
        if view is None:
            raise RuntimeError("pattern detector needs the engine's pattern view")
        return MethodOutput(
            rarity=view.rarity,
            metrics={
                "novel_pattern_order": view.novel_order,
                "recent_novel_patterns": view.recent_novel,
                "novelty_rate": view.novelty_rate,
            },
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        view = context.patterns
        if view is None:
            raise RuntimeError("pattern detector needs the engine's pattern view")
        return one_output(
            (
                view.rarity.item(),
                {
                    "novel_pattern_order": view.novel_order.item(),
                    "recent_novel_patterns": view.recent_novel.item(),
                    "novelty_rate": view.novelty_rate.item(),
                },
            )
        )
