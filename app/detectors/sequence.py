"""Sequence detector: is each message's template among its service's k most likely next ones?"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np

from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext, one_output


class SequenceDetector(Detector):
    """DeepLog's question, answered by an online n-gram model with backoff (``app.sequences``).

    This is not DeepLog's LSTM: an order-2 Witten-Bell n-gram predicts the next template, online and
    without training. The LSTM variant is ``lstm_sequence`` (app/detectors/lstm_sequence.py),
    present in models trained with the ``[deep]`` extra."""

    name: ClassVar[str] = "sequence"
    method: ClassVar[str] = "Next-template model (n-gram with backoff, DeepLog-style top-k)"
    kind: ClassVar[Literal["batch", "online"]] = "online"
    requires: ClassVar[tuple[str, ...]] = ("message", "per-service template sequence")

    def __init__(self, top_k: int = 5, max_contexts: int = 4096) -> None:
        self.top_k = top_k
        self.max_contexts = max_contexts

    def get_params(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "max_contexts": self.max_contexts}

    def rarity(self, context: ScoringContext) -> MethodOutput:
        view = context.sequences
        if view is None:
            raise RuntimeError("sequence detector needs the engine's sequence view")
        ranks = np.where(view.rank > 0, view.rank, np.nan)
        return MethodOutput(
            rarity=view.rarity,
            metrics={"next_template_probability": view.probability, "next_template_rank": ranks},
        )

    def rarity_one(self, context: ScoringContext) -> OneOutput:
        view = context.sequences
        if view is None:
            raise RuntimeError("sequence detector needs the engine's sequence view")
        rank = view.rank.item()
        return one_output(
            (
                view.rarity.item(),
                {
                    "next_template_probability": view.probability.item(),
                    "next_template_rank": float(rank) if rank > 0 else math.nan,
                },
            )
        )
