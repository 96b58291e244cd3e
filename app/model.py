"""A trained model: the fitted batch detectors plus the per-service baselines they were fitted on.

``fit_model`` is a plain function of arrays so it can run in a worker process; it returns arrays
and a JSON-able description, never live objects, and that is also exactly what goes on disk.
"""

from __future__ import annotations

import platform
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.baselines import MIN_LOG_SCALE, SeedBaseline
from app.detectors.autoencoder import AutoencoderDetector
from app.detectors.isolation_forest import IsolationForestDetector
from app.detectors.lstm_sequence import LstmSequenceDetector, fit_on_events
from app.features import FEATURE_NAMES, feature_matrix
from app.templates import NO_TEMPLATE, SeedTemplates, TemplateMiner, without_service_name
from app.training_data import TrainingData as TrainingData

FloatArray = npt.NDArray[np.float64]
ArrayMap = dict[str, npt.NDArray[Any]]

FORMAT = "insighthub-npz-1"
BOOTSTRAP_EVENTS = 20_000
# Below this share of training events without a latency, the autoencoder is shown that many
# (see with_missing_latency_examples).
MIN_MISSING_LATENCY_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class FitResult:
    arrays: ArrayMap
    description: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Model:
    """What the engine scores with. Immutable: a new training makes a new Model."""

    version: str
    isolation_forest: IsolationForestDetector
    baselines: list[SeedBaseline]
    manifest: dict[str, Any]
    autoencoder: AutoencoderDetector | None = None  # None in versions stored before it existed
    templates: ArrayMap | None = None  # TemplateMiner arrays (prefix stripped)
    template_seeds: list[SeedTemplates] = field(default_factory=list)
    lstm_sequence: LstmSequenceDetector | None = None  # only with the [deep] extra at training


def library_versions() -> dict[str, str]:
    import sklearn

    from app import __version__

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "insighthub": __version__,
    }


def service_baselines(data: TrainingData, warmup: int) -> pd.DataFrame:
    """Median and MAD-scale of log latency, and event counts, per training service."""
    frame = pd.DataFrame({"service": data.service_codes, "log_latency": np.log1p(data.latency_ms)})
    grouped = frame.groupby("service")["log_latency"]
    location = grouped.median()
    deviation = (frame["log_latency"] - frame["service"].map(location)).abs()
    scale = deviation.groupby(frame["service"]).median() * 1.4826
    table = pd.DataFrame(
        {
            "location": location,
            "scale": scale.clip(lower=MIN_LOG_SCALE),
            "latencies": grouped.count(),
            "events": frame.groupby("service").size(),
        }
    )
    # A service with too few latencies has no baseline yet, exactly as when scoring live.
    table.loc[table["latencies"] < warmup, ["location", "scale"]] = np.nan
    return table


def fit_model(data: TrainingData, parameters: dict[str, Any], warmup: int) -> FitResult:
    """Fit every batch detector on ``data``. Runs in a worker process; pure function of inputs."""
    if len(data) < 2:
        raise ValueError("training needs at least two events")
    table = service_baselines(data, warmup)
    location = table["location"].reindex(range(len(data.service_names))).to_numpy()
    scale = table["scale"].reindex(range(len(data.service_names))).to_numpy()
    log_latency = np.log1p(data.latency_ms)
    latency_z = np.clip(
        (log_latency - location[data.service_codes]) / scale[data.service_codes], -50.0, 50.0
    )
    features = feature_matrix(latency_z, data.level_scores)
    detector = IsolationForestDetector(**parameters).fit(features)
    arrays = detector.to_arrays()
    has_baseline = table["location"].notna().to_numpy()
    kept = has_baseline if data.keep_baselines else np.zeros_like(has_baseline)
    names = np.asarray(data.service_names, dtype=str)[table.index.to_numpy()]
    arrays["baseline_services"] = names[kept].astype(np.str_)
    arrays["baseline_location"] = table["location"].to_numpy()[kept]
    arrays["baseline_scale"] = table["scale"].to_numpy()[kept]
    arrays["baseline_events"] = table["events"].to_numpy().astype(np.int64)[kept]
    seed = int(parameters.get("random_state", 42))
    autoencoder = AutoencoderDetector(random_state=seed)
    autoencoder.fit(with_missing_latency_examples(features, seed))
    arrays.update({f"autoencoder_{k}": v for k, v in autoencoder.to_arrays().items()})
    lstm_note: dict[str, Any] = {}
    if data.messages is not None and data.keep_baselines:
        template_arrays, template_ids = _mine_templates(data)
        arrays.update(template_arrays)
        lstm, why_not = fit_on_events(
            data.service_codes,
            template_ids,
            template_arrays["templates_ids"],
            int(parameters.get("random_state", 42)),
        )
        if lstm is not None:
            arrays.update({f"lstm_{k}": v for k, v in lstm.to_arrays().items()})
            lstm_note = {"lstm_sequence_parameters": lstm.get_params()}
        else:
            lstm_note = {"lstm_sequence_skipped": why_not}
    description = {
        "format": FORMAT,
        "source": data.source,
        "rows": len(data),
        "services": int(kept.sum()),
        "parameters": detector.get_params(),
        "autoencoder_parameters": autoencoder.get_params(),
        "feature_names": list(FEATURE_NAMES),
        "library_versions": library_versions(),
        **lstm_note,
    }
    return FitResult(arrays, description)


def _fewest_copies_reaching_share(rows: int, missing: int, share: float) -> int:
    """The least k with (missing + k) >= share * (rows + k)."""
    # The closed form, ceil((share * rows - missing) / (1 - share)), can land one off when the
    # quotient is an integer up to rounding; settle it with the comparison itself.
    copies = max(int(np.ceil((share * rows - missing) / (1.0 - share))), 0)
    while copies > 0 and missing + copies - 1 >= share * (rows + copies - 1):
        copies -= 1
    while missing + copies < share * (rows + copies):
        copies += 1
    return copies


def with_missing_latency_examples(features: FloatArray, random_state: int) -> FloatArray:
    """``features`` plus, when fewer than ``MIN_MISSING_LATENCY_SHARE`` of its rows lack a
    latency, copies of random rows with the latency removed (z 0, ``latency_missing`` 1, level
    kept) until that share do.

    Live events may always lack a latency (it is optional, and a service's baseline warms up).
    Trained on data where every event has one, the autoencoder standardises a constant
    ``latency_missing`` column with a near-zero spread, so a missing latency reconstructs a
    thousand spreads off and every such event is an alarm. An event without latency carries only
    its level, so a typical row minus its latency is what a normal one looks like. The forest
    is not given these rows: a feature constant in training is never split on, so it already
    judges a missing latency as typical, and a small cluster of copies would be isolated quickly
    and read as rare."""
    missing_column = FEATURE_NAMES.index("latency_missing")
    have_latency = np.flatnonzero(features[:, missing_column] == 0.0)
    rows, missing = features.shape[0], features.shape[0] - have_latency.size
    if missing >= MIN_MISSING_LATENCY_SHARE * rows:
        return features
    added = _fewest_copies_reaching_share(rows, missing, MIN_MISSING_LATENCY_SHARE)
    rng = np.random.default_rng(random_state)
    copies = features[rng.choice(have_latency, min(added, have_latency.size), replace=False)]
    copies[:, FEATURE_NAMES.index("latency_z")] = 0.0
    copies[:, missing_column] = 1.0
    return np.concatenate([features, copies])


class TrainingTimeout(Exception):
    """A fit ran past ``train_timeout_seconds``."""


def fit_model_within(
    seconds: float,
    fit: Callable[[TrainingData, dict[str, Any], int], FitResult],
    data: TrainingData,
    parameters: dict[str, Any],
    warmup: int,
) -> FitResult:
    """``fit`` (``fit_model``; tests pass failing stand-ins), stopped with TrainingTimeout after
    ``seconds``. Runs in a worker process's main thread, where SIGALRM is delivered: the handler
    raises between bytecodes, so it lands within one tree (scikit-learn builds trees in a Python
    loop) and the worker lives on for the next job, instead of the whole pool being killed with
    every queued job in it."""
    if not hasattr(signal, "setitimer"):  # not on Windows: no timeout there
        return fit(data, parameters, warmup)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise TrainingTimeout(
            f"training stopped after the {seconds:g} s limit (train_timeout_seconds)"
        )

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fit(data, parameters, warmup)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _mine_templates(
    data: TrainingData, max_templates: int = 5000
) -> tuple[ArrayMap, npt.NDArray[np.int64]]:
    """Templates of the training messages and each service's count of each, as arrays, and
    each event's template id (``NO_TEMPLATE`` without a message)."""
    miner = TemplateMiner(max_templates)
    messages = data.messages or []
    service_of = data.service_names
    # Masked as the live store masks them (app.templates.without_service_name).
    ids = np.fromiter(
        (
            miner.add(without_service_name(service_of[code], m)) if m else NO_TEMPLATE
            for m, code in zip(messages, data.service_codes.tolist(), strict=False)
        ),
        np.int64,
        len(messages),
    )
    arrays = miner.to_arrays("templates_")
    kept = (ids != NO_TEMPLATE) & np.isin(ids, arrays["templates_ids"])
    pairs, counts = np.unique(
        np.column_stack((data.service_codes[kept], ids[kept])), axis=0, return_counts=True
    )
    names = np.asarray(data.service_names, dtype=np.str_)
    arrays["template_seed_services"] = names[pairs[:, 0]] if pairs.size else names[:0]
    arrays["template_seed_ids"] = pairs[:, 1].astype(np.int64) if pairs.size else ids[:0]
    arrays["template_seed_counts"] = counts.astype(np.int64)
    return arrays, ids


def _templates_from_arrays(arrays: ArrayMap) -> tuple[ArrayMap | None, list[SeedTemplates]]:
    if "templates_ids" not in arrays:
        return None, []
    miner_arrays = {
        k.removeprefix("templates_"): v for k, v in arrays.items() if k.startswith("templates_")
    }
    texts = dict(zip(miner_arrays["ids"].tolist(), miner_arrays["text"].tolist(), strict=True))
    services = arrays["template_seed_services"].tolist()
    seed_ids = arrays["template_seed_ids"].tolist()
    seed_counts = arrays["template_seed_counts"].tolist()
    if not len(services) == len(seed_ids) == len(seed_counts):
        raise ValueError("template seed arrays disagree in length")
    by_service: dict[str, dict[str, int]] = {}
    for service, template_id, count in zip(services, seed_ids, seed_counts, strict=True):
        if template_id not in texts or count < 0:
            raise ValueError("template seed names an unknown template")
        by_service.setdefault(str(service), {})[str(texts[template_id])] = int(count)
    TemplateMiner.from_arrays(miner_arrays, "")  # validates ids and shapes now, not at scoring
    return miner_arrays, [SeedTemplates(s, c) for s, c in by_service.items()]


def bootstrap_training_data(seed: int = 42) -> TrainingData:
    """Plausible normal traffic of a few synthetic services, for the model a fresh install starts
    with. Features are relative to each service's own baseline, so the forest learns the *shape*
    of normal (how far latency strays from a service's median, how often errors occur), not any
    particular service's latency; live baselines take over as real traffic arrives."""
    rng = np.random.default_rng(seed)
    n_services = 8
    medians = np.geomspace(2.0, 2000.0, n_services)
    spreads = rng.uniform(0.2, 0.6, n_services)
    codes = rng.integers(0, n_services, BOOTSTRAP_EVENTS)
    # Student-t (5 dof) deviations: real latency tails are heavier than a normal's.
    latency = medians[codes] * np.exp(spreads[codes] * rng.standard_t(5, BOOTSTRAP_EVENTS))
    latency[rng.random(BOOTSTRAP_EVENTS) < 0.05] = np.nan
    level_scores = rng.choice([0.0, 1.0, 2.0], BOOTSTRAP_EVENTS, p=[0.96, 0.03, 0.01])
    return TrainingData(
        latency_ms=latency,
        level_scores=level_scores,
        service_codes=codes.astype(np.int64),
        service_names=[f"bootstrap-{i}" for i in range(n_services)],
        source="bootstrap",
        keep_baselines=False,
    )


def model_from_arrays(version: str, arrays: ArrayMap, manifest: dict[str, Any]) -> Model:
    """Rebuild a Model from stored arrays; raises ValueError on anything inconsistent."""
    if manifest.get("format") != FORMAT:
        raise ValueError(f"unknown model format {manifest.get('format')!r}")
    if list(manifest.get("feature_names", [])) != list(FEATURE_NAMES):
        raise ValueError("model was trained on different features")
    detector = IsolationForestDetector.from_arrays(dict(manifest["parameters"]), arrays)
    services = arrays["baseline_services"]
    columns = [arrays[k] for k in ("baseline_location", "baseline_scale", "baseline_events")]
    if any(column.shape != services.shape for column in columns):
        raise ValueError("baseline arrays disagree in length")
    baselines = [
        SeedBaseline(str(service), float(loc), float(scale), int(events))
        for service, loc, scale, events in zip(services.tolist(), *columns, strict=True)
    ]
    autoencoder = None
    if "autoencoder_parameters" in manifest:
        autoencoder = AutoencoderDetector.from_arrays(
            dict(manifest["autoencoder_parameters"]),
            {
                k.removeprefix("autoencoder_"): v
                for k, v in arrays.items()
                if k.startswith("autoencoder_")
            },
        )
    templates, template_seeds = _templates_from_arrays(arrays)
    lstm = None
    if "lstm_sequence_parameters" in manifest:
        lstm = LstmSequenceDetector.from_arrays(
            dict(manifest["lstm_sequence_parameters"]),
            {k.removeprefix("lstm_"): v for k, v in arrays.items() if k.startswith("lstm_")},
        )
    return Model(
        version, detector, baselines, manifest, autoencoder, templates, template_seeds, lstm
    )


__all__ = [
    "FitResult",
    "Model",
    "TrainingData",
    "bootstrap_training_data",
    "fit_model",
    "model_from_arrays",
]
