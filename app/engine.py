"""The scoring pipeline every front end shares (REST, the Python API, the command line).

events -> columns -> per-service baselines and windows (read, then learned, in event order)
       -> feature matrix -> every enabled detector on the whole batch -> calibrated scores
       -> combined score, decision and explanation per event

Concurrency: ``score`` is synchronous and never awaits, and the service calls it on the event loop,
so two requests never interleave inside it and the online state needs no lock. A model swap is one
reference assignment made on the same loop; each call reads the model once and keeps it to the end.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.baselines import BaselineStore, BaselineView
from app.batching import ScoreCoalescer
from app.combiner import combine
from app.detectors.base import Detector, MethodOutput, ScoringContext
from app.detectors.calibration import OnlineRecalibration, alarm_rarity, rarity_to_score
from app.detectors.forecast import ForecastDetector
from app.detectors.likelihood import LikelihoodDetector
from app.detectors.registry import DETECTOR_TYPES
from app.detectors.sequence import SequenceDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.detectors.templates import TemplateDetector
from app.events import EventBatch
from app.explain import explain
from app.features import expected_latency_z, feature_matrix
from app.forecasts import ForecastStore
from app.model import Model
from app.repeats import AlarmRepeats
from app.schemas.events import LogEvent
from app.schemas.models import DetectorInfo
from app.schemas.stats import WindowStats
from app.sequences import SequenceStore
from app.settings import Settings
from app.templates import TemplateStore, TemplateView
from app.windows import WindowStore, WindowView

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ScoreDict = dict[str, Any]


def _column(values: FloatArray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


class ScoringEngine:
    def __init__(self, settings: Settings, model: Model) -> None:
        self.settings = settings
        halflife = settings.baseline_halflife_minutes * 60.0
        self.baselines = BaselineStore(
            settings.baseline_warmup_events, halflife, settings.max_services
        )
        self.windows = WindowStore(
            settings.window_seconds,
            settings.window_buckets,
            settings.window_min_events,
            halflife,
            settings.max_services,
        )
        self.sliding_window = SlidingWindowDetector(
            settings.window_minutes, settings.window_buckets, settings.window_min_events
        )
        self.templates = TemplateStore(
            settings.template_max,
            settings.template_similarity,
            settings.template_surge_messages,
            settings.max_services,
        )
        self.sequences = SequenceStore(
            settings.sequence_top_k, settings.sequence_max_contexts, settings.max_services
        )
        self.forecasts = ForecastStore(
            settings.forecast_slots,
            settings.forecast_halflife_minutes * 60.0,
            settings.forecast_season_halflife_days,
            settings.forecast_bucket_seconds,
            settings.baseline_warmup_events,
            max_services=settings.max_services,
        )
        self.online_detectors: list[Detector] = [
            self.sliding_window,
            TemplateDetector(
                settings.template_max,
                settings.template_similarity,
                settings.template_surge_messages,
            ),
            SequenceDetector(settings.sequence_top_k, settings.sequence_max_contexts),
            ForecastDetector(
                settings.forecast_slots,
                settings.forecast_halflife_minutes,
                settings.forecast_season_halflife_days,
                settings.forecast_bucket_seconds,
            ),
            LikelihoodDetector(),
        ]
        self.recalibration = OnlineRecalibration(settings.max_services)
        self.repeats = AlarmRepeats(settings.alarm_repeat_events, settings.max_services)
        self.weights = settings.method_weights()
        self._method_names = {cls.name: cls.method for cls in DETECTOR_TYPES.values()}
        self._model = model
        self.baselines.seed(model.baselines)
        self.templates.seed(model.templates, model.template_seeds)
        # Single-event requests arriving together are scored in one call (see app/batching.py).
        self.coalescer = ScoreCoalescer(self.score)
        self.detector_failures: Counter[str] = Counter()  # exported by /metrics

    @property
    def model(self) -> Model:
        return self._model

    def swap(self, model: Model) -> None:
        """Serve ``model`` from the next call on; calls under way finish with the old one."""
        self._model = model
        self.baselines.seed(model.baselines)
        self.templates.seed(model.templates, model.template_seeds)

    def _detectors(self, model: Model) -> list[Detector]:
        batch_detectors: list[Detector] = [model.isolation_forest]
        if model.autoencoder is not None:
            batch_detectors.append(model.autoencoder)
        return batch_detectors + self.online_detectors

    def score(
        self, events: Sequence[LogEvent], received_at: float | None = None
    ) -> list[ScoreDict]:
        """Score events in order; the result is the same as scoring them one call at a time."""
        if not events:
            return []
        model = self._model
        context = self.observe(events, EventBatch.from_events(events, received_at))
        outputs: dict[str, MethodOutput] = {}
        failures: dict[str, str] = {}
        for detector in self._detectors(model):
            try:
                outputs[detector.name] = detector.rarity(context)
            except Exception as exc:
                # One broken method must not fail the request: it is reported as degraded.
                log.exception("detector %s failed; scoring without it", detector.name)
                failures[detector.name] = f"{type(exc).__name__}: {exc}"
                self.detector_failures[detector.name] += 1
        return self._render(
            model,
            context.batch,
            context.baseline,
            context.window,
            outputs,
            failures,
            context.templates,
        )

    def observe(self, events: Sequence[LogEvent], batch: EventBatch) -> ScoringContext:
        """Read every per-service store for each event, then learn the event, in batch order:
        everything the detectors see. ``score`` is this, the detectors and the rendering."""
        baseline = self.baselines.observe(batch)
        window = self.windows.observe(batch)
        templates = self.templates.observe(batch.services, [event.message for event in events])
        forecasts = self.forecasts.observe(batch)
        return ScoringContext(
            batch,
            feature_matrix(
                expected_latency_z(baseline.latency_z, forecasts.latency_residual_z),
                batch.level_scores,
            ),
            baseline,
            window,
            templates,
            self.sequences.observe(batch.services, templates.template_id),
            forecasts,
        )

    def _render(
        self,
        model: Model,
        batch: EventBatch,
        baseline: BaselineView,
        window: WindowView,
        outputs: dict[str, MethodOutput],
        failures: dict[str, str],
        templates: TemplateView | None = None,
    ) -> list[ScoreDict]:
        q = self.settings.target_false_alarm_rate
        threshold = self.settings.anomaly_threshold
        rarities = self.recalibration.observe(
            batch.services,
            batch.timestamps,
            {name: out.rarity for name, out in outputs.items()},
            {name: alarm_rarity(q, threshold, self.weights.get(name, 1.0)) for name in outputs},
        )
        scores = {name: rarity_to_score(rarity, q) for name, rarity in rarities.items()}
        combined, flagged = combine(scores, self.weights, threshold, len(batch))
        # Still flagged, but ranked below the alarm they repeat (see app/repeats.py).
        combined = self.repeats.observe(batch.services, baseline.events_seen, combined, threshold)
        method_names = self._method_names
        # Per method: its scores, and its metrics transposed to one tuple per event (zip does the
        # transposing in C; the per-event loop below then only builds the dicts).
        columns = {
            name: (
                scores[name].tolist(),
                tuple(out.metrics),
                list(zip(*(_column(values) for values in out.metrics.values()), strict=True)),
            )
            for name, out in outputs.items()
        }
        explanations = explain(
            batch,
            baseline,
            window,
            scores,
            combined,
            flagged,
            self.settings,
            outputs,
            templates,
            self.templates.miner.text,
        )
        seen = baseline.events_seen.tolist()
        confidence = (
            baseline.events_seen / (baseline.events_seen + self.settings.confidence_events)
        ).tolist()
        ready = baseline.ready.tolist()
        combined_list = combined.tolist()
        flagged_list = flagged.tolist()
        results: list[ScoreDict] = []
        for i in range(len(batch)):
            methods: dict[str, Any] = {}
            for name, (method_scores, metric_names, metric_rows) in columns.items():
                methods[name] = {
                    "anomaly_score": method_scores[i],
                    "is_anomaly": method_scores[i] >= threshold,
                    "method": method_names[name],
                    "metrics": dict(zip(metric_names, metric_rows[i], strict=True)),
                }
            for name, reason in failures.items():
                methods[name] = {
                    "anomaly_score": 0.0,
                    "is_anomaly": False,
                    "method": method_names[name],
                    "metrics": None,
                    "degraded": reason,
                }
            results.append(
                {
                    "is_anomaly": flagged_list[i],
                    "anomaly_score": combined_list[i],
                    "methods": methods,
                    "model_version": model.version,
                    "explanation": explanations[i],
                    "service": batch.services[i],
                    "service_events_seen": seen[i],
                    "baseline_ready": ready[i],
                    "confidence": confidence[i],
                }
            )
        return results

    def stats(self, service: str) -> WindowStats | None:
        snapshot = self.windows.snapshot(service)
        if snapshot is None:
            return None
        return WindowStats(
            service=service,
            window_minutes=self.settings.window_minutes,
            window_end=(
                datetime.fromtimestamp(snapshot.window_end, UTC)
                if snapshot.window_end is not None
                else None
            ),
            total_logs=snapshot.total,
            error_count=snapshot.errors,
            error_rate=snapshot.errors / snapshot.total if snapshot.total else 0.0,
            avg_latency=snapshot.avg_latency,
            max_latency=snapshot.max_latency,
            min_latency=snapshot.min_latency,
        )

    def detector_infos(self) -> list[DetectorInfo]:
        active = {d.name: d for d in self._detectors(self._model)}
        infos = []
        for name, cls in DETECTOR_TYPES.items():
            instance = active.get(name)
            infos.append(
                DetectorInfo(
                    name=name,
                    method=cls.method,
                    kind=cls.kind,
                    available=cls.available() and instance is not None,
                    reason=cls.unavailable_reason,
                    weight=self.weights.get(name, 0.0),
                    parameters=instance.get_params() if instance is not None else {},
                    requires=list(cls.requires),
                )
            )
        return infos
