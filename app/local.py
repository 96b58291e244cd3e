"""The engine without HTTP: ``AnomalyDetector().predict({...})`` answers exactly as POST /score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.bootstrap import forest_parameters, load_or_bootstrap
from app.engine import ScoreDict, ScoringEngine
from app.events import parse_events
from app.model import TrainingData, fit_model
from app.model_store import ModelStore
from app.schemas.events import LogEvent
from app.schemas.stats import WindowStats
from app.settings import Settings

EventLike = Mapping[str, Any] | LogEvent
# LogEvent.model_validate's own validator, called without the classmethod around it.
_validate = LogEvent.__pydantic_validator__.validate_python


class AnomalyDetector:
    """Scores events in-process with the active model in ``artifacts_dir`` (bootstrapped if none).

    Events are validated exactly as the HTTP API validates them (``pydantic.ValidationError`` on
    bad input). Like the service, it learns each service's baseline and windows from what it scores.
    One instance is for one thread at a time (each event updates its stores, and the one-event
    path reuses its arrays): give each thread its own, or hold a lock around the calls.
    """

    def __init__(
        self, settings: Settings | None = None, *, artifacts_dir: str | Path | None = None
    ) -> None:
        chosen = settings or Settings()
        if artifacts_dir is not None:
            chosen = Settings.model_validate(
                chosen.model_dump() | {"artifacts_dir": Path(artifacts_dir)}
            )
        self.settings = chosen
        self.store = ModelStore(chosen.artifacts_dir, chosen.keep_versions)
        self.engine = ScoringEngine(chosen, load_or_bootstrap(self.store, chosen))

    @property
    def model_version(self) -> str:
        return self.engine.model.version

    def predict(self, event: EventLike) -> ScoreDict:
        # parse_events' validation, without its list (a dict, the usual input, without the
        # model class's instance check).
        if type(event) is dict or not isinstance(event, LogEvent):
            return self.engine.score_one(_validate(event))
        return self.engine.score_one(event)

    def predict_batch(self, events: Sequence[EventLike]) -> list[ScoreDict]:
        return self.engine.score(parse_events(events))

    def stats(self, service: str) -> WindowStats | None:
        return self.engine.stats(service)

    def train(
        self,
        data: TrainingData,
        parameters: Mapping[str, Any] | None = None,
        *,
        activate: bool = True,
    ) -> str:
        """Fit in this process, store a new version, optionally serve it; returns the version."""
        merged = forest_parameters(self.settings) | dict(parameters or {})
        model = self.store.save(fit_model(data, merged, self.settings.baseline_warmup_events))
        if activate:
            self.store.activate(model.version, checked=model)
            self.engine.swap(model)
        return model.version
