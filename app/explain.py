"""Why an event scored as it did, in words and numbers a person on call can act on."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from app.baselines import MIN_MEDIAN_FOR_RATIO_MS, BaselineView
from app.events import EventBatch
from app.settings import Settings
from app.windows import WindowView

FloatArray = npt.NDArray[np.float64]

# Below these a finding is not worth a person's attention and is left out of the sentence.
NOTABLE_RATIO = 3.0
NOTABLE_WINDOW_Z = 3.0
NOTABLE_SCORE = 0.25
NOTABLE_SHIFT = 3.0


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.2g} ms"


def explain(
    batch: EventBatch,
    baseline: BaselineView,
    window: WindowView,
    scores: dict[str, FloatArray],
    combined: FloatArray,
    flagged: npt.NDArray[np.bool_],
    settings: Settings,
) -> list[str]:
    latency = batch.latency_ms.tolist()
    median = baseline.median_latency_ms.tolist()
    ready = baseline.ready.tolist()
    seen = baseline.events_seen.tolist()
    window_z = window.latency_zscore.tolist()
    shift = baseline.latency_shift.tolist()
    totals = window.total.tolist()
    errors = window.errors.tolist()
    expected = window.expected_error_rate.tolist()
    is_error = batch.is_error.tolist()
    window_score = scores.get("sliding_window", np.zeros(len(batch))).tolist()
    sentences = []
    for i in range(len(batch)):
        findings: list[str] = []
        has_latency = not math.isnan(latency[i])
        usable = has_latency and median[i] > MIN_MEDIAN_FOR_RATIO_MS
        ratio = latency[i] / median[i] if usable else math.nan
        if ready[i] and not math.isnan(ratio):
            if ratio >= NOTABLE_RATIO:
                findings.append(
                    f"latency {_ms(latency[i])} is {ratio:.1f}x this service's median of "
                    f"{_ms(median[i])}"
                )
            elif ratio <= 1 / NOTABLE_RATIO:
                # A 0 ms latency is valid input: it has no finite ratio to print.
                below = f"{1 / ratio:.1f}x below" if ratio > 0 else "far below"
                findings.append(
                    f"latency {_ms(latency[i])} is {below} this service's median "
                    f"of {_ms(median[i])}"
                )
        if is_error[i] and window_score[i] >= NOTABLE_SCORE and totals[i] > 0:
            findings.append(
                f"{errors[i]} errors in the last {totals[i]} events of this service "
                f"({errors[i] / totals[i]:.1%}; usually {expected[i]:.1%})"
            )
        if not math.isnan(window_z[i]) and window_z[i] >= NOTABLE_WINDOW_Z:
            findings.append(
                f"latency is {window_z[i]:.1f} standard deviations above this service's last "
                f"{settings.window_minutes:g} minutes"
            )
        if not math.isnan(shift[i]) and shift[i] >= NOTABLE_SHIFT:
            findings.append(
                f"this service's recent latencies run {shift[i]:.1f} spreads above its baseline"
            )
        if is_error[i]:
            findings.append(f"level {batch.levels[i].value}")
        if has_latency and not ready[i]:
            findings.append(
                f"latency not judged yet: {seen[i]} of {settings.baseline_warmup_events} events "
                "of this service seen"
            )
        verdict = "anomalous" if flagged[i] else "normal"
        if not findings:
            findings.append(
                f"latency {ratio:.1f}x this service's median"
                if ready[i] and ratio == ratio
                else "nothing unusual"
            )
        sentences.append(f"{verdict} (score {combined[i]:.2f}): " + "; ".join(findings))
    return sentences
