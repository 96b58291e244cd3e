"""Every detector the service knows, available or not, by name."""

from __future__ import annotations

from app.detectors.base import Detector
from app.detectors.isolation_forest import IsolationForestDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.detectors.unavailable import AutoencoderDetector, ForecastDetector, LstmSequenceDetector

DETECTOR_TYPES: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        IsolationForestDetector,
        SlidingWindowDetector,
        LstmSequenceDetector,
        AutoencoderDetector,
        ForecastDetector,
    )
}
