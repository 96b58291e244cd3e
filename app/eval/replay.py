"""Replaying events through the engine's public path, with a fresh service state per replay.

Every replay goes through ``AnomalyDetector.predict_batch`` (validation, then
``ScoringEngine.score``), exactly what the REST API runs, on a temporary artifacts folder holding
the bootstrap model, so the evaluation measures whatever the engine currently does. Settings come
from the ``INSIGHTHUB_*`` environment like the service's own, so a setting can be tried without
code.
Batches are scored in event order; the engine promises that a batch scores exactly as the same
events one call at a time, so each score sees only the past.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.local import AnomalyDetector
from app.settings import Settings

FloatArray = npt.NDArray[np.float64]

BATCH_EVENTS = 1000


@dataclass(slots=True)
class Cost:
    """Time spent inside ``predict_batch`` (validation + scoring), summed over replays."""

    events: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0

    def add(self, events: int, wall: float, cpu: float) -> None:
        self.events += events
        self.wall_seconds += wall
        self.cpu_seconds += cpu

    @property
    def wall_us_per_event(self) -> float:
        return 1e6 * self.wall_seconds / self.events if self.events else float("nan")

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_seconds / self.events if self.events else float("nan")

    def describe(self) -> str:
        return (
            f"{self.events} events, {self.wall_us_per_event:.1f} us/event wall, "
            f"{self.cpu_us_per_event:.1f} us/event CPU (validation + whole engine, "
            f"batches of {BATCH_EVENTS})"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "events": self.events,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "wall_us_per_event": self.wall_us_per_event,
            "cpu_us_per_event": self.cpu_us_per_event,
        }


@dataclass(slots=True)
class Replay:
    """The engine's verdict on each replayed event, in input order."""

    scores: FloatArray
    flagged: npt.NDArray[np.bool_]
    explanations: list[str] = field(default_factory=list)
    # Each method's calibrated score per event (``keep_methods``), before the combination.
    methods: dict[str, FloatArray] = field(default_factory=dict)


class Replayer:
    """Hands out detectors with fresh state that share one bootstrapped artifacts folder."""

    def __init__(self, artifacts_dir: Path) -> None:
        self.artifacts_dir = artifacts_dir
        self.cost = Cost()
        # The first detector fits and stores the bootstrap model; later ones load it from disk.
        self.settings = AnomalyDetector(artifacts_dir=artifacts_dir).settings

    def replay(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        keep_explanations: bool = False,
        keep_methods: bool = False,
    ) -> Replay:
        detector = AnomalyDetector(artifacts_dir=self.artifacts_dir)
        scores = np.empty(len(events))
        flagged = np.zeros(len(events), dtype=bool)
        explanations: list[str] = []
        methods: dict[str, FloatArray] = {}
        for start in range(0, len(events), BATCH_EVENTS):
            chunk = events[start : start + BATCH_EVENTS]
            wall, cpu = time.perf_counter(), time.process_time()
            results = detector.predict_batch(chunk)
            self.cost.add(len(chunk), time.perf_counter() - wall, time.process_time() - cpu)
            for offset, result in enumerate(results):
                scores[start + offset] = result["anomaly_score"]
                flagged[start + offset] = result["is_anomaly"]
            if keep_explanations:
                explanations.extend(str(result["explanation"]) for result in results)
            if keep_methods:
                for offset, result in enumerate(results):
                    for name, method in result["methods"].items():
                        # A method missing from some events (it failed there) scores 0 there.
                        column = methods.setdefault(name, np.zeros(len(events)))
                        column[start + offset] = method["anomaly_score"]
        return Replay(scores, flagged, explanations, methods)

    def settings_summary(self) -> dict[str, Any]:
        return settings_summary(self.settings)


def settings_summary(settings: Settings) -> dict[str, Any]:
    values = settings.model_dump(mode="json")
    values.pop("artifacts_dir", None)
    return values


@contextmanager
def replayer() -> Iterator[Replayer]:
    with tempfile.TemporaryDirectory(prefix="insighthub-eval-") as folder:
        yield Replayer(Path(folder) / "artifacts")
