"""Message-template detector: a template new to the service, rare for it, or surging in it."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np

from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output
from app.templates import TemplateView


class TemplateDetector(Detector):
    """Four tail probabilities per event from ``app.templates.TemplateStore``: Good-Turing
    novelty for the service, the system-wide rarity of a template new to the service, the
    empirical rarity of the template in the service, and a Poisson surge test of its recent count
    (warnings and errors only). The rarity is the smallest of the four times four (Bonferroni)."""

    name: ClassVar[str] = "templates"
    method: ClassVar[str] = "Message templates (Drain-style): new, rare or surging template"
    kind: ClassVar[Literal["batch", "online"]] = "online"
    requires: ClassVar[tuple[str, ...]] = ("message",)
    # Every test here is already judged against the service's own (and the system's) history,
    # learned online; the surge test's expectation is the template's older share, which rises
    # with a long incident. Recalibrating on top silenced the method through every long run of
    # alarms (on BGL a 60-line "data TLB error interrupt" run fell from a raw rarity of 1e-10 to
    # a score of 0.11 after a dozen lines) and, after one warning flood, for every later novelty.
    recalibrated: ClassVar[bool] = False

    def __init__(
        self,
        max_templates: int = 5000,
        similarity: float = 0.5,
        surge_halflife_messages: float = 50.0,
        surge_min_level: str = "WARN",
    ) -> None:
        self.max_templates = max_templates
        self.similarity = similarity
        self.surge_halflife_messages = surge_halflife_messages
        self.surge_min_level = surge_min_level

    def get_params(self) -> dict[str, Any]:
        return {
            "max_templates": self.max_templates,
            "similarity": self.similarity,
            "surge_halflife_messages": self.surge_halflife_messages,
            "surge_min_level": self.surge_min_level,
        }

    def rarity(self, context: ScoringContext) -> MethodOutput:
        view = context.templates
        if view is None:
            raise RuntimeError("templates detector needs the engine's template view")
        return self._rarity_of_batch(view)

    def _rarity_of_batch(self, view: TemplateView) -> MethodOutput:
        tests = [
            view.novelty_rarity,
            view.system_rarity,
            view.rarity_of_rare,
            view.surge_rarity,
        ]
        smallest = np.minimum.reduce(tests)
        has_template = view.template_id >= 0
        return MethodOutput(
            rarity=np.minimum(1.0, len(tests) * smallest),
            metrics={
                "template_id": np.where(has_template, view.template_id, np.nan),
                "template_count": np.where(has_template, view.template_count, np.nan),
                "service_messages": view.service_messages.astype(np.float64),
                "novelty_rarity": view.novelty_rarity,
                "system_rarity": view.system_rarity,
                "rare_rarity": view.rarity_of_rare,
                "surge_count": view.surge_count,
                "surge_expected": view.surge_expected,
            },
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        """``rarity`` of a batch of one (every /score) on Python floats: the same arithmetic,
        NaN propagating as through ``np.minimum``."""
        view = context.templates
        if view is None:
            raise RuntimeError("templates detector needs the engine's template view")
        # item(): each 1-element column's Python value without a numpy scalar.
        novelty = view.novelty_rarity.item()
        system = view.system_rarity.item()
        rare = view.rarity_of_rare.item()
        surge = view.surge_rarity.item()
        tests = (novelty, system, rare, surge)
        known = novelty == novelty and system == system and rare == rare and surge == surge
        smallest = min(tests) if known else math.nan
        template_id = view.template_id.item()
        has_template = template_id >= 0
        return one_output(
            (
                min(1.0, len(tests) * smallest) if smallest == smallest else math.nan,
                {
                    "template_id": float(template_id) if has_template else math.nan,
                    "template_count": float(view.template_count.item())
                    if has_template
                    else math.nan,
                    "service_messages": float(view.service_messages.item()),
                    "novelty_rarity": novelty,
                    "system_rarity": system,
                    "rare_rarity": rare,
                    "surge_count": view.surge_count.item(),
                    "surge_expected": view.surge_expected.item(),
                },
            )
        )
