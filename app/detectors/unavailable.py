"""Methods on the roadmap: registered so clients can see them, never used for scores."""

from __future__ import annotations

from typing import ClassVar

from app.detectors.base import UnavailableDetector


class LstmSequenceDetector(UnavailableDetector):
    name: ClassVar[str] = "lstm_sequence"
    method: ClassVar[str] = "LSTM next-template model (DeepLog)"
    requires: ClassVar[tuple[str, ...]] = ("message templates", "per-service sequence")
    unavailable_reason: ClassVar[str | None] = (
        "not built yet: the LSTM needs PyTorch as an optional extra; the 'sequence' detector "
        "asks DeepLog's top-k question with an n-gram model instead"
    )
