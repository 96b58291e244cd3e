"""The whole-batch explanation (masks, tables of texts) writes every event's sentence exactly as a
plain loop over the events does with the per-event definitions (``_findings``, ``_verdict``): on
random batches with every finding, warm-up, missing and zero latencies, NaN, and numbers within
a hair of a tie of their last printed digit (where a text from a table could differ)."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from tempfile import gettempdir
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from app.baselines import MIN_MEDIAN_FOR_RATIO_MS, BaselineView
from app.detectors.base import MethodOutput
from app.events import EventBatch
from app.explain import (
    WHOLE_BATCH_MASK_FROM,
    _batch_explained,
    _each_explained,
    _findings,
    _ms,
    _verdict,
    explain,
    ms_texts,
)
from app.schemas.events import LEVEL_SCORES, Level
from app.settings import Settings
from app.windows import RECENT_EVENTS, WindowView

FloatArray = npt.NDArray[np.float64]


def _near(value: float) -> st.SearchStrategy[float]:
    """``value`` or one of its neighbours (a tie of a printed digit, or just either side)."""
    return st.sampled_from(
        [value, float(np.nextafter(value, -np.inf)), float(np.nextafter(value, np.inf))]
    )


def _ties(scale: int, top: int) -> st.SearchStrategy[float]:
    """Values near the ties (k + 0.5) / ``scale`` of a text with that many steps per unit."""
    return st.integers(0, top).flatmap(lambda k: _near((k + 0.5) / scale))


_specials = st.sampled_from([math.nan, math.inf, 0.0, -0.0, 5e-324, 1e-300])
_latencies = st.one_of(
    _specials,
    st.floats(0.0, 20_000.0),
    st.floats(0.0, 12.0),
    _ties(1, 10_001),
    _ties(10, 100),
    _ties(100, 100),
    _near(10.0),
    _near(1.0),
    _near(0.1),
)
_medians = st.one_of(
    st.sampled_from([math.nan, 0.0, MIN_MEDIAN_FOR_RATIO_MS]),
    _near(MIN_MEDIAN_FOR_RATIO_MS),
    st.floats(0.0, 5_000.0),
    st.floats(0.5, 30.0),
)
# Latency over median, for events whose latency is drawn as a multiple of their median: near
# the notable ratios and near the ties of the ratio's one decimal.
_ratios = st.one_of(
    _near(3.0),
    _near(1 / 3),
    _ties(10, 40),
    st.floats(0.0, 2_000.0),
    st.sampled_from([0.0, 1e-310, 999.95, 1000.05, 1e6]),
)
_scores = st.one_of(
    st.floats(0.0, 1.0),
    _ties(100, 100),
    st.sampled_from([math.nan, -0.0, 0.25, 1.0, 1.5]),
)
_deviations = st.one_of(
    st.floats(-5.0, 50.0),
    _ties(10, 100),
    _near(3.0),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
_finding_texts = st.lists(st.text(max_size=12), min_size=1, max_size=2)


@cache
def _settings(warmup: int, window_minutes: float) -> Settings:
    return Settings(
        artifacts_dir=Path(gettempdir()) / "cexplain-artifacts",
        env="test",
        baseline_warmup_events=warmup,
        window_minutes=window_minutes,
    )


@st.composite
def _batches(draw: st.DrawFn, sizes: tuple[int, int]) -> dict[str, Any]:
    n = draw(st.integers(*sizes))

    def column(strategy: st.SearchStrategy[Any]) -> list[Any]:
        drawn: list[Any] = draw(st.lists(strategy, min_size=n, max_size=n))
        return drawn

    median = np.array(column(_medians))
    latency = np.array(column(_latencies))
    as_ratio = np.array(column(st.booleans()))
    latency[as_ratio] = median[as_ratio] * np.array(column(_ratios))[as_ratio]
    levels: list[Level] = column(st.sampled_from(list(Level)))
    batch = EventBatch(
        [f"svc-{i % 3}" for i in range(n)],
        levels,
        np.array([LEVEL_SCORES[level] for level in levels], dtype=np.float64),
        latency,
        np.zeros(n),
    )
    baseline = BaselineView(
        latency_z=np.zeros(n),
        median_latency_ms=median,
        events_seen=np.array(column(st.integers(0, 130)), dtype=np.int64),
        ready=np.array(column(st.booleans())),
        latency_shift=np.array(column(_deviations)),
    )
    recent_total = np.array(column(st.integers(1, RECENT_EVENTS)), dtype=np.int64)
    window = WindowView(
        total=recent_total,
        errors=np.zeros(n, dtype=np.int64),
        expected_error_rate=np.array(column(st.floats(1e-5, 0.5))),
        latency_zscore=np.array(column(_deviations)),
        in_window=np.ones(n, dtype=np.bool_),
        recent_total=recent_total,
        recent_errors=np.zeros(n, dtype=np.int64),
        recent_error_bits=np.array(column(st.integers(1, 2**RECENT_EVENTS - 1)), dtype=np.int64),
        error_rate_weight=np.array(column(st.floats(1.0, 500.0))),
    )
    scores: dict[str, FloatArray] = {}
    outputs: dict[str, MethodOutput] = {}
    if draw(st.booleans()):  # else the sliding window failed: no burst findings
        scores["sliding_window"] = np.array(column(st.one_of(st.floats(0.0, 1.0), _near(0.25))))
        if draw(st.booleans()):
            outputs["sliding_window"] = MethodOutput(np.array(column(st.floats(0.0, 1.0))))
    extra = draw(st.dictionaries(st.integers(0, n - 1), _finding_texts, max_size=n))
    return {
        "batch": batch,
        "baseline": baseline,
        "window": window,
        "scores": scores,
        "combined": np.array(column(_scores)),
        "flagged": np.array(column(st.booleans())),
        "settings": _settings(draw(st.sampled_from([3, 20])), draw(st.sampled_from([5.0, 0.5]))),
        "outputs": outputs,
        "extra": extra,
    }


def reference(case: dict[str, Any]) -> list[str]:
    """Each event's sentence from its own Python values, one event at a time."""
    batch, baseline, window = case["batch"], case["baseline"], case["window"]
    window_score = case["scores"].get("sliding_window")
    sentences = []
    for i in range(len(batch)):
        latency = float(batch.latency_ms[i])
        median = float(baseline.median_latency_ms[i])
        ratio = (
            latency / median
            if not math.isnan(latency) and median > MIN_MEDIAN_FOR_RATIO_MS
            else math.nan
        )
        score, flagged, ready = (
            float(case["combined"][i]),
            bool(case["flagged"][i]),
            bool(baseline.ready[i]),
        )
        findings = _findings(
            latency,
            median,
            ratio,
            ready,
            bool(batch.is_error[i]),
            float(window_score[i]) if window_score is not None else 0.0,
            float(window.latency_zscore[i]),
            float(baseline.latency_shift[i]),
            int(baseline.events_seen[i]),
            batch.levels[i],
            case["extra"].get(i, ()),
            window,
            case["outputs"].get("sliding_window"),
            i,
            case["settings"],
        )
        verdict = "anomalous" if flagged else "normal"
        sentences.append(
            f"{verdict} (score {score:.2f}): " + "; ".join(findings)
            if findings
            else _verdict(flagged, score, ratio, ready)
        )
    return sentences


def _arguments(
    case: dict[str, Any],
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any]:
    return (
        case["batch"],
        case["baseline"],
        case["window"],
        case["scores"],
        case["combined"],
        case["flagged"],
        case["settings"],
        case["outputs"],
        case["extra"],
    )


@settings(max_examples=150, deadline=None)
@given(_batches((1, 40)))
def test_the_whole_batch_path_writes_what_the_per_event_loop_writes(case: dict[str, Any]) -> None:
    expected = reference(case)
    assert _batch_explained(*_arguments(case)) == expected
    assert _each_explained(*_arguments(case)) == expected
    # And any subset of events alone, as the batch path writes its rare untabled events.
    some = np.flatnonzero(np.arange(len(expected)) % 3 == 1)
    assert _each_explained(*_arguments(case), some) == [expected[i] for i in some.tolist()]


@settings(max_examples=40, deadline=None)
@given(_batches((WHOLE_BATCH_MASK_FROM, 30)))
def test_explain_of_a_batch_without_method_findings_is_the_reference(
    case: dict[str, Any],
) -> None:
    case["extra"] = {}  # no method with findings among the scores: explain finds none either
    sentences = explain(
        case["batch"],
        case["baseline"],
        case["window"],
        case["scores"],
        case["combined"],
        case["flagged"],
        case["settings"],
        case["outputs"],
    )
    assert sentences == reference(case)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(_latencies, _ties(1000, 100), st.floats(0.0, 10.0), st.floats(0.05, 0.2)),
        max_size=40,
    )
)
def test_ms_texts_of_small_values_are_ms(values: list[float]) -> None:
    # The tables of tenths and hundredths of a ms, their ties and their edges (0.1, 1, 10 ms).
    assert ms_texts(np.array(values, dtype=np.float64)) == [_ms(value) for value in values]
