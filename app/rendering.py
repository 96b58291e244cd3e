"""Score results written straight to JSON bytes from the method x event matrices.

Building ~16 dicts per event and then serialising them was most of the engine's cost for one
event and, through the garbage collector, a large share for a batch. Here every number of a call
is written by one orjson call on a numpy matrix (orjson writes a float64 exactly as it writes the
Python float: same shortest round-trip text, NaN and infinities as ``null``), and each event's
object is one ``bytes %`` of a template compiled once per set of methods. The bytes are those
``orjson.dumps`` wrote for the dicts (the key order is the response schema's, as before).

In a batch, a row (one field of every event) whose text is the same for all events is written
into the batch's copy of the template instead of being an argument of every event's ``%``, and
the strings are written by one orjson call per row (its fixed cost per call is ~1-2 us, more
than a short string's text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import numpy.typing as npt
import orjson

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def json_values(values: npt.NDArray[np.generic]) -> list[bytes]:
    """The JSON text of every value of ``values`` (any shape, read row by row), in order.

    Numbers and booleans never contain a comma, so the text of one array splits into its values.
    """
    if values.size == 0:
        return []
    text: bytes = orjson.dumps(np.ascontiguousarray(values).ravel(), option=_NUMPY)
    return text[1:-1].split(b",")


def _literal(value: str) -> bytes:
    return orjson.dumps(value)


def _format(text: bytes) -> bytes:
    # Literal text inside a printf format ("%" doubled).
    return text.replace(b"%", b"%%")


@dataclass(frozen=True, slots=True)
class MethodLayout:
    name: str
    label: str
    metrics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FailedMethod:
    name: str
    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class ResultTemplate:
    """One event's answer as a ``bytes %`` format, in ``ScoreResult``'s key order, and where each
    of its arguments comes from among the rows ``render_results`` writes."""

    text: bytes
    rows: IntArray
    methods: int
    metrics: int
    # For a single event, where row r is argument r: its arguments picked in one C call.
    pick: Callable[[Sequence[bytes]], tuple[bytes, ...]]
    # The answer's literal text around its slots (``text`` is their formats joined by "%s"): a
    # batch's copy is rebuilt from them with its constant rows written in.
    pieces: tuple[bytes, ...]
    slot_rows: tuple[int, ...]  # ``rows`` as Python ints


def result_template(
    methods: Sequence[MethodLayout], failed: Sequence[FailedMethod], model_version: str
) -> ResultTemplate:
    """The template of an answer with ``methods`` (in order) and ``failed`` methods after them.

    A failed method's entry is constant text. The arguments, each already JSON text, are the
    rows written by ``render_results``, in this order: combined score and confidence, each
    method's score, each metric, then is_anomaly, baseline_ready, each method's alarm, then
    explanation, service and events seen (the two strings' texts without their quotes).
    """
    n_methods = len(methods)
    n_metrics = sum(len(m.metrics) for m in methods)
    floats = 2 + n_methods + n_metrics
    booleans = 2 + n_methods
    rows = [floats, 0]  # is_anomaly, anomaly_score
    metric_row = 2 + n_methods
    for m, method in enumerate(methods):
        rows += [2 + m, floats + 2 + m]
        rows += range(metric_row, metric_row + len(method.metrics))
        metric_row += len(method.metrics)
    rows += [floats + booleans, floats + booleans + 1, floats + booleans + 2, floats + 1, 1]
    # The literal text between consecutive slots, in order (None: a slot).
    parts: list[bytes | None] = [b'{"is_anomaly":', None, b',"anomaly_score":', None]
    parts.append(b',"methods":{')
    for m, method in enumerate(methods):
        if m:
            parts.append(b",")
        parts += [_literal(method.name) + b':{"anomaly_score":', None, b',"is_anomaly":', None]
        parts.append(b',"method":' + _literal(method.label) + b',"metrics":{')
        for k, metric in enumerate(method.metrics):
            parts += [(b"," if k else b"") + _literal(metric) + b":", None]
        parts.append(b"}}")
    for f, failure in enumerate(failed):
        parts.append(
            (b"," if f or methods else b"")
            + _literal(failure.name)
            + b':{"anomaly_score":0.0,"is_anomaly":false,"method":'
            + _literal(failure.label)
            + b',"metrics":null,"degraded":'
            + _literal(failure.reason)
            + b"}"
        )
    # The two strings' quotes are the template's: their slots take the text between them.
    parts.append(b'},"model_version":' + _literal(model_version) + b',"explanation":"')
    parts += [None, b'","service":"', None, b'","service_events_seen":', None]
    parts += [b',"baseline_ready":', None, b',"confidence":', None, b"}"]
    pieces: list[bytes] = []
    literal = b""
    for part in parts:
        if part is None:
            pieces.append(literal)
            literal = b""
        else:
            literal += part
    pieces.append(literal)
    text = b"%s".join(map(_format, pieces))
    return ResultTemplate(
        text,
        np.array(rows, dtype=np.int64),
        n_methods,
        n_metrics,
        itemgetter(*rows),
        tuple(pieces),
        tuple(rows),
    )


def _value_rows(
    template: ResultTemplate,
    n: int,
    combined: FloatArray,
    flagged: npt.NDArray[np.bool_],
    scores: FloatArray,
    alarms: npt.NDArray[np.bool_],
    metrics: Sequence[npt.NDArray[np.generic]] | FloatArray,
    ready: npt.NDArray[np.bool_],
    confidence: FloatArray,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """The answers' numbers and booleans as rows of ``n`` values each, one after the other, in
    the template's order; checked against the template's methods and metrics."""
    if scores.shape[0] != template.methods or len(metrics) != template.metrics:
        raise ValueError("the template was made for other methods")
    # The numbers of all rows go into one orjson call. (np.concatenate of raveled rows: vstack's
    # per-call cost is several times higher; the metric rows go into the same call, unstacked,
    # as float64 like the first rows.)
    numbers = np.concatenate((combined, confidence, scores.ravel(), *metrics), dtype=np.float64)
    if numbers.size != (2 + template.methods + template.metrics) * n:
        raise ValueError("a metric row does not have one value per event")
    return numbers, np.concatenate((flagged, ready, alarms.ravel()))


def render_results(
    template: ResultTemplate,
    combined: FloatArray,
    flagged: npt.NDArray[np.bool_],
    scores: FloatArray,
    alarms: npt.NDArray[np.bool_],
    metrics: Sequence[npt.NDArray[np.generic]] | FloatArray,
    explanations: Sequence[str],
    services: Sequence[str],
    events_seen: npt.NDArray[np.int64],
    ready: npt.NDArray[np.bool_],
    confidence: FloatArray,
) -> list[bytes]:
    """Each event's answer filled into ``template``.

    ``scores`` and ``alarms`` have one row per method, ``metrics`` one row per metric (each
    method's in turn, in the template's order: a 2-D array or a list of rows, numbers of any
    dtype written as float64); every other array has one value per event.
    """
    n = len(services)
    numbers, booleans = _value_rows(
        template, n, combined, flagged, scores, alarms, metrics, ready, confidence
    )
    if n == 1:
        dumps = orjson.dumps
        texts = (
            json_values(numbers)
            + json_values(booleans)
            + [dumps(explanations[0])[1:-1], dumps(services[0])[1:-1]]
            + json_values(events_seen)
        )
        # The template's own arguments picked in one C call.
        return [template.text % template.pick(texts)]
    literals, arguments = _batch_layout(
        template,
        numbers.reshape(-1, n),
        booleans.reshape(-1, n),
        explanations,
        services,
        events_seen,
    )
    form = b"%s".join(map(_format, literals))
    if not arguments:
        return [form % ()] * n
    # zip makes each event's argument tuple and "%" fills the format, both in C.
    return [form % values for values in zip(*arguments, strict=True)]


def render_joined(
    template: ResultTemplate,
    combined: FloatArray,
    flagged: npt.NDArray[np.bool_],
    scores: FloatArray,
    alarms: npt.NDArray[np.bool_],
    metrics: Sequence[npt.NDArray[np.generic]] | FloatArray,
    explanations: Sequence[str],
    services: Sequence[str],
    events_seen: npt.NDArray[np.int64],
    ready: npt.NDArray[np.bool_],
    confidence: FloatArray,
    before: bytes,
    after: bytes,
) -> bytes:
    """``before`` + the answers of ``render_results`` separated by commas + ``after``, written
    by one ``bytes.join`` of the literal pieces and the values, without an object per answer
    (no "%" per event, no argument tuples, no second copy of the whole text to join them)."""
    n = len(services)
    if n < 2:
        answers = render_results(
            template,
            combined,
            flagged,
            scores,
            alarms,
            metrics,
            explanations,
            services,
            events_seen,
            ready,
            confidence,
        )
        return before + b",".join(answers) + after
    numbers, booleans = _value_rows(
        template, n, combined, flagged, scores, alarms, metrics, ready, confidence
    )
    literals, arguments = _batch_layout(
        template,
        numbers.reshape(-1, n),
        booleans.reshape(-1, n),
        explanations,
        services,
        events_seen,
    )
    last = literals.pop()
    if not arguments:
        return before + b",".join([last] * n) + after
    # Event i's pieces at [i * stride, (i + 1) * stride): literal, value, literal, ..., literal
    # and its comma. Each column of the list is filled by one slice assignment (in C).
    stride = 2 * len(arguments) + 1
    pieces: list[bytes] = [b""] * (n * stride)
    for j, (literal, values) in enumerate(zip(literals, arguments, strict=True)):
        pieces[2 * j :: stride] = [literal] * n
        pieces[2 * j + 1 :: stride] = values
    pieces[stride - 1 :: stride] = [last + b","] * n
    pieces[0] = before + pieces[0]
    pieces[-1] = last + after
    return b"".join(pieces)


def _batch_layout(
    template: ResultTemplate,
    numbers: FloatArray,
    booleans: npt.NDArray[np.bool_],
    explanations: Sequence[str],
    services: Sequence[str],
    events_seen: npt.NDArray[np.int64],
) -> tuple[list[bytes], list[list[bytes]]]:
    """A batch's answers as literal text around the values that differ between its events:
    ``literals[0] + values[0][i] + literals[1] + ... + literals[-1]`` is event i's answer.

    A row whose text is the same for every event (many metrics, most alarms, a lone service)
    is written into the literal text once, instead of as a value of each event: about half of
    the rows of a real batch, and so half of the value texts and of the pieces to assemble."""
    rows = _row_texts(numbers, booleans, explanations, services)
    rows.append(_row_text(events_seen.reshape(1, -1))[0])
    pieces = template.pieces
    literals: list[bytes] = []
    literal = [pieces[0]]
    arguments: list[list[bytes]] = []
    for slot, row in enumerate(template.slot_rows, 1):
        text = rows[row]
        if isinstance(text, bytes):
            literal.append(text)
        else:
            literals.append(b"".join(literal))
            literal = []
            arguments.append(text)
        literal.append(pieces[slot])
    literals.append(b"".join(literal))
    return literals, arguments


def _row_text(rows: npt.NDArray[np.generic]) -> list[bytes | list[bytes]]:
    """The JSON text of each of ``rows`` (numbers or booleans, one value per event): one bytes
    where the row's values are all written the same (the same bits: equal floats such as 0.0
    and -0.0 are written differently), else each event's."""
    n = rows.shape[1]
    bits = rows.view(np.int64) if rows.dtype == np.float64 else rows
    varying = (bits[:, 1:] != bits[:, :1]).any(axis=1)
    constants = iter(json_values(rows[~varying, 0]))
    values = json_values(rows[varying])
    texts: list[bytes | list[bytes]] = []
    start = 0
    for differs in varying.tolist():
        if differs:
            texts.append(values[start : start + n])
            start += n
        else:
            texts.append(next(constants))
    return texts


def _row_texts(
    numbers: FloatArray,
    booleans: npt.NDArray[np.bool_],
    explanations: Sequence[str],
    services: Sequence[str],
) -> list[bytes | list[bytes]]:
    """Every row's text in the template's row order but the last (events seen)."""
    texts = _row_text(numbers) + _row_text(booleans)
    for strings in (explanations, services):
        first = strings[0]
        texts.append(
            orjson.dumps(first)[1:-1]
            if strings.count(first) == len(strings)
            else json_string_contents(strings)
        )
    return texts


def json_string_contents(strings: Sequence[str]) -> list[bytes]:
    """Each string's JSON text without its quotes, as orjson writes it.

    One orjson call for the whole list, split between its items: orjson's fixed cost per call
    (~1-2 us in the service's process) is most of the price of a short string. Inside a JSON
    string a quote is always escaped, so items are split at each '","' unless the text holds
    an escaped quote at all (a quoted message template, a backslash before a closing quote):
    then each string is written alone.
    """
    if not strings:
        return []
    text: bytes = orjson.dumps(strings)
    if b'\\"' in text:
        return [orjson.dumps(string)[1:-1] for string in strings]
    return text[2:-2].split(b'","')
