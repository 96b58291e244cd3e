"""Pluggable detectors behind one contract (see ``base``) and a registry of them."""

from app.detectors.base import (
    BatchDetector,
    Detector,
    MethodOutput,
    NotFittedError,
    OneOutput,
    ScoringContext,
)
from app.detectors.registry import DETECTOR_TYPES

__all__ = [
    "DETECTOR_TYPES",
    "BatchDetector",
    "Detector",
    "MethodOutput",
    "NotFittedError",
    "OneOutput",
    "ScoringContext",
]
