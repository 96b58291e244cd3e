"""Every detector the service knows, available or not, by name."""

from __future__ import annotations

from app.detectors.autoencoder import AutoencoderDetector
from app.detectors.base import Detector
from app.detectors.forecast import ForecastDetector
from app.detectors.isolation_forest import IsolationForestDetector
from app.detectors.likelihood import LikelihoodDetector
from app.detectors.lstm_sequence import LstmSequenceDetector
from app.detectors.pattern import PatternDetector
from app.detectors.record import RecordDetector
from app.detectors.sequence import SequenceDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.detectors.templates import TemplateDetector

DETECTOR_TYPES: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        IsolationForestDetector,
        SlidingWindowDetector,
        TemplateDetector,
        SequenceDetector,
        ForecastDetector,
        LikelihoodDetector,
        PatternDetector,
        RecordDetector,
        AutoencoderDetector,
        LstmSequenceDetector,
    )
}
