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
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.baselines import BaselineStore, BaselineView
from app.batching import ScoreCoalescer
from app.combiner import combine_matrix
from app.detectors.base import Detector, MethodOutput, OneOutput, ScoringContext
from app.detectors.calibration import (
    OnlineRecalibration,
    alarm_arrays,
    alarm_rarity,
    log_false_alarm_rate,
    rarity_to_score,
)
from app.detectors.forecast import ForecastDetector
from app.detectors.likelihood import LikelihoodDetector
from app.detectors.pattern import PatternDetector
from app.detectors.record import RecordDetector
from app.detectors.registry import DETECTOR_TYPES
from app.detectors.sequence import SequenceDetector
from app.detectors.sliding_window import SlidingWindowDetector
from app.detectors.templates import TemplateDetector
from app.events import EventBatch, OneEventColumns
from app.explain import explain, explain_one
from app.features import expected_latency_z, feature_matrix
from app.forecasts import ForecastStore
from app.model import Model
from app.one_event import (
    combine_one,
    features_of_one,
    finite_or_none,
    recalibrate_one,
    scores_of_one,
)
from app.patterns import PatternStore
from app.records import RecordStore
from app.recurrences import AlarmRecurrences
from app.rendering import (
    FailedMethod,
    MethodLayout,
    ResultTemplate,
    render_joined_view,
    render_results,
    result_template,
)
from app.repeats import AlarmRepeats
from app.schemas.columns import EventColumns
from app.schemas.events import LEVEL_SCORES, LogEvent
from app.schemas.models import DetectorInfo
from app.schemas.stats import WindowStats
from app.sequences import SequenceStore
from app.settings import Settings
from app.template_history import TemplateHistory
from app.templates import TemplateStore, TemplateView
from app.windows import WindowStore, WindowView

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ScoreDict = dict[str, Any]
# Compiled answer templates kept (one per set of methods, metrics, failures and model version).
MAX_TEMPLATES = 64
# Batches up to this size are scored one event at a time through the one-event path (the same
# answers: a batch is scored as its events one call at a time). Measured after the seventh
# session's merges (median of 300 calls each, 50 services past warm-up): one by one against the
# array path, 2 events 383 / 764 us, 4 events 718 / 832 us, 5 events 882 / 858 us, 8 events
# 1,436 / 990 us: the batch path's fixed cost per call is repaid from five events on.
ONE_BY_ONE_UP_TO = 4


@dataclass(frozen=True, slots=True)
class _MethodTable:
    weights: FloatArray  # column vector, one row per method
    alarms: list[float]  # rarity at which each method alone flags an event
    labels: list[str]  # human names of the methods
    # Rows of the methods whose rarities the online recalibration adjusts (an array: numpy
    # converts a list index on every use).
    recalibrated: npt.NDArray[np.intp]
    recalibrated_names: list[str]  # their names and alarm rarities, in that order
    recalibrated_alarms: list[float]
    # The same as Python values, for the batch of one (app/one_event.py).
    weight_list: list[float]
    recalibrated_rows: list[int]
    recalibrated_tuple: tuple[str, ...]
    # Their alarm rarities and the surprise level of each, as ``alarm_arrays`` gives them.
    recalibrated_alarm_arrays: tuple[FloatArray, npt.NDArray[np.int64]]
    log_rate: float  # numpy's log of the target false-alarm rate, for ``scores_of_one``


# What ``render_results`` takes after the template, in its order.
_RenderArguments = tuple[
    FloatArray,
    npt.NDArray[np.bool_],
    FloatArray,
    npt.NDArray[np.bool_],
    Sequence[npt.NDArray[np.generic]],
    Sequence[str],
    Sequence[str],
    npt.NDArray[np.int64],
    npt.NDArray[np.bool_],
    FloatArray,
]


def _columns_batch(columns: EventColumns, received_at: float | None) -> EventBatch:
    now = time.time() if received_at is None else received_at
    return EventBatch(
        services=columns.services,
        levels=columns.levels,
        level_scores=columns.level_scores,
        latency_ms=columns.latency_ms,
        timestamps=np.where(np.isnan(columns.timestamps), now, columns.timestamps),
    )


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
            LEVEL_SCORES[settings.template_surge_min_level],
        )
        self.sequences = SequenceStore(
            settings.sequence_top_k, settings.sequence_max_contexts, settings.max_services
        )
        self.template_history = TemplateHistory(settings.max_services)
        self.forecasts = ForecastStore(
            settings.forecast_slots,
            settings.forecast_halflife_minutes * 60.0,
            settings.forecast_season_halflife_days,
            settings.forecast_bucket_seconds,
            settings.baseline_warmup_events,
            max_services=settings.max_services,
        )
        self.patterns = PatternStore(settings.max_services)
        self.records = RecordStore(settings.max_services)
        self.online_detectors: list[Detector] = [
            self.sliding_window,
            TemplateDetector(
                settings.template_max,
                settings.template_similarity,
                settings.template_surge_messages,
                settings.template_surge_min_level.value,
            ),
            SequenceDetector(settings.sequence_top_k, settings.sequence_max_contexts),
            ForecastDetector(
                settings.forecast_slots,
                settings.forecast_halflife_minutes,
                settings.forecast_season_halflife_days,
                settings.forecast_bucket_seconds,
            ),
            LikelihoodDetector(),
            PatternDetector(),
            RecordDetector(),
        ]
        self.recalibration = OnlineRecalibration(settings.max_services)
        self.repeats = AlarmRepeats(
            settings.alarm_repeat_events, settings.max_services, settings.alarm_run_margin
        )
        self.recurrences = AlarmRecurrences(
            settings.alarm_recurrence_days, settings.max_services, settings.alarm_run_margin
        )
        self.weights = settings.method_weights()
        self._method_names = {cls.name: cls.method for cls in DETECTOR_TYPES.values()}
        self._not_recalibrated = {c.name for c in DETECTOR_TYPES.values() if not c.recalibrated}
        self._method_tables: dict[tuple[str, ...], _MethodTable] = {}
        self._templates: dict[tuple[object, ...], ResultTemplate] = {}
        self._model = model
        self.baselines.seed(model.baselines)
        self.templates.seed(model.templates, model.template_seeds)
        # Single-event requests arriving together are scored in one call (see app/batching.py).
        self.coalescer = ScoreCoalescer(self.score_json)
        self.detector_failures: Counter[str] = Counter()  # exported by /metrics
        # The batch of one's feature row, rewritten by each ``observe`` of one event (its
        # context, and the detectors reading it, are done with before the next).
        self._one_features = np.empty((1, 3))
        # And its columns (``EventBatch.of_one``), rewritten by each ``score_one`` likewise.
        self._one_columns = OneEventColumns()

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
        if model.lstm_sequence is not None:
            batch_detectors.append(model.lstm_sequence)
        return batch_detectors + self.online_detectors

    def score(
        self, events: Sequence[LogEvent], received_at: float | None = None
    ) -> list[ScoreDict]:
        """Score events in order; the result is the same as scoring them one call at a time.
        Each result is what POST /score answers, read back from its JSON (``score_json``)."""
        if not events:
            return []
        if len(events) <= ONE_BY_ONE_UP_TO:
            now = time.time() if received_at is None else received_at
            return [self.score_one(event, now) for event in events]
        results: list[ScoreDict] = orjson.loads(
            b"[" + b",".join(self.score_json(events, received_at)) + b"]"
        )
        return results

    def score_json(
        self, events: Sequence[LogEvent], received_at: float | None = None
    ) -> list[bytes]:
        """``score``, each event's result as the JSON object the HTTP API answers with."""
        if not events:
            return []
        if len(events) <= ONE_BY_ONE_UP_TO:
            # orjson writes the dict's floats as it writes the arrays' (the same shortest text),
            # so these are the bytes ``_render`` writes, at a fraction of its cost.
            now = time.time() if received_at is None else received_at
            return [orjson.dumps(self.score_one(event, now)) for event in events]
        return self._score(
            EventBatch.from_events(events, received_at), [event.message for event in events]
        )

    def score_columns(self, columns: EventColumns, received_at: float | None = None) -> list[bytes]:
        """``score_json`` on events validated column-wise (app/schemas/columns.py)."""
        if not len(columns):
            return []
        return self._score(_columns_batch(columns, received_at), columns.messages)

    def score_columns_joined(
        self,
        columns: EventColumns,
        before: bytes = b"[",
        after: bytes = b"]",
        received_at: float | None = None,
    ) -> bytes:
        """``score_columns``'s answers as one text: ``before``, the answers separated by commas,
        then ``after`` (a JSON array by default). A large batch's answers are written straight
        into that text (app/rendering.py, ``render_joined``), without an object per answer."""
        return bytes(self.score_columns_view(columns, before, after, received_at))

    def score_columns_view(
        self,
        columns: EventColumns,
        before: bytes = b"[",
        after: bytes = b"]",
        received_at: float | None = None,
    ) -> memoryview:
        """``score_columns_joined``'s text as a view of the buffer it was written into, not
        copied (``render_joined_view``): for a server to send as it is."""
        if len(columns) < 2:
            answers = self.score_columns(columns, received_at)
            return memoryview(before + b",".join(answers) + after)
        batch = _columns_batch(columns, received_at)
        model = self._model
        context = self.observe((), batch, columns.messages)
        outputs, failures = self._run_detectors(model, context)
        template, arguments = self._rendering(
            model, batch, context.baseline, context.window, outputs, failures, context.templates
        )
        return render_joined_view(template, *arguments, before, after)

    def score_one(self, event: LogEvent, received_at: float | None = None) -> ScoreDict:
        """``score`` of one event: its answer built directly as the dict that reading back its
        JSON gives (the batch of one of every /score and ``AnomalyDetector.predict``). The
        batch's columns are the engine's own, rewritten by the next call: nothing that scoring
        calls keeps one, and the answer holds Python values only."""
        batch = EventBatch.of_one(event, received_at, self._one_columns)
        return self._score_one(batch, (event.message,))

    def _score_one(self, batch: EventBatch, messages: Sequence[str]) -> ScoreDict:
        model = self._model
        context = self.observe((), batch, messages)
        outputs, failures = self._run_detectors_one(model, context)
        return self._answer_of_one(model, context, outputs, failures)

    def _run_detectors(
        self, model: Model, context: ScoringContext
    ) -> tuple[dict[str, MethodOutput], dict[str, str]]:
        outputs: dict[str, MethodOutput] = {}
        failures: dict[str, str] = {}
        for detector in self._detectors(model):
            try:
                outputs[detector.name] = detector.rarity(context)
            except Exception as exc:
                self._failed(detector, exc, failures)
        return outputs, failures

    def _run_detectors_one(
        self, model: Model, context: ScoringContext
    ) -> tuple[dict[str, OneOutput], dict[str, str]]:
        """``_run_detectors`` of a batch of one, each method's output as Python floats."""
        outputs: dict[str, OneOutput] = {}
        failures: dict[str, str] = {}
        for detector in self._detectors(model):
            try:
                outputs[detector.name] = detector.rarity_one(context)
            except Exception as exc:
                self._failed(detector, exc, failures)
        return outputs, failures

    def _failed(self, detector: Detector, exc: Exception, failures: dict[str, str]) -> None:
        # One broken method must not fail the request: it is reported as degraded.
        log.exception("detector %s failed; scoring without it", detector.name)
        failures[detector.name] = f"{type(exc).__name__}: {exc}"
        self.detector_failures[detector.name] += 1

    def _score(self, batch: EventBatch, messages: Sequence[str]) -> list[bytes]:
        if len(batch) == 1:
            # orjson writes the dict's floats as it writes the arrays' (the same shortest text),
            # so these are the bytes ``_render`` writes, at a fraction of its cost for one event.
            return [orjson.dumps(self._score_one(batch, messages))]
        model = self._model
        context = self.observe((), batch, messages)
        outputs, failures = self._run_detectors(model, context)
        return self._render(
            model,
            context.batch,
            context.baseline,
            context.window,
            outputs,
            failures,
            context.templates,
        )

    def observe(
        self,
        events: Sequence[LogEvent],
        batch: EventBatch,
        messages: Sequence[str] | None = None,
    ) -> ScoringContext:
        """Read every per-service store for each event, then learn the event, in batch order:
        everything the detectors see. ``score`` is this, the detectors and the rendering.
        ``messages`` stands for the events' messages when the batch came as columns."""
        if messages is None:
            messages = [event.message for event in events]
        if len(batch.services) == 1:
            # The batch of one of every /score and predict: each store's one-event path (the
            # same state and views as ``observe`` of a batch of one, at a fraction of the cost),
            # the event's values read once as Python values.
            service = batch.services[0]
            (level_score,), (log_latency,) = batch.level_scores.tolist(), batch.log_latency.tolist()
            baseline = self.baselines.observe_one(batch)
            window = self.windows.observe_one(batch)
            templates = self.templates.observe_one(service, messages[0], level_score)
            forecasts = self.forecasts.observe_one(batch, batch.is_error.item())
            sequences = self.sequences.observe_one(service, templates.template_id.item())
            patterns = self.patterns.observe_one(service, log_latency)
            records = self.records.observe_one(batch)
            features = features_of_one(
                baseline.latency_z.item(),
                forecasts.latency_residual_z.item(),
                level_score,
                self._one_features,
            )
        else:
            baseline = self.baselines.observe(batch)
            window = self.windows.observe(batch)
            templates = self.templates.observe(
                batch.services, messages, batch.level_scores.tolist()
            )
            forecasts = self.forecasts.observe(batch)
            sequences = self.sequences.observe(batch.services, templates.template_id)
            patterns = self.patterns.observe(batch)
            records = self.records.observe(batch)
            features = feature_matrix(
                expected_latency_z(baseline.latency_z, forecasts.latency_residual_z),
                batch.level_scores,
            )
        lstm = self._model.lstm_sequence
        # Kept only while the model has an LSTM: without one the history costs nothing.
        history = (
            self.template_history.observe(batch.services, templates.template_id, lstm.window)
            if lstm is not None
            else None
        )
        # tuple.__new__ in place of NamedTuple's Python-level ``__new__``, whose frame with ten
        # arguments cost as much as the tuple (every field is given here, in field order).
        return tuple.__new__(
            ScoringContext,
            (
                batch,
                features,
                baseline,
                window,
                templates,
                sequences,
                forecasts,
                history,
                patterns,
                records,
            ),
        )

    def _method_table(self, names: tuple[str, ...]) -> _MethodTable:
        """Per-method constants of a set of methods in one order, computed once per set (the set
        changes only when a method fails or the model gains or loses one)."""
        table = self._method_tables.get(names)
        if table is None:
            q = self.settings.target_false_alarm_rate
            threshold = self.settings.anomaly_threshold
            weights = [self.weights.get(name, 1.0) for name in names]
            recalibrated = [m for m, name in enumerate(names) if name not in self._not_recalibrated]
            recalibrated_alarms = [alarm_rarity(q, threshold, weights[m]) for m in recalibrated]
            table = _MethodTable(
                np.array(weights, dtype=np.float64)[:, None],
                [alarm_rarity(q, threshold, weight) for weight in weights],
                [self._method_names[name] for name in names],
                np.array(recalibrated, dtype=np.intp),
                [names[m] for m in recalibrated],
                recalibrated_alarms,
                [float(w) for w in np.array(weights, dtype=np.float64).tolist()],
                recalibrated,
                tuple(names[m] for m in recalibrated),
                alarm_arrays(tuple(recalibrated_alarms)),
                float(log_false_alarm_rate(q)),
            )
            self._method_tables[names] = table
        return table

    def _answer_of_one(
        self,
        model: Model,
        context: ScoringContext,
        outputs: dict[str, OneOutput],
        failures: dict[str, str],
    ) -> ScoreDict:
        """``_render`` of a batch of one, read back from its JSON: the same steps on Python
        floats (app/one_event.py), the answer built as the dict."""
        batch, baseline = context.batch, context.baseline
        threshold = self.settings.anomaly_threshold
        names = tuple(outputs)
        table = self._method_tables.get(names) or self._method_table(names)
        rarities = [output.rarity for output in outputs.values()]
        service = batch.services[0]
        if table.recalibrated_rows:
            recalibrated = [rarities[m] for m in table.recalibrated_rows]
            calibrated = recalibrate_one(
                self.recalibration,
                service,
                batch.timestamps.item(),
                table.recalibrated_tuple,
                recalibrated,
                table.recalibrated_alarm_arrays,
            )
            if calibrated is not recalibrated:  # else the usual event: none changed
                for m, rarity in zip(table.recalibrated_rows, calibrated, strict=True):
                    rarities[m] = rarity
        scores = scores_of_one(rarities, table.log_rate)
        combined = combine_one(scores, table.weight_list)
        flagged = combined >= threshold
        if flagged:
            # Still flagged, but ranked below the alarm it repeats (see app/repeats.py); an
            # event below the threshold leaves the repeats untouched.
            # Likewise an alarm at a time of day that alarmed on each of the days before
            # (app/recurrences.py).
            given = np.array([combined])
            (combined,) = self.recurrences.observe(
                batch.services,
                batch.timestamps,
                given,
                self.repeats.observe(batch.services, baseline.events_seen, given, threshold),
                threshold,
            ).tolist()
        explanation = explain_one(
            batch,
            baseline,
            context.window,
            names,
            scores,
            combined,
            flagged,
            self.settings,
            outputs,
            context.templates,
            self.templates.miner.text,
        )
        methods: dict[str, Any] = {}
        for name, label, (_, said), score in zip(
            names, table.labels, outputs.values(), scores, strict=True
        ):
            metrics: Mapping[str, float | None] = said
            # NaN and infinities are written as null. A finite sum has neither (either makes
            # the sum NaN or infinite): then the detector's own dict (made for this output) is
            # the answer's as it is; else a copy with nulls, never the detector's dict changed
            # (the outputs stay what the detectors said, for whoever reads them again).
            total = sum(said.values())
            if not total - total == 0.0:
                metrics = {
                    metric: value if value - value == 0.0 else None
                    for metric, value in said.items()
                }
            methods[name] = {
                # Every score is finite (scores_of_one): no null to write.
                "anomaly_score": score,
                "is_anomaly": score >= threshold,
                "method": label,
                "metrics": metrics,
            }
        for name, reason in failures.items():
            methods[name] = {
                "anomaly_score": 0.0,
                "is_anomaly": False,
                "method": self._method_names[name],
                "metrics": None,
                "degraded": reason,
            }
        seen, ready = baseline.events_seen.item(), baseline.ready.item()
        return {
            "is_anomaly": flagged,
            "anomaly_score": finite_or_none(combined),
            "methods": methods,
            "model_version": model.version,
            "explanation": explanation,
            "service": service,
            "service_events_seen": seen,
            "baseline_ready": ready,
            # Finite: events seen over themselves plus confidence_events (at least 1).
            "confidence": seen / (seen + self.settings.confidence_events),
        }

    def _render(
        self,
        model: Model,
        batch: EventBatch,
        baseline: BaselineView,
        window: WindowView,
        outputs: dict[str, MethodOutput],
        failures: dict[str, str],
        templates: TemplateView | None = None,
    ) -> list[bytes]:
        template, arguments = self._rendering(
            model, batch, baseline, window, outputs, failures, templates
        )
        return render_results(template, *arguments)

    def _rendering(
        self,
        model: Model,
        batch: EventBatch,
        baseline: BaselineView,
        window: WindowView,
        outputs: dict[str, MethodOutput],
        failures: dict[str, str],
        templates: TemplateView | None = None,
    ) -> tuple[ResultTemplate, _RenderArguments]:
        """The answers' template and the arguments ``render_results`` fills it with."""
        n = len(batch)
        threshold = self.settings.anomaly_threshold
        names = tuple(outputs)
        table = self._method_table(names)
        # Every method's numbers as rows of one matrix: each step below is then one numpy call for
        # all methods, whose per-call cost is what a batch of one pays.
        if names:
            # One concatenation of the methods' rows (each of n values): np.array on a list of
            # arrays costs twice as much for the batch of one.
            rarities = np.concatenate(
                [outputs[name].rarity for name in names], dtype=np.float64
            ).reshape(len(names), n)
            rows = table.recalibrated
            if rows.size:
                # Methods whose rarities are already frequencies of the service's own history
                # (recalibrated = False) keep them: learning them again would silence them.
                rarities[rows] = self.recalibration.observe_matrix(
                    batch.services,
                    batch.timestamps,
                    table.recalibrated_names,
                    rarities.take(rows, axis=0),  # a copy, as rarities[rows]: cheaper call
                    table.recalibrated_alarms,
                )
            score_matrix = rarity_to_score(rarities, self.settings.target_false_alarm_rate)
        else:
            score_matrix = np.zeros((0, n))
        combined, flagged = combine_matrix(score_matrix, table.weights, threshold)
        scores = dict(zip(names, score_matrix, strict=True))  # rows as views, made in C
        # Still flagged, but ranked below the alarm they repeat (see app/repeats.py).
        ranked = self.repeats.observe(batch.services, baseline.events_seen, combined, threshold)
        # And an alarm at a time of day that alarmed on each of the days before (a daily job).
        combined = self.recurrences.observe(
            batch.services, batch.timestamps, combined, ranked, threshold
        )
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
            score_matrix,
        )
        metrics = [outputs[name].metrics for name in names]
        key = (names, tuple(map(tuple, metrics)), tuple(failures.items()), model.version)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()  # the version or a failure's text changed many times
            template = result_template(
                [
                    MethodLayout(name, label, tuple(m))
                    for name, label, m in zip(names, table.labels, metrics, strict=True)
                ],
                [
                    FailedMethod(name, self._method_names[name], reason)
                    for name, reason in failures.items()
                ],
                model.version,
            )
            self._templates[key] = template
        columns = [column for m in metrics for column in m.values()]
        seen = baseline.events_seen
        return template, (
            combined,
            flagged,
            score_matrix,
            score_matrix >= threshold,
            columns,
            explanations,
            batch.services,
            seen,
            baseline.ready,
            seen / (seen + self.settings.confidence_events),
        )

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
            reason = cls.unavailable_reason
            if reason is None and instance is None:
                reason = cls.absent_reason()
            infos.append(
                DetectorInfo(
                    name=name,
                    method=cls.method,
                    kind=cls.kind,
                    available=cls.available() and instance is not None,
                    reason=reason,
                    weight=self.weights.get(name, 0.0),
                    parameters=instance.get_params() if instance is not None else {},
                    requires=list(cls.requires),
                )
            )
        return infos
