"""Methods on the roadmap: registered so clients can see them, never used for scores."""

from __future__ import annotations

from typing import ClassVar

from app.detectors.base import UnavailableDetector


class LstmSequenceDetector(UnavailableDetector):
    name: ClassVar[str] = "lstm_sequence"
    method: ClassVar[str] = "LSTM next-template model (DeepLog-style)"
    requires: ClassVar[tuple[str, ...]] = ("message templates", "per-service sequence")
    unavailable_reason: ClassVar[str | None] = (
        "not built yet: needs message templates and an optional PyTorch extra (issue #4)"
    )


class AutoencoderDetector(UnavailableDetector):
    name: ClassVar[str] = "autoencoder"
    method: ClassVar[str] = "Autoencoder reconstruction error"
    requires: ClassVar[tuple[str, ...]] = ("event features",)
    unavailable_reason: ClassVar[str | None] = "not built yet (issue #4)"


class ForecastDetector(UnavailableDetector):
    name: ClassVar[str] = "forecast"
    method: ClassVar[str] = "Seasonal forecast of latency and error rate"
    requires: ClassVar[tuple[str, ...]] = ("per-service time series",)
    unavailable_reason: ClassVar[str | None] = "not built yet (issue #4)"
