"""InsightHub ML Engine: anomaly scores for service logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from app.local import AnomalyDetector

__all__ = ["AnomalyDetector", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that importing a submodule (e.g. in a training worker) does not load the web stack.
    if name == "AnomalyDetector":
        from app.local import AnomalyDetector

        return AnomalyDetector
    raise AttributeError(name)
