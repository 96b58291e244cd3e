"""(a) one event through AnomalyDetector.predict against the seed's per-event scikit-learn calls,
and (f) what each detector and each stage of the engine costs per event."""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from app.detectors.forest import COMPILED_AVAILABLE
from app.engine import ScoringEngine
from app.events import EventBatch, parse_events
from app.features import feature_matrix
from app.local import AnomalyDetector
from app.model import bootstrap_training_data, fit_model
from app.model_store import ModelStore
from app.one_event import features_of_one
from app.schemas.events import Level, LogEvent
from app.trainer import Trainer
from app.training_data import TrainingData
from bench.common import Row, event_stream, interleaved, per_call_seconds, percentile


def _seed_forest(detector: AnomalyDetector) -> tuple[object, np.ndarray]:
    """The seed's model: scikit-learn's IsolationForest with the service's parameters, fitted on
    the bootstrap training features (the same rows the served model was fitted on)."""
    from sklearn.ensemble import IsolationForest

    data = bootstrap_training_data()
    log_latency = np.log1p(data.latency_ms)
    # The served model's features for these rows are relative to each service's median; any
    # realistic 3-column matrix serves the timing, which does not depend on the values.
    latency_z = np.nan_to_num((log_latency - np.nanmedian(log_latency)) / np.nanstd(log_latency))
    features = feature_matrix(np.where(np.isnan(log_latency), np.nan, latency_z), data.level_scores)
    params = detector.engine.model.isolation_forest.get_params()
    forest = IsolationForest(
        n_estimators=params["n_estimators"],
        max_samples=params["max_samples"],
        contamination=params["contamination"],
        random_state=params["random_state"],
    ).fit(features)
    return forest, features


def bench_predict(rounds: int = 7) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        detector = AnomalyDetector(artifacts_dir=Path(tmp))
        forest, features = _seed_forest(detector)
        events = event_stream(20_000, services=50, seed=1)
        for event in events[:2000]:  # services past their warm-up, windows filled
            detector.predict(event)
        position = [2000]

        def ours() -> None:
            detector.predict(events[position[0] % len(events)])
            position[0] += 1

        rows = features[:1000]
        seed_position = [0]

        def seed() -> None:
            row = rows[seed_position[0] % len(rows)][None, :]
            seed_position[0] += 1
            forest.predict(row)  # type: ignore[attr-defined]
            forest.score_samples(row)  # type: ignore[attr-defined]

        ours_mean, seed_mean, ours_singles, seed_singles = interleaved(
            ours, seed, calls=(2000, 60), rounds=rounds
        )
    return [
        Row(
            "a",
            "AnomalyDetector.predict, one event (mean)",
            ours_mean * 1e6,
            "us",
            "seed: sklearn predict + score_samples, one event",
            seed_mean * 1e6,
            target=">= 100x",
        ),
        Row(
            "a",
            "AnomalyDetector.predict, one event (p99)",
            percentile(ours_singles, 99) * 1e6,
            "us",
            "seed p99",
            percentile(seed_singles, 99) * 1e6,
        ),
    ]


def bench_detectors(rounds: int = 5) -> list[Row]:
    """Per-event cost of each stage and detector, for a batch of one and a batch of 1,000."""
    rows: list[Row] = []
    seed_cost = _seed_cost()
    with tempfile.TemporaryDirectory() as tmp:
        engine = AnomalyDetector(artifacts_dir=Path(tmp)).engine
        stream = parse_events(event_stream(12_000, services=50, seed=2))
        engine.score(stream[:10_000])  # services past their warm-up, windows filled
        for size in (1, 1000):
            costs = _stage_costs(engine, stream[10_000 : 10_000 + size], rounds)
            whole = costs["whole engine.score"]
            for name, cost in costs.items():
                # Stages as a share of the whole call; the whole call against the seed's
                # scikit-learn call; the compiled forest against the numpy evaluator.
                row = Row("f", f"{name} (batch of {size})", cost, "us/event",
                          "whole engine.score", whole, better="neutral")  # fmt: skip
                if name == "whole engine.score":
                    row.baseline_name, row.baseline, row.better = (
                        "seed sklearn predict + score_samples per event",
                        seed_cost,
                        "lower",
                    )
                elif name == "  forest, compiled evaluator":
                    row.baseline_name, row.better = "numpy evaluator", "lower"
                    row.baseline = costs["  forest, numpy evaluator"]
                rows.append(row)
        # The service calls gc.freeze() once its model is loaded (app/factory.py), so full
        # collections skip the ~370k objects loaded by then; large batches allocate enough to
        # trigger many of them. The same call, measured as the service runs it:
        events = stream[10_000:11_000]
        gc.collect()
        gc.freeze()
        try:
            frozen = statistics.median(
                per_call_seconds(partial(engine.score, events), 10, 1)[0] for _ in range(rounds)
            )
        finally:
            gc.unfreeze()
        rows.append(
            Row(
                "f",
                "whole engine.score (batch of 1000), heap frozen as in the service",
                frozen / len(events) * 1e6,
                "us/event",
                "seed sklearn predict + score_samples per event",
                seed_cost,
            )
        )
    rows += bench_swap()
    if not COMPILED_AVAILABLE:
        rows.append(Row("f", "numba missing: compiled rows ran the numpy path", 0.0, ""))
    return rows


def _stage_costs(engine: ScoringEngine, events: list[LogEvent], rounds: int) -> dict[str, float]:
    """Microseconds per event of each stage, median of ``rounds``. Repeating a stage on the same
    batch keeps the stores in steady state (the same few services, the same window buckets)."""
    size = len(events)
    calls = 3000 if size == 1 else 10
    batch = EventBatch.from_events(events)
    # The engine's own observe step, so the detectors see exactly what they see when scoring.
    context = engine.observe(events, batch)
    baseline, features = context.baseline, context.features
    assert context.templates is not None
    assert context.forecasts is not None
    forest = engine.model.isolation_forest.forest_
    assert forest is not None
    stages: dict[str, Callable[[], object]] = {
        "EventBatch.from_events": partial(EventBatch.from_events, events),
    }
    if size == 1:
        # A batch of one reaches each store through its observe_one (engine.observe), with the
        # event's values read once as Python values: what the service runs for one event.
        (event,) = events
        service, level_score = event.service, batch.level_scores.item()
        stages |= {
            "baselines.observe_one": partial(engine.baselines.observe_one, batch),
            "windows.observe_one": partial(engine.windows.observe_one, batch),
            "templates.observe_one": partial(
                engine.templates.observe_one, service, event.message, level_score
            ),
            "sequences.observe_one": partial(
                engine.sequences.observe_one, service, context.templates.template_id.item()
            ),
            "forecasts.observe_one": partial(
                engine.forecasts.observe_one, batch, batch.is_error.item()
            ),
            "patterns.observe_one": partial(
                engine.patterns.observe_one, service, batch.log_latency.item()
            ),
            "records.observe_one": partial(engine.records.observe_one, batch),
        }
    else:
        stages |= {
            "baselines.observe": partial(engine.baselines.observe, batch),
            "windows.observe": partial(engine.windows.observe, batch),
            "templates.observe": partial(
                engine.templates.observe, batch.services, [event.message for event in events]
            ),
            "sequences.observe": partial(
                engine.sequences.observe, batch.services, context.templates.template_id.copy()
            ),
            "forecasts.observe": partial(engine.forecasts.observe, batch),
            "patterns.observe": partial(engine.patterns.observe, batch),
            "records.observe": partial(engine.records.observe, batch),
        }
    stages["feature_matrix"] = (
        partial(
            features_of_one,
            baseline.latency_z.item(),
            context.forecasts.latency_residual_z.item(),
            batch.level_scores.item(),
        )
        if size == 1
        else partial(feature_matrix, baseline.latency_z, batch.level_scores)
    )
    stages["all per-service stores (engine.observe)"] = partial(engine.observe, events, batch)
    # A batch of one takes its own path (ScoringEngine.score_one): each detector's rarity_one
    # (Python floats), the answer built as a dict on Python floats, written with orjson.dumps
    # by score_json.
    for active in engine._detectors(engine.model):
        stages[f"detector {active.name}"] = partial(
            active.rarity_one if size == 1 else active.rarity, context
        )
    stages["  forest, compiled evaluator"] = partial(forest.score_samples, features, "compiled")
    stages["  forest, numpy evaluator"] = partial(forest.score_samples, features, "numpy")
    outputs = {active.name: active.rarity(context) for active in engine._detectors(engine.model)}
    stages["rendering (recalibration, scores, explanation, JSON answers)"] = (
        partial(
            engine._answer_of_one,
            engine.model,
            context,
            engine._run_detectors_one(engine.model, context)[0],
            {},
        )
        if size == 1
        else partial(
            engine._render,
            engine.model,
            batch,
            baseline,
            context.window,
            outputs,
            {},
            context.templates,
        )
    )
    # What the service runs: answers as JSON bytes. engine.score (the Python API's path) reads
    # them back into dicts (a batch of one builds its dict directly).
    stages["engine.score_json (the service's path)"] = partial(engine.score_json, events)
    stages["whole engine.score"] = partial(engine.score, events)
    return {
        name: statistics.median(per_call_seconds(function, calls, 1)[0] for _ in range(rounds))
        / size
        * 1e6
        for name, function in stages.items()
    }


def _seed_cost() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        forest, features = _seed_forest(AnomalyDetector(artifacts_dir=Path(tmp)))
    row = features[:1]

    def seed() -> None:
        forest.predict(row)  # type: ignore[attr-defined]
        forest.score_samples(row)  # type: ignore[attr-defined]

    return statistics.median(per_call_seconds(seed, 50, 1)[0] for _ in range(5)) * 1e6


def logs_training_data(services: int, seed: int = 5) -> TrainingData:
    """Log events of ``services`` services (24 each: past the warm-up, so every service gets a
    baseline), a dozen message shapes shared between services: what a logs model is trained on."""
    rng = np.random.default_rng(seed)
    rows = services * 24
    names = [f"svc-{i % services:05d}" for i in range(rows)]
    messages = [f"op{i % 13} request {i} handled by worker {i % 7}" for i in range(rows)]
    levels = [Level.ERROR if i % 97 == 0 else Level.INFO for i in range(rows)]
    latency = rng.lognormal(3.0, 0.5, rows)
    return TrainingData.from_columns(names, levels, latency, "logs", messages=messages)


def bench_swap(rounds: int = 5) -> list[Row]:
    """What installing a new model costs the event loop: ``ScoringEngine.swap`` of a logs model
    (baselines and template counts seeded for every service it knows) into a fresh engine, against
    one ``engine.score`` call of one event, and the longest stall of the loop over a whole
    train -> store -> swap cycle in the service's own ``Trainer``."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        detector = AnomalyDetector(artifacts_dir=Path(tmp) / "serving")
        one = parse_events(event_stream(1, services=1, seed=3))
        detector.engine.score(parse_events(event_stream(2000, services=50, seed=2)))
        score_one = statistics.median(
            per_call_seconds(partial(detector.engine.score, one), 200, 1)[0] for _ in range(rounds)
        )
        for services in (100, 2000, 10_000):
            store = ModelStore(Path(tmp) / f"store-{services}")
            model = store.save(fit_model(logs_training_data(services), {"n_estimators": 25}, 20))
            costs = []
            for _ in range(rounds):
                # A fresh engine each time: the first swap seeds every service (later swaps of
                # the same services find them live and skip them).
                engine = AnomalyDetector(artifacts_dir=Path(tmp) / "serving").engine
                start = time.perf_counter()
                engine.swap(model)
                costs.append(time.perf_counter() - start)
            swap_ms = statistics.median(costs) * 1e3
            rows.append(
                Row(
                    "f",
                    f"model swap on the event loop, {services:,} services",
                    swap_ms,
                    "ms",
                    "engine.score of one event",
                    score_one * 1e3,
                )
            )
        stall = asyncio.run(_cycle_stall(Path(tmp) / "cycle", logs_training_data(2000)))
        rows.append(
            Row(
                "f",
                "longest event-loop stall, train -> store -> swap (2,000 services)",
                stall * 1e3,
                "ms",
                "engine.score of one event",
                score_one * 1e3,
            )
        )
    return rows


async def _cycle_stall(artifacts: Path, data: TrainingData) -> float:
    """The longest gap between wake-ups of a task that sleeps 1 ms, from submitting a fit to the
    new model serving: every on-loop step (the result read back from the worker, the store's save
    and activation in threads that share the GIL, the swap) shows up as a gap."""
    detector = AnomalyDetector(artifacts_dir=artifacts)
    trainer = Trainer(detector.settings, detector.store, detector.engine)
    old_version = detector.engine.model.version
    longest = 0.0
    try:
        # Start the worker and compile its kernels first: the stall of interest is the cycle's.
        await trainer._fit(0, data, {"n_estimators": 25})
        job = trainer.submit(data, {"n_estimators": 25}, activate=True)
        last = time.perf_counter()
        while detector.engine.model.version == old_version:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now
        status = trainer.get(job.job_id)
        if status is None or status.status.value != "succeeded":
            raise RuntimeError(f"the benchmark's training job did not succeed: {status}")
    finally:
        await trainer.close()
    return longest
