"""``python -m app.eval nab``: the engine on the Numenta Anomaly Benchmark.

Each NAB series is replayed as the latency of one service, in time order, through a fresh engine
(see ``replay``), and the engine's combined ``anomaly_score`` of each row is the detector output.
Results go to ``OUT/<detector>/<category>/<detector>_<name>.csv`` with NAB's columns
``timestamp,value,anomaly_score`` (one row per input row, same order; ``value`` is NAB's original
value) - the layout NAB's own ``results/`` folder uses, so its scorer can read them too.

NAB values are not latencies (CPU percent, request counts, tweet volumes, temperatures; some are
negative or in the millions), so each series is mapped by one fixed affine map onto a plausible
latency range: ``latency_ms = floor + span * (value - min) / (max - min)``, with ``min``/``max`` of
the whole series. That is the one piece of knowledge from the future the replay uses, and NAB's own
detector harness hands every detector the same two numbers (``inputMin``/``inputMax``). A flat
series maps to ``floor``. Because the engine judges ``log(1 + latency)``, the chosen ``floor``
changes how relative a change looks; it is reported with every result.

The scores come from ``nab_scoring`` (NAB's published rules). Three reference detectors are scored
in the same run to check the scorer: null (always 0; scores 0 by construction), perfect (1 at the
first scorable row of every window; scores 100 by construction), random (uniform, seeded; NAB
publishes 11.0 for its random detector) and a plain sliding-window z-score (``sliding_zscore``),
which shows how this corpus compares with the published "Windowed Gaussian" figure (39.6).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special

from app.eval.nab_scoring import (
    PROFILES,
    ProfileResult,
    SeriesLayout,
    layout_series,
    score_corpus,
    score_series,
    window_indices,
)
from app.eval.replay import Replayer
from app.eval.report import describe_run, table
from app.schemas.events import MAX_LATENCY_MS

FloatArray = npt.NDArray[np.float64]

DETECTOR = "insighthub"
DEFAULT_FLOOR_MS = 100.0
DEFAULT_SPAN_MS = 900.0
SLIDING_WINDOW_ROWS = 6400
SATURATED = 0.999
REFERENCES = ("null", "perfect", "random", "sliding_zscore")
STANDARD_A_FP = next(p.a_fp for p in PROFILES if p.name == "standard")


class NabDataError(ValueError):
    """The corpus or its labels cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class NabSeries:
    key: str  # "<category>/<name>.csv", the labels' key
    timestamps: list[str]
    values: FloatArray
    layout: SeriesLayout

    @property
    def category(self) -> str:
        return self.key.split("/")[0]

    @property
    def name(self) -> str:
        return Path(self.key).stem


def default_labels(data_dir: Path) -> Path:
    return data_dir.parent / "labels" / "combined_windows.json"


def load_corpus(
    data_dir: Path, labels_path: Path, only: list[str] | None = None
) -> list[NabSeries]:
    """Every ``<category>/<name>.csv`` under ``data_dir`` with its label windows.

    ``only`` keeps the series whose key contains one of the given strings (for quick runs).
    """
    if not data_dir.is_dir():
        raise NabDataError(f"{data_dir} is not a folder")
    try:
        labels = json.loads(labels_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NabDataError(f"cannot read labels {labels_path}: {exc}") from exc
    files = sorted(data_dir.glob("*/*.csv"))
    if not files:
        raise NabDataError(f"no <category>/<name>.csv files under {data_dir}")
    corpus = []
    for path in files:
        key = f"{path.parent.name}/{path.name}"
        if only and not any(part in key for part in only):
            continue
        if key not in labels:
            raise NabDataError(f"{labels_path} has no windows for {key}")
        frame = pd.read_csv(path, dtype={"timestamp": str})
        if list(frame.columns[:2]) != ["timestamp", "value"]:
            raise NabDataError(f"{path}: expected columns timestamp,value")
        values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
        if len(values) == 0 or not np.isfinite(values).all():
            raise NabDataError(f"{path}: empty, or a value is missing or not a number")
        timestamps = frame["timestamp"].tolist()
        if not pd.to_datetime(pd.Series(timestamps)).is_monotonic_increasing:
            raise NabDataError(f"{path}: timestamps are not in time order")
        try:
            windows = window_indices(timestamps, labels[key])
            layout = layout_series(key, len(values), windows)
        except ValueError as exc:
            raise NabDataError(f"{key}: {exc}") from exc
        corpus.append(NabSeries(key, timestamps, values, layout))
    if not corpus:
        raise NabDataError(f"no series under {data_dir} matched {only}")
    return corpus


def to_latency(values: FloatArray, floor_ms: float, span_ms: float) -> FloatArray:
    """The fixed affine map of one series onto ``[floor, floor + span]`` milliseconds."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.full(values.shape, floor_ms)
    latency = floor_ms + span_ms * (values - low) / (high - low)
    return np.clip(latency, 0.0, MAX_LATENCY_MS)


def service_name(series: NabSeries) -> str:
    return "nab-" + re.sub(r"[^A-Za-z0-9._-]", "_", series.name)[:120]


def series_events(series: NabSeries, floor_ms: float, span_ms: float) -> list[dict[str, Any]]:
    latency = to_latency(series.values, floor_ms, span_ms)
    times = pd.to_datetime(pd.Series(series.timestamps)).dt.tz_localize(UTC)
    service = service_name(series)
    return [
        {"service": service, "level": "INFO", "latency_ms": float(ms), "timestamp": t}
        for ms, t in zip(latency, times.dt.to_pydatetime(), strict=True)
    ]


def reference_scores(series: NabSeries, detector: str, seed: int) -> FloatArray:
    n = len(series.layout)
    if detector == "null":
        return np.zeros(n)
    if detector == "perfect":
        scores = np.zeros(n)
        layout = series.layout
        for window in np.unique(layout.window[layout.window >= 0]):
            rows = np.flatnonzero((layout.window == window) & layout.scorable)
            if rows.size:
                scores[rows[0]] = 1.0
        return scores
    if detector == "sliding_zscore":
        return sliding_zscore(series.values)
    if detector == "random":
        # One generator per series, seeded by its name, so a subset scores as in the full run.
        digest = sum(ord(c) * (i + 1) for i, c in enumerate(series.key))
        return np.random.default_rng([seed, digest]).random(n)
    raise ValueError(f"unknown reference detector {detector}")


def sliding_zscore(values: FloatArray, window: int = SLIDING_WINDOW_ROWS) -> FloatArray:
    """``erf(|z| / sqrt 2)`` of each value against the mean and spread of the ``window`` values
    before it (two-sided Gaussian tail, turned so that higher is more anomalous). Our own simple
    reference, in the spirit of NAB's "Windowed Gaussian" (39.6 on the full corpus), not its code.
    """
    past = pd.Series(values).shift(1).rolling(window, min_periods=2)
    mean, std = past.mean().to_numpy(), past.std(ddof=0).to_numpy()
    deviation = np.abs(values - mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, deviation / std, np.where(deviation > 0, np.inf, 0.0))
    scores = np.asarray(special.erf(z / math.sqrt(2.0)), dtype=np.float64)
    return np.nan_to_num(scores, nan=0.0)


def write_results(out: Path, detector: str, series: NabSeries, scores: FloatArray) -> Path:
    path = out / detector / series.category / f"{detector}_{series.name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"timestamp": series.timestamps, "value": series.values, "anomaly_score": scores}
    ).to_csv(path, index=False, float_format="%.10g")
    return path


def error_analysis(
    layout: SeriesLayout,
    combined: FloatArray,
    methods: dict[str, FloatArray],
    threshold: float,
    a_fp: float = STANDARD_A_FP,
) -> dict[str, Any]:
    """Where one series loses at ``threshold``: each false-positive row under the method that
    scored it highest (with the NAB cost it adds, ``a_fp * fp_unit``), and each missed window with
    the best combined score inside it and the method that came closest. A window where some
    method alone reached the threshold but the combined score did not was ranked as a repeat of
    an earlier, stronger alarm (``app/repeats.py``); the others were below the threshold.
    """
    names = list(methods)
    detected = (combined >= threshold) & layout.scorable
    false_positives: dict[str, dict[str, float]] = {}
    if names:
        matrix = np.vstack([methods[name] for name in names])
        for row in np.flatnonzero(detected & (layout.window < 0)).tolist():
            strongest = names[int(np.argmax(matrix[:, row]))]
            entry = false_positives.setdefault(strongest, {"rows": 0, "cost": 0.0})
            entry["rows"] += 1
            entry["cost"] -= a_fp * float(layout.fp_unit[row])
    missed = []
    for window in range(layout.n_windows):
        rows = np.flatnonzero((layout.window == window) & layout.scorable)
        if rows.size == 0 or detected[rows].any():
            continue
        best_method, best_method_score = "", 0.0
        for name in names:
            score = float(methods[name][rows].max())
            if score > best_method_score:
                best_method, best_method_score = name, score
        missed.append(
            {
                "window": window,
                "first_scorable_row": int(rows[0]),
                "best_score": float(combined[rows].max()),
                "best_method": best_method,
                "best_method_score": best_method_score,
                "reason": "ranked as a repeat"
                if best_method_score >= threshold
                else "below the threshold",
            }
        )
    return {"false_positives_by_method": false_positives, "missed_windows": missed}


def _corpus_false_positives(per_series: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for series in per_series:
        for name, entry in series["analysis"]["false_positives_by_method"].items():
            total = totals.setdefault(name, {"rows": 0, "cost": 0.0})
            total["rows"] += entry["rows"]
            total["cost"] += entry["cost"]
    return dict(sorted(totals.items(), key=lambda item: -item[1]["cost"]))


def _fixed_threshold(
    corpus: list[NabSeries],
    scores: list[FloatArray],
    threshold: float,
    baseline: dict[str, ProfileResult],
) -> dict[str, float]:
    """Normalised score per profile of binary decisions taken at one fixed threshold."""
    totals = {p.name: 0.0 for p in PROFILES}
    for series, series_scores in zip(corpus, scores, strict=True):
        outcome = score_series(series.layout, series_scores, threshold, PROFILES)
        for name, raw in outcome.raw.items():
            totals[name] += raw
    return {
        name: 100.0 * (totals[name] - result.null) / (result.perfect - result.null)
        for name, result in baseline.items()
    }


def _fmt_threshold(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.4f}"


def run(
    corpus: list[NabSeries],
    data_dir: Path,
    out: Path,
    labels_path: Path,
    replayer: Replayer,
    info: dict[str, Any],
    floor_ms: float = DEFAULT_FLOOR_MS,
    span_ms: float = DEFAULT_SPAN_MS,
    seed: int = 0,
) -> dict[str, Any]:
    engine_scores: list[FloatArray] = []
    engine_flags: list[FloatArray] = []
    engine_methods: list[dict[str, FloatArray]] = []
    for series in corpus:
        replay = replayer.replay(series_events(series, floor_ms, span_ms), keep_methods=True)
        engine_scores.append(replay.scores)
        engine_flags.append(replay.flagged.astype(np.float64))
        engine_methods.append(replay.methods)
        write_results(out, DETECTOR, series, replay.scores)

    layouts = [s.layout for s in corpus]
    detectors: dict[str, dict[str, ProfileResult]] = {
        DETECTOR: score_corpus(layouts, engine_scores, PROFILES)
    }
    for reference in REFERENCES:
        reference_outputs = [reference_scores(s, reference, seed) for s in corpus]
        detectors[reference] = score_corpus(layouts, reference_outputs, PROFILES)
    own = _fixed_threshold(corpus, engine_flags, 0.5, detectors[DETECTOR])

    standard = detectors[DETECTOR]["standard"].threshold
    per_series = []
    for series, scores, flags, methods in zip(
        corpus, engine_scores, engine_flags, engine_methods, strict=True
    ):
        outcome = score_series(series.layout, scores, standard, PROFILES)
        layout = series.layout
        # Scores pinned at the top of the scale cannot be told apart by any threshold.
        top = (scores >= SATURATED) & layout.scorable
        own_outcome = score_series(layout, flags, 0.5, PROFILES)
        per_series.append(
            {
                "series": series.key,
                "rows": len(series.layout),
                "windows": outcome.windows,
                "detected": outcome.detected_windows,
                "false_positives": outcome.false_positives,
                "raw_standard": outcome.raw["standard"],
                "own_decision_flags": int(flags.sum()),
                "own_decision_detected": own_outcome.detected_windows,
                "own_decision_false_positives": own_outcome.false_positives,
                "saturated_in_windows": int((top & (layout.window >= 0)).sum()),
                "saturated_outside": int((top & (layout.window < 0)).sum()),
                "analysis": error_analysis(layout, scores, methods, standard),
            }
        )
    summary = {
        "run": info,
        "data_dir": str(data_dir),
        "labels": str(labels_path),
        "series": len(corpus),
        "rows": int(sum(len(s.layout) for s in corpus)),
        "windows": int(sum(s.layout.n_windows for s in corpus)),
        "value_mapping": {
            "latency_ms": "floor + span * (value - series min) / (series max - series min)",
            "floor_ms": floor_ms,
            "span_ms": span_ms,
        },
        "settings": replayer.settings_summary(),
        "scores": {
            name: {p: asdict(r) for p, r in results.items()} for name, results in detectors.items()
        },
        "insighthub_own_decision": own,
        "per_series_at_standard_threshold": per_series,
        "false_positives_by_strongest_method": _corpus_false_positives(per_series),
        "cost": replayer.cost.as_dict(),
        "results_layout": f"{out}/<detector>/<category>/<detector>_<name>.csv",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(render(summary))
    return summary


def render(summary: dict[str, Any]) -> str:
    profiles = [p.name for p in PROFILES]
    rows = []
    for name, results in summary["scores"].items():
        rows.append(
            [name]
            + [f"{results[p]['normalised']:.1f}" for p in profiles]
            + [_fmt_threshold(results["standard"]["threshold"])]
        )
    own = summary["insighthub_own_decision"]
    rows.append(
        [f"{DETECTOR} (own is_anomaly, fixed)"] + [f"{own[p]:.1f}" for p in profiles] + ["0.5"]
    )
    mapping = summary["value_mapping"]
    lines = [
        f"NAB: {summary['series']} series, {summary['rows']} rows, {summary['windows']} windows "
        f"({summary['data_dir']})",
        f"values mapped to latency_ms = {mapping['floor_ms']:g} + {mapping['span_ms']:g} * "
        "(value - min) / (max - min) per series (NAB values are not latencies)",
        "",
        table(["detector", *profiles, "standard threshold"], rows),
        "",
        f"{DETECTOR} per series at the standard threshold (windows detected / windows, "
        "false-positive rows, raw standard score), the same under the engine's own is_anomaly "
        f"decision, and scorable rows scoring >= {SATURATED} inside / outside windows:",
        table(
            [
                "series",
                "detected",
                "FP rows",
                "raw",
                "own: detected",
                "own: FP rows",
                "top in",
                "top out",
            ],
            [
                [
                    s["series"],
                    f"{s['detected']}/{s['windows']}",
                    str(s["false_positives"]),
                    f"{s['raw_standard']:.2f}",
                    f"{s['own_decision_detected']}/{s['windows']}",
                    str(s["own_decision_false_positives"]),
                    str(s["saturated_in_windows"]),
                    str(s["saturated_outside"]),
                ]
                for s in summary["per_series_at_standard_threshold"]
            ],
        ),
        "",
        f"{DETECTOR} false-positive rows at the standard threshold by the method that scored "
        "them highest, and their cost to the standard raw score:",
        table(
            ["method", "FP rows", "cost"],
            [
                [name, str(entry["rows"]), f"{entry['cost']:.2f}"]
                for name, entry in summary["false_positives_by_strongest_method"].items()
            ],
        ),
        "",
        f"{DETECTOR} missed windows at the standard threshold (first scorable row; best combined "
        "score inside; the method that came closest):",
        table(
            ["series", "window", "row", "best", "closest method", "why"],
            [
                [
                    s["series"],
                    str(m["window"]),
                    str(m["first_scorable_row"]),
                    f"{m['best_score']:.3f}",
                    f"{m['best_method']} {m['best_method_score']:.3f}",
                    m["reason"],
                ]
                for s in summary["per_series_at_standard_threshold"]
                for m in s["analysis"]["missed_windows"]
            ],
        ),
        "",
        f"engine cost: {summary['cost']['events']} events, "
        f"{summary['cost']['wall_us_per_event']:.1f} us/event wall, "
        f"{summary['cost']['cpu_us_per_event']:.1f} us/event CPU",
        f"results: {summary['results_layout']} and summary.json",
        describe_run(summary["run"]),
    ]
    return "\n".join(lines)
