"""Why an event scored as it did, in words and numbers a person on call can act on."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from app.baselines import MIN_MEDIAN_FOR_RATIO_MS, BaselineView
from app.detectors.base import MethodOutput, OneOutput
from app.detectors.sliding_window import BURST_SHARE, SCAN_CORRECTION, error_burst_scan
from app.events import EventBatch
from app.patterns import NEW_BELOW, RECENT_EVENTS
from app.schemas.events import Level
from app.settings import Settings
from app.templates import TemplateView
from app.windows import RECENT_EVENTS as RECENT_ERROR_FLAGS
from app.windows import WindowView

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# Below these a finding is not worth a person's attention and is left out of the sentence.
NOTABLE_RATIO = 3.0
NOTABLE_WINDOW_Z = 3.0
NOTABLE_SCORE = 0.25
NOTABLE_SHIFT = 3.0
# Below this many events (decayed, prior included) behind a service's error rate, a burst finding
# says so: the scan's tail allows for a rate known this loosely, which the reader should know too.
YOUNG_RATE_WEIGHT = 100.0
# From this many events on, the events that may have a finding are picked out by whole-batch masks.
WHOLE_BATCH_MASK_FROM = 16


def _counted(count: float, noun: str) -> str:
    """``1 error``, ``3 errors``: explanations are read by people."""
    whole = round(count)
    return f"{whole} {noun}" if whole == 1 else f"{whole} {noun}s"


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
    outputs: dict[str, MethodOutput] | None = None,
    templates: TemplateView | None = None,
    template_text: Callable[[int], str | None] | None = None,
    score_matrix: FloatArray | None = None,
) -> list[str]:
    """``score_matrix``, when given, is ``scores`` stacked as rows in the dict's order (the
    engine has it already; stacking the rows again is a numpy call a single event pays for)."""
    outputs = outputs or {}
    extra = _method_findings(
        batch, scores, outputs, templates, template_text, settings, score_matrix
    )
    if len(batch) < WHOLE_BATCH_MASK_FROM:
        # A few events: each is examined on its own; the masks' numpy calls would cost more.
        return _each_explained(
            batch, baseline, window, scores, combined, flagged, settings, outputs, extra
        )
    return _batch_explained(
        batch, baseline, window, scores, combined, flagged, settings, outputs, extra
    )


def _each_explained(
    batch: EventBatch,
    baseline: BaselineView,
    window: WindowView,
    scores: dict[str, FloatArray],
    combined: FloatArray,
    flagged: npt.NDArray[np.bool_],
    settings: Settings,
    outputs: dict[str, MethodOutput],
    extra: dict[int, list[str]],
    events: IntArray | None = None,
) -> list[str]:
    """``explain``, event by event: each event's findings (``_findings``), else its verdict; of
    ``events`` only, when given."""
    window_score = scores.get("sliding_window")
    columns = [
        batch.latency_ms,
        baseline.median_latency_ms,
        combined,
        flagged,
        baseline.ready,
        batch.is_error,
        window.latency_zscore,
        baseline.latency_shift,
        baseline.events_seen,
        window_score if window_score is not None else np.zeros(len(batch)),
    ]
    picked = range(len(batch)) if events is None else events.tolist()
    window_output = outputs.get("sliding_window")
    sentences: list[str] = []
    for i, latency, median, score, is_flagged, ready, is_error, z, shift, seen, w in zip(
        picked,
        *(column.tolist() if events is None else column[events].tolist() for column in columns),
        strict=True,
    ):
        ratio = (
            latency / median
            if not math.isnan(latency) and median > MIN_MEDIAN_FOR_RATIO_MS
            else math.nan
        )
        findings = _findings(
            latency,
            median,
            ratio,
            ready,
            is_error,
            w,
            z,
            shift,
            seen,
            batch.levels[i],
            extra.get(i, ()),
            window,
            window_output,
            i,
            settings,
        )
        sentences.append(
            f"{'anomalous' if is_flagged else 'normal'} (score {score:.2f}): " + "; ".join(findings)
            if findings
            else _verdict(is_flagged, score, ratio, ready)
        )
    return sentences


def _batch_explained(
    batch: EventBatch,
    baseline: BaselineView,
    window: WindowView,
    scores: dict[str, FloatArray],
    combined: FloatArray,
    flagged: npt.NDArray[np.bool_],
    settings: Settings,
    outputs: dict[str, MethodOutput],
    extra: dict[int, list[str]],
) -> list[str]:
    """``_each_explained``'s sentences, found for the whole batch at once: each finding's events
    by a mask (its condition in ``_findings``) and its texts written for those events only.

    A Python step per event costs as much as its sentence, and joining two strings about as
    much as a format: an event without a finding (most of them) takes its whole sentence from
    a table, and every other sentence is written by as few joins as its findings allow. The
    rare event whose score or plain ratio has no text in the tables (NaN, or within a hair of
    a tie of its last digit) is written by ``_each_explained``."""
    n = len(batch)
    latency, median = batch.latency_ms, baseline.median_latency_ms
    ready, is_error = baseline.ready, batch.is_error
    has_latency = ~np.isnan(latency)
    # The same ratios (one IEEE division each): NaN without a latency or a usable median.
    ratio = np.divide(
        latency,
        median,
        out=np.full(n, np.nan),
        where=has_latency & (median > MIN_MEDIAN_FOR_RATIO_MS),
    )
    quoted = ready & ~np.isnan(ratio)
    # Each finding's events, in the sentence's order. NaN compares false, as in _findings.
    above = quoted & (ratio >= NOTABLE_RATIO)
    against_median = above | (quoted & (ratio <= 1 / NOTABLE_RATIO))
    jump = window.latency_zscore >= NOTABLE_WINDOW_Z
    shifted = baseline.latency_shift >= NOTABLE_SHIFT
    warming = has_latency & ~ready
    later = is_error | jump | shifted | warming  # the findings after the median's
    if extra:
        later[list(extra)] = True
    score_index, score_fits = _table_index(combined, 100.0, _SCORE_TEXTS)
    prefix_index = score_index + _SCORE_TEXTS * flagged
    # An event without a finding: its verdict and plain ratio (NaN or unquoted: "nothing
    # unusual"), a plain ratio's text being one of 0.3 ... 3.0 (1/3 < ratio < 3).
    plain = ~(against_median | later)
    ratio_index, ratio_fits = _table_index(ratio, 10.0, _PLAIN_RATIO_END, quoted & plain)
    ratio_fits &= ratio_index >= _PLAIN_RATIO_START
    sentences = _PLAIN_SENTENCES[
        prefix_index, np.where(ratio_fits, ratio_index - _PLAIN_RATIO_START, _NOTHING_UNUSUAL)
    ]
    # The median's finding comes first: its events' sentences begin with it.
    where = np.flatnonzero(against_median)
    if where.size:
        sentences[where] = np.array(
            _median_findings(
                _PREFIXES[prefix_index[where]].tolist(),
                latency[where],
                median[where],
                ratio[where],
                above[where],
            ),
            dtype=object,
        )
    where = np.flatnonzero(later)
    if where.size:
        # Each event's later findings added to its sentence so far (its median's finding, or
        # its verdict and score) column by column, in the sentence's order.
        started = against_median[where]
        texts: list[str] = np.where(
            started, sentences[where], _PREFIXES[prefix_index[where]]
        ).tolist()
        ongoing = started.tolist()
        for column, findings in _later_findings(
            batch,
            baseline,
            window,
            scores,
            settings,
            outputs,
            extra,
            is_error,
            jump,
            shifted,
            warming,
        ):
            for p, finding in zip(np.searchsorted(where, column).tolist(), findings, strict=True):
                texts[p] = f"{texts[p]}; {finding}" if ongoing[p] else texts[p] + finding
                ongoing[p] = True
        sentences[where] = np.array(texts, dtype=object)
    unwritten = ~score_fits | (plain & quoted & ~ratio_fits)
    if unwritten.any():
        where = np.flatnonzero(unwritten)
        sentences[where] = np.array(
            _each_explained(
                batch, baseline, window, scores, combined, flagged, settings, outputs, extra, where
            ),
            dtype=object,
        )
    return sentences.tolist()  # type: ignore[no-any-return]


def _median_findings(
    prefixes: list[str],
    latency: FloatArray,
    median: FloatArray,
    ratio: FloatArray,
    above: npt.NDArray[np.bool_],
) -> list[str]:
    """Each prefix followed by ``_findings``' latency-against-median finding, for events whose
    ratio is notable (``above``: at least NOTABLE_RATIO, else at most its inverse)."""
    far = ratio <= 0  # a 0 ms latency is valid input: it has no finite ratio to print
    with np.errstate(divide="ignore", over="ignore"):  # 1 / a subnormal ratio is inf, as in Python
        times = np.where(above, ratio, 1.0 / ratio)
    times_texts = fixed_texts(times, 1, ~far)
    words = _MEDIAN_WORDS[above.view(np.uint8) + 2 * far.view(np.uint8)].tolist()
    if far.any():
        for i in np.flatnonzero(far).tolist():
            times_texts[i] = ""
    ms = ms_texts(np.concatenate((latency, median)))  # one call for both: half the numpy calls
    return [
        f"{prefix}latency {value} is {times}{word} this service's median of {usual}"
        for prefix, value, times, word, usual in zip(
            prefixes, ms[: len(prefixes)], times_texts, words, ms[len(prefixes) :], strict=True
        )
    ]


def _later_findings(
    batch: EventBatch,
    baseline: BaselineView,
    window: WindowView,
    scores: dict[str, FloatArray],
    settings: Settings,
    outputs: dict[str, MethodOutput],
    extra: dict[int, list[str]],
    is_error: npt.NDArray[np.bool_],
    jump: npt.NDArray[np.bool_],
    shifted: npt.NDArray[np.bool_],
    warming: npt.NDArray[np.bool_],
) -> Iterator[tuple[IntArray, Sequence[str]]]:
    """The events of each of ``_findings``' findings after the median's and their texts, in the
    sentence's order."""
    window_score = scores.get("sliding_window")
    if window_score is not None:
        window_output = outputs.get("sliding_window")
        events: list[int] = []
        texts: list[str] = []
        for i in np.flatnonzero(is_error & (window_score >= NOTABLE_SCORE)).tolist():
            burst = _burst_finding(window, window_output, i)
            if burst is not None:
                events.append(i)
                texts.append(burst)
        if events:
            yield np.array(events, dtype=np.intp), texts
    where = np.flatnonzero(jump)
    if where.size:
        minutes = (
            f" standard deviations above this service's last {settings.window_minutes:g} minutes"
        )
        yield where, [f"latency is {z:.1f}{minutes}" for z in window.latency_zscore[where].tolist()]
    where = np.flatnonzero(shifted)
    if where.size:
        yield (
            where,
            [
                f"this service's recent latencies run {shift:.1f} spreads above its baseline"
                for shift in baseline.latency_shift[where].tolist()
            ],
        )
    if extra:
        events = sorted(extra)
        yield np.array(events, dtype=np.intp), ["; ".join(extra[i]) for i in events]
    where = np.flatnonzero(is_error)
    if where.size:
        levels = batch.levels
        yield where, [_LEVEL_FINDINGS[levels[i]] for i in where.tolist()]
    where = np.flatnonzero(warming)
    if where.size:
        warmup = settings.baseline_warmup_events
        table = _warming_table(warmup)
        seen = baseline.events_seen[where]
        fits = (seen >= 0) & (seen < table.size)
        warming_texts: list[str] = table[np.where(fits, seen, 0)].tolist()
        if not fits.all():
            for p in np.flatnonzero(~fits).tolist():
                warming_texts[p] = _warming(int(seen[p]), warmup)
        yield where, warming_texts


@functools.cache
def _warming_table(warmup: int) -> npt.NDArray[np.object_]:
    """``_warming`` of a service's events seen 0 ... 2 * ``warmup``."""
    return np.array([_warming(seen, warmup) for seen in range(2 * warmup + 1)], dtype=object)


def _warming(seen: int, warmup: int) -> str:
    return f"latency not judged yet: {seen} of {warmup} events of this service seen"


def _fixed_table(digits: int, units: int, suffix: str = "") -> npt.NDArray[np.object_]:
    """The texts ``f"{k / 10**digits:.{digits}f}"`` of k = 0 ... ``units * 10**digits``, written
    from the integer k (a float's division could round off k's own text), each + ``suffix``."""
    if not digits:
        return np.array([f"{k}{suffix}" for k in range(units + 1)], dtype=object)
    scale = 10**digits
    return np.array(
        [f"{k // scale}.{k % scale:0{digits}d}{suffix}" for k in range(units * scale + 1)],
        dtype=object,
    )


# Scores are in [0, 1]; latency ratios quoted by a sentence are mostly below a thousand, and
# latencies below ten seconds.
_FIXED_TABLES = {1: _fixed_table(1, 1000), 2: _fixed_table(2, 1)}
# _ms's texts of whole ms from 10 ms; of tenths of a ms k / 10 from 1 ms (two figures, as "g"
# writes them: "1 ms", "1.1 ms" ... "9.9 ms", "10 ms"); of hundredths k / 100 from 0.1 ms.
_MS_WHOLE = 10_001
_MS_HUNDREDTHS = _MS_WHOLE + 101
_MS_TABLE = np.concatenate(
    [
        _fixed_table(0, _MS_WHOLE - 1, " ms"),
        np.array([f"{k / 10:.2g} ms" for k in range(101)], dtype=object),
        np.array([f"{k / 100:.2g} ms" for k in range(101)], dtype=object),
    ]
)
# How far from a tie (a half of the last digit) a value's scaled product must be for its text to
# come from a table: the product is within ~1e-12 of the exact one below 1e4 (its rounding
# error), so the exact value rounds to the same integer as it, as the correctly rounded "f"
# format does. Values nearer a tie, negative (-0.0 included), NaN, infinite or past the
# table are formatted by Python.
_TIE_MARGIN = 1e-6

# A batch's sentences are written from tables of texts: the verdict and score ("normal"'s
# scores, then "anomalous"'s) and the whole sentence of an event without a finding, for each
# verdict and score and plain ratio's text (0.3 ... 3.0) or "nothing unusual".
_SCORE_TEXTS = _FIXED_TABLES[2].size
_PREFIXES = np.array(
    [
        f"{verdict} (score {score}): "
        for verdict in ("normal", "anomalous")
        for score in _FIXED_TABLES[2]
    ],
    dtype=object,
)
_PLAIN_RATIO_START, _PLAIN_RATIO_END = 3, 31  # 10 * 0.3 and one past 10 * 3.0
_PLAIN_SENTENCES = np.array(
    [
        [
            prefix + body
            for body in [
                f"latency {ratio}x this service's median"
                for ratio in _FIXED_TABLES[1][_PLAIN_RATIO_START:_PLAIN_RATIO_END]
            ]
            + ["nothing unusual"]
        ]
        for prefix in _PREFIXES
    ],
    dtype=object,
)
_NOTHING_UNUSUAL = _PLAIN_RATIO_END - _PLAIN_RATIO_START
# What follows the ratio's text in a median's finding: below, above, and (without a text)
# for a zero latency.
_MEDIAN_WORDS = np.array(["x below", "x", "far below"], dtype=object)
_LEVEL_FINDINGS = {level: f"level {level.value}" for level in Level}


def _table_index(
    values: FloatArray,
    scale: float | FloatArray,
    size: int,
    fits: npt.NDArray[np.bool_] | None = None,
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Each value's index k in a table of ``size`` texts written from k / ``scale``, and where
    that text is the value's own (``fits``, if given, and the value times ``scale`` rounds to k
    away from a tie); elsewhere the index is 0 and the caller writes the text itself."""
    with np.errstate(over="ignore", invalid="ignore"):  # infinities and NaN do not fit
        scaled = values * scale
        nearest = np.rint(scaled)
        found = (
            ~np.signbit(values) & (nearest < size) & (np.abs(scaled - nearest) < 0.5 - _TIE_MARGIN)
        )
    if fits is not None:
        found &= fits
    return np.where(found, nearest, 0.0).astype(np.intp), found


def _from_table(
    values: FloatArray,
    scale: float,
    table: npt.NDArray[np.object_],
    fits: npt.NDArray[np.bool_] | None,
    wanted: npt.NDArray[np.bool_] | None,
    written: Callable[[float], str],
) -> list[str]:
    """``written(value)`` of each of ``values`` where ``wanted`` (other events' texts are any):
    ``table[k]`` where ``fits`` and the value times ``scale`` rounds to k away from a tie."""
    index, fits = _table_index(values, scale, table.size, fits)
    texts: list[str] = table[index].tolist()
    rest = ~fits if wanted is None else wanted & ~fits
    if rest.any():
        for i, value in zip(np.flatnonzero(rest).tolist(), values[rest].tolist(), strict=True):
            texts[i] = written(value)
    return texts


def fixed_texts(
    values: FloatArray, digits: int, wanted: npt.NDArray[np.bool_] | None = None
) -> list[str]:
    """``f"{value:.{digits}f}"`` of each of ``values`` (``digits`` 1 or 2), where ``wanted``
    (other events' texts are any)."""
    return _from_table(
        values,
        float(10**digits),
        _FIXED_TABLES[digits],
        None,
        wanted,
        lambda value: f"{value:.{digits}f}",
    )


def ms_texts(values: FloatArray, wanted: npt.NDArray[np.bool_] | None = None) -> list[str]:
    """``_ms(value)`` of each of ``values`` where ``wanted`` (other events' texts are any)."""
    with np.errstate(invalid="ignore"):
        from_ten, from_one = values >= 10, values >= 1
    # Whole ms from 10 ms, tenths from 1 ms, hundredths below (the same two figures as "g").
    tenths, hundredths = from_one & ~from_ten, ~from_one
    index, fits = _table_index(
        values, np.where(from_ten, 1.0, np.where(from_one, 10.0, 100.0)), _MS_WHOLE, values >= 0.1
    )
    texts: list[str] = _MS_TABLE[index + _MS_WHOLE * tenths + _MS_HUNDREDTHS * hundredths].tolist()
    rest = ~fits if wanted is None else wanted & ~fits
    if rest.any():
        for i, value in zip(np.flatnonzero(rest).tolist(), values[rest].tolist(), strict=True):
            texts[i] = _ms(value)
    return texts


def _verdict(flagged: bool, score: float, ratio: float, ready: bool) -> str:
    """An event's sentence when it has no finding: the verdict and the plain latency ratio."""
    return f"{'anomalous' if flagged else 'normal'} (score {score:.2f}): " + (
        f"latency {ratio:.1f}x this service's median"
        if ready and ratio == ratio
        else "nothing unusual"
    )


def _findings(
    latency: float,
    median: float,
    ratio: float,
    ready: bool,
    is_error: bool,
    window_score: float,
    window_z: float,
    shift: float,
    seen: int,
    level: Level,
    extra: Iterable[str],
    window: WindowView,
    window_output: MethodOutput | None,
    i: int,
    settings: Settings,
) -> list[str]:
    """What is notable about event ``i`` (empty when nothing is), in the sentence's order."""
    findings: list[str] = []
    if ready and not math.isnan(ratio):
        if ratio >= NOTABLE_RATIO:
            findings.append(
                f"latency {_ms(latency)} is {ratio:.1f}x this service's median of {_ms(median)}"
            )
        elif ratio <= 1 / NOTABLE_RATIO:
            # A 0 ms latency is valid input: it has no finite ratio to print.
            below = f"{1 / ratio:.1f}x below" if ratio > 0 else "far below"
            findings.append(
                f"latency {_ms(latency)} is {below} this service's median of {_ms(median)}"
            )
    if is_error and window_score >= NOTABLE_SCORE:
        burst = _burst_finding(window, window_output, i)
        if burst is not None:
            findings.append(burst)
    if not math.isnan(window_z) and window_z >= NOTABLE_WINDOW_Z:
        findings.append(
            f"latency is {window_z:.1f} standard deviations above this service's last "
            f"{settings.window_minutes:g} minutes"
        )
    if not math.isnan(shift) and shift >= NOTABLE_SHIFT:
        findings.append(
            f"this service's recent latencies run {shift:.1f} spreads above its baseline"
        )
    findings.extend(extra)
    if is_error:
        findings.append(f"level {level.value}")
    if not math.isnan(latency) and not ready:
        findings.append(
            f"latency not judged yet: {seen} of {settings.baseline_warmup_events} events "
            "of this service seen"
        )
    return findings


def explain_one(
    batch: EventBatch,
    baseline: BaselineView,
    window: WindowView,
    names: Sequence[str],
    scores: Sequence[float],
    combined: float,
    flagged: bool,
    settings: Settings,
    outputs: dict[str, OneOutput],
    templates: TemplateView | None,
    template_text: Callable[[int], str | None] | None,
) -> str:
    """``explain`` of a batch of one, from its methods' scores (``scores[m]`` of ``names[m]``)
    and outputs as Python floats: the same sentence, without the arrays ``explain`` makes and
    reads for every event."""
    # item(): each one-value column's Python value, as tolist() gives it, without a list.
    latency, median = batch.latency_ms.item(), baseline.median_latency_ms.item()
    ratio = (
        latency / median
        if not math.isnan(latency) and median > MIN_MEDIAN_FOR_RATIO_MS
        else math.nan
    )
    # Only a method with a notable score has findings (the sliding window's burst finding
    # included): only their outputs are needed as the arrays the findings read. Most events
    # have none, which one max tells.
    window_score = 0.0
    arrays: dict[str, MethodOutput] = {}
    extra: dict[int, list[str]] = {}
    if max(scores, default=0.0) >= NOTABLE_SCORE:
        score_of = dict(zip(names, scores, strict=True))
        window_score = score_of.get("sliding_window", 0.0)
        notable = {name: [0] for name, score in score_of.items() if score >= NOTABLE_SCORE}
        arrays = {name: _as_arrays(outputs[name]) for name in notable}
        extra = _method_findings(
            batch, {}, arrays, templates, template_text, settings, None, notable
        )
    ready, is_error = baseline.ready.item(), batch.is_error.item()
    window_z, shift = window.latency_zscore.item(), baseline.latency_shift.item()
    if (
        not extra
        and not is_error
        and ready
        and not (window_z >= NOTABLE_WINDOW_Z or shift >= NOTABLE_SHIFT)
        and not (ratio >= NOTABLE_RATIO or ratio <= 1 / NOTABLE_RATIO)
    ):
        # Most events: none of _findings' conditions holds (each written as it tests it, NaN
        # failing every comparison), so the sentence is the verdict.
        return _verdict(flagged, combined, ratio, ready)
    findings = _findings(
        latency,
        median,
        ratio,
        ready,
        is_error,
        window_score,
        window_z,
        shift,
        baseline.events_seen.item(),
        batch.levels[0],
        extra.get(0, ()),
        window,
        arrays.get("sliding_window"),
        0,
        settings,
    )
    if findings:
        return f"{'anomalous' if flagged else 'normal'} (score {combined:.2f}): " + "; ".join(
            findings
        )
    return _verdict(flagged, combined, ratio, ready)


def _as_arrays(output: OneOutput) -> MethodOutput:
    """A batch of one's output as the 1-element arrays of ``MethodOutput``."""
    return MethodOutput(
        np.array([output.rarity]),
        {name: np.array([value]) for name, value in output.metrics.items()},
    )


def _percent(rate: float) -> str:
    """``0.8%``, ``2.7%``; ``0.012%`` for a rate one decimal of a percent would show as 0."""
    return f"{rate:.1%}" if rate >= 0.001 else f"{rate * 100:.2g}%"


def _one_in(rarity: float) -> str:
    """``1 in 5,000``: two significant figures, as the rarity is an estimate."""
    return f"1 in {float(f'{1.0 / rarity:.2g}'):,.0f}"


def _burst_finding(window: WindowView, output: MethodOutput | None, i: int) -> str | None:
    """What the sliding window's burst scan found for error event ``i``, when the burst test is
    what gives the window its score (its share of the budget is the smallest test): the
    horizon and count of the smallest tail, from the scan the score used. None when a latency
    test drives the score (its own finding says why). The 5-minute window's error count is not
    quoted: no test reads it since the scan replaced it (app/detectors/sliding_window.py), and
    it would explain an alarm by what did not raise it."""
    rate = float(window.expected_error_rate[i])
    weight = float(window.error_rate_weight[i])
    tail, errors, events = error_burst_scan(int(window.recent_error_bits[i]), rate, weight)
    rarity = SCAN_CORRECTION * tail
    if output is not None and rarity / BURST_SHARE > output.rarity[i]:
        return None
    known = f", known from about {weight:.0f} events so far" if weight < YOUNG_RATE_WEIGHT else ""
    usual = (
        f"usually {_percent(rate)} of its events are errors{known}; "
        f"about {_one_in(rarity)} normal events looks like this"
    )
    if errors > 1:
        return f"{errors} errors in the last {events} events of this service ({usual})"
    lines = min(RECENT_ERROR_FLAGS, int(window.recent_total[i]))
    if lines <= 1:
        return f"an error as this service's first event ({usual})"
    return f"an error, the only one in the last {lines} events of this service ({usual})"


def _quoted(template_id: int, template_text: Callable[[int], str | None] | None) -> str:
    text = template_text(template_id) if template_text is not None else None
    if text is None:
        return f"#{template_id}"
    return f'#{template_id} "{text if len(text) <= 80 else text[:77] + "..."}"'


def _notable_events(
    scores: dict[str, FloatArray], score_matrix: FloatArray | None = None
) -> dict[str, list[int]]:
    """Per method, the events whose score is notable, in event order (one comparison for all
    methods: most events have none)."""
    if not scores:
        return {}
    names = list(scores)
    matrix = np.array(list(scores.values())) if score_matrix is None else score_matrix
    if matrix.shape[1] == 1:
        # One event: its scores compared as Python floats, not through three numpy calls.
        return {
            name: [0]
            for name, score in zip(names, matrix.ravel().tolist(), strict=True)
            if score >= NOTABLE_SCORE
        }
    methods, events = np.nonzero(matrix >= NOTABLE_SCORE)
    notable: dict[str, list[int]] = {}
    for m, i in zip(methods.tolist(), events.tolist(), strict=True):
        notable.setdefault(names[m], []).append(i)
    return notable


def _method_findings(
    batch: EventBatch,
    scores: dict[str, FloatArray],
    outputs: dict[str, MethodOutput],
    templates: TemplateView | None,
    template_text: Callable[[int], str | None] | None,
    settings: Settings,
    score_matrix: FloatArray | None = None,
    notable: dict[str, list[int]] | None = None,
) -> dict[int, list[str]]:
    """Findings of the template, sequence, forecast, likelihood and autoencoder methods, only for
    the events where a method's score is notable (most events have none, so this loops over
    few); events without such findings are left out. ``notable``, when given, is what
    ``_notable_events`` would find."""
    findings: defaultdict[int, list[str]] = defaultdict(list)
    if notable is None:
        notable = _notable_events(scores, score_matrix)
    if not notable:  # the usual event: no method's score is notable
        return findings
    if templates is not None:
        for i in notable.get("templates", ()):
            template = _quoted(int(templates.template_id[i]), template_text)
            seen = int(templates.service_messages[i])
            if templates.novelty_rarity[i] < 1.0:
                system = templates.system_rarity[i]
                elsewhere = (
                    f"; 1 in {1.0 / system:,.0f} judged with every service's history"
                    if system < templates.novelty_rarity[i]
                    else ""
                )
                findings[i].append(
                    f"message template {template} never seen before in this service "
                    f"({seen} messages seen{elsewhere})"
                )
            elif templates.rarity_of_rare[i] < templates.surge_rarity[i]:
                findings[i].append(
                    f"rare message template {template}: {int(templates.template_count[i])} of "
                    f"{seen} messages of this service"
                )
            else:
                findings[i].append(
                    f"surge of message template {template}: {templates.surge_count[i]:.0f} "
                    f"recently where {templates.surge_expected[i]:.1f} are usual"
                )
    sequence = outputs.get("sequence")
    if sequence is not None:
        rank = sequence.metrics["next_template_rank"]
        for i in notable.get("sequence", ()):
            findings[i].append(
                f"unexpected message order: this template ranks #{rank[i]:.0f} among the likely "
                f"next ones (top {settings.sequence_top_k} expected)"
            )
    forecast = outputs.get("forecast")
    if forecast is not None:
        metrics = forecast.metrics
        for i in notable.get("forecast", ()):
            low = metrics["latency_interval_low_ms"][i]
            high = metrics["latency_interval_high_ms"][i]
            latency = batch.latency_ms[i]
            if not math.isnan(latency) and not math.isnan(high) and not low <= latency <= high:
                findings[i].append(
                    f"latency {_ms(latency)} outside its forecast range {_ms(low)}-{_ms(high)} "
                    "for this time of day"
                )
            if batch.is_error[i] and metrics["bucket_events"][i] > 0:
                findings[i].append(
                    f"{_counted(metrics['bucket_errors'][i], 'error')} in "
                    f"{_counted(metrics['bucket_events'][i], 'event')} within "
                    f"{settings.forecast_bucket_seconds:g} s; forecast error rate "
                    f"{metrics['error_rate_forecast'][i]:.1%}"
                )
    likelihood = outputs.get("likelihood")
    if likelihood is not None:
        for i in notable.get("likelihood", ()):
            findings[i].append(
                "a run of surprising latencies: the recent forecast errors run "
                f"{likelihood.metrics['likelihood_z'][i]:.1f} spreads above their usual size"
            )
    pattern = outputs.get("pattern")
    if pattern is not None:
        for i in notable.get("pattern", ()):
            findings[i].append(
                "a new pattern of latencies: "
                f"{pattern.metrics['recent_novel_patterns'][i]:.0f} of the last {RECENT_EVENTS} "
                f"latency patterns new to this service (seen fewer than {NEW_BELOW} times; "
                f"usually {pattern.metrics['novelty_rate'][i]:.1%})"
            )
    record = outputs.get("record")
    if record is not None:
        for i in notable.get("record", ()):
            low, high = record.metrics["range_low_ms"][i], record.metrics["range_high_ms"][i]
            findings[i].append(
                f"latency {_ms(batch.latency_ms[i])} beyond everything this service has shown "
                f"({_ms(low)}-{_ms(high)}) by {record.metrics['range_margin'][i]:.0%} of that range"
            )
    autoencoder = outputs.get("autoencoder")
    if autoencoder is not None:
        for i in notable.get("autoencoder", ()):
            findings[i].append(
                "unusual combination of latency and level for this service (reconstruction "
                f"error {autoencoder.metrics['reconstruction_error'][i]:.2f})"
            )
    return findings
