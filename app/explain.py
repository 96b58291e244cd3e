"""Why an event scored as it did, in words and numbers a person on call can act on."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

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
    n = len(batch)
    median_array = baseline.median_latency_ms
    ready_array = baseline.ready
    window_score_array = scores.get("sliding_window")
    extra = _method_findings(
        batch, scores, outputs or {}, templates, template_text, settings, score_matrix
    )
    latency = batch.latency_ms.tolist()
    median = median_array.tolist()
    notable: Iterable[int]
    if n < WHOLE_BATCH_MASK_FROM:
        # A few events: each is examined below; the masks' numpy calls would cost more.
        ratios = [
            lat / med if not math.isnan(lat) and med > MIN_MEDIAN_FOR_RATIO_MS else math.nan
            for lat, med in zip(latency, median, strict=True)
        ]
        notable = range(n)
        score_texts = [f"{score:.2f}" for score in combined.tolist()]
        ratio_texts = [f"{ratio:.1f}" for ratio in ratios]
        below_texts = [f"{1 / ratio:.1f}" if ratio > 0 else "" for ratio in ratios]
        latency_texts = [_ms(value) for value in latency]
        median_texts = [_ms(value) for value in median]
    else:
        has_latency_array = ~np.isnan(batch.latency_ms)
        # The same ratios (one IEEE division each): NaN without a latency or a usable median.
        ratio_array = np.divide(
            batch.latency_ms,
            median_array,
            out=np.full(n, np.nan),
            where=has_latency_array & (median_array > MIN_MEDIAN_FOR_RATIO_MS),
        )
        ratios = ratio_array.tolist()
        # Most events have no finding: their sentence is the verdict and the plain latency
        # ratio. The events that may have one are found for the whole batch at once (every
        # condition is tested again event by event below, so the mask only has to include them).
        maybe_notable = (
            batch.is_error
            | (has_latency_array & ~ready_array)
            | (window.latency_zscore >= NOTABLE_WINDOW_Z)
            | (baseline.latency_shift >= NOTABLE_SHIFT)
            | (ready_array & ((ratio_array >= NOTABLE_RATIO) | (ratio_array <= 1 / NOTABLE_RATIO)))
        )
        notable = sorted(set(np.flatnonzero(maybe_notable).tolist()) | extra.keys())
        # The numbers' texts of the whole batch from tables (a format call per number was
        # most of the cost of a sentence); a ratio's only where a sentence may quote it.
        score_texts = fixed_texts(combined, 2)
        quoted = ready_array & (ratio_array == ratio_array)
        ratio_texts = fixed_texts(ratio_array, 1, quoted)
        below = quoted & (ratio_array > 0) & (ratio_array <= 1 / NOTABLE_RATIO)
        with np.errstate(over="ignore"):  # 1 / a subnormal ratio is inf, as in Python
            inverse = np.divide(1.0, ratio_array, where=below, out=ratio_array.copy())
        below_texts = fixed_texts(inverse, 1, below)
        # A notable ratio's sentence quotes the latency and the median.
        latency_texts = ms_texts(batch.latency_ms, quoted)
        median_texts = ms_texts(median_array, quoted)
    flagged_list = flagged.tolist()  # indexing the arrays makes a numpy scalar per event
    ready = ready_array.tolist()
    # The sentences of the events with a finding first; every other event's sentence is its
    # verdict, written out below (a call per event costs as much as its sentence).
    written: dict[int, str] = {}
    if notable:
        seen = baseline.events_seen.tolist()
        window_z = window.latency_zscore.tolist()
        shift = baseline.latency_shift.tolist()
        window_output = (outputs or {}).get("sliding_window")
        is_error = batch.is_error.tolist()
        window_score = window_score_array.tolist() if window_score_array is not None else [0.0] * n
        for i in notable:
            ratio = ratios[i]
            if (
                ready[i]
                and not is_error[i]
                and not window_z[i] >= NOTABLE_WINDOW_Z
                and not shift[i] >= NOTABLE_SHIFT
                and i not in extra
            ):
                # The usual notable event: its latency against the median is its only possible
                # finding (what _findings finds for it, without its call and its list).
                if ratio >= NOTABLE_RATIO:
                    finding = ratio_texts[i] + "x"
                elif ratio <= 1 / NOTABLE_RATIO:
                    finding = below_texts[i] + "x below" if ratio > 0 else "far below"
                else:
                    continue  # no finding (NaN included): the verdict is the sentence
                verdict = "anomalous" if flagged_list[i] else "normal"
                written[i] = (
                    f"{verdict} (score {score_texts[i]}): latency {latency_texts[i]} is "
                    f"{finding} this service's median of {median_texts[i]}"
                )
                continue
            findings = _findings(
                latency[i],
                median[i],
                ratio,
                ready[i],
                is_error[i],
                window_score[i],
                window_z[i],
                shift[i],
                seen[i],
                batch.levels[i],
                extra.get(i, ()),
                window,
                window_output,
                i,
                settings,
            )
            if findings:
                verdict = "anomalous" if flagged_list[i] else "normal"
                written[i] = f"{verdict} (score {score_texts[i]}): " + "; ".join(findings)
    # A written sentence is never empty, so "or" formats the verdict only where none is.
    return [
        written.get(i)
        or f"{'anomalous' if is_flagged else 'normal'} (score {score}): "
        + (
            f"latency {ratio_text}x this service's median"
            if is_ready and ratio == ratio
            else "nothing unusual"
        )
        for i, (is_flagged, score, ratio, ratio_text, is_ready) in enumerate(
            zip(flagged_list, score_texts, ratios, ratio_texts, ready, strict=True)
        )
    ]


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
_MS_TABLE = _fixed_table(0, 10_000, " ms")
# How far from a tie (a half of the last digit) a value's scaled product must be for its text to
# come from a table: the product is within ~1e-12 of the exact one below 1e4 (its rounding
# error), so the exact value rounds to the same integer as it, as the correctly rounded "f"
# format does. Values nearer a tie, negative (-0.0 included), NaN, infinite or past the
# table are formatted by Python.
_TIE_MARGIN = 1e-6


def _from_table(
    values: FloatArray,
    scale: float,
    table: npt.NDArray[np.object_],
    fits: npt.NDArray[np.bool_],
    wanted: npt.NDArray[np.bool_] | None,
    written: Callable[[float], str],
) -> list[str]:
    """``written(value)`` of each of ``values`` where ``wanted`` (other events' texts are any):
    ``table[k]`` where ``fits`` and the value times ``scale`` rounds to k away from a tie."""
    with np.errstate(over="ignore", invalid="ignore"):  # infinities and NaN do not fit
        scaled = values * scale
        nearest = np.rint(scaled)
        fits = (
            fits
            & ~np.signbit(values)
            & (nearest < table.size)
            & (np.abs(scaled - nearest) < 0.5 - _TIE_MARGIN)
        )
    texts: list[str] = table[np.where(fits, nearest, 0.0).astype(np.intp)].tolist()
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
        np.ones(values.shape, dtype=np.bool_),
        wanted,
        lambda value: f"{value:.{digits}f}",
    )


def ms_texts(values: FloatArray, wanted: npt.NDArray[np.bool_] | None = None) -> list[str]:
    """``_ms(value)`` of each of ``values`` where ``wanted`` (other events' texts are any)."""
    return _from_table(values, 1.0, _MS_TABLE, values >= 10, wanted, _ms)


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
    scores: dict[str, float],
    combined: float,
    flagged: bool,
    settings: Settings,
    outputs: dict[str, OneOutput],
    templates: TemplateView | None,
    template_text: Callable[[int], str | None] | None,
) -> str:
    """``explain`` of a batch of one, from its scores and outputs as Python floats: the same
    sentence, without the arrays ``explain`` makes and reads for every event."""
    # item(): each one-value column's Python value, as tolist() gives it, without a list.
    latency, median = batch.latency_ms.item(), baseline.median_latency_ms.item()
    ratio = (
        latency / median
        if not math.isnan(latency) and median > MIN_MEDIAN_FOR_RATIO_MS
        else math.nan
    )
    notable = {name: [0] for name, score in scores.items() if score >= NOTABLE_SCORE}
    # Only a method with a notable score has findings (the sliding window's burst finding
    # included): only their outputs are needed as the arrays the findings read.
    arrays: dict[str, MethodOutput] = {}
    extra: dict[int, list[str]] = {}
    if notable:
        arrays = {name: _as_arrays(outputs[name]) for name in notable}
        extra = _method_findings(
            batch, {}, arrays, templates, template_text, settings, None, notable
        )
    ready = baseline.ready.item()
    findings = _findings(
        latency,
        median,
        ratio,
        ready,
        batch.is_error.item(),
        scores.get("sliding_window", 0.0),
        window.latency_zscore.item(),
        baseline.latency_shift.item(),
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
