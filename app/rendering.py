"""Score results written straight to JSON bytes from the method x event matrices.

Building ~16 dicts per event and then serialising them was most of the engine's cost for one
event and, through the garbage collector, a large share for a batch. Here every number of a call
is written by one orjson call on a numpy matrix (orjson writes a float64 exactly as it writes the
Python float: same shortest round-trip text, NaN and infinities as ``null``), and each event's
object is one ``bytes %`` of a template compiled once per set of methods. The bytes are those
``orjson.dumps`` wrote for the dicts (the key order is the response schema's, as before).
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
    # A JSON string as orjson writes it, with "%" doubled: the template is a printf format.
    return orjson.dumps(value).replace(b"%", b"%%")


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


def result_template(
    methods: Sequence[MethodLayout], failed: Sequence[FailedMethod], model_version: str
) -> ResultTemplate:
    """The template of an answer with ``methods`` (in order) and ``failed`` methods after them.

    A failed method's entry is constant text. The arguments, each already JSON text, are the
    rows written by ``render_results``, in this order: combined score and confidence, each
    method's score, each metric, then is_anomaly, baseline_ready, each method's alarm, then
    explanation, service and events seen.
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
    entries = [
        _literal(m.name)
        + b':{"anomaly_score":%s,"is_anomaly":%s,"method":'
        + _literal(m.label)
        + b',"metrics":{'
        + b",".join(_literal(metric) + b":%s" for metric in m.metrics)
        + b"}}"
        for m in methods
    ]
    entries += [
        _literal(f.name)
        + b':{"anomaly_score":0.0,"is_anomaly":false,"method":'
        + _literal(f.label)
        + b',"metrics":null,"degraded":'
        + _literal(f.reason)
        + b"}"
        for f in failed
    ]
    text = (
        b'{"is_anomaly":%s,"anomaly_score":%s,"methods":{'
        + b",".join(entries)
        + b'},"model_version":'
        + _literal(model_version)
        + b',"explanation":%s,"service":%s,"service_events_seen":%s,"baseline_ready":%s,'
        b'"confidence":%s}'
    )
    return ResultTemplate(
        text, np.array(rows, dtype=np.int64), n_methods, n_metrics, itemgetter(*rows)
    )


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
    if scores.shape[0] != template.methods or len(metrics) != template.metrics:
        raise ValueError("the template was made for other methods")
    dumps = orjson.dumps
    # Rows of n values each, one after the other: the numbers of all rows in one orjson call.
    # (np.concatenate of raveled rows: vstack's per-call cost is several times higher; the
    # metric rows go into the same call, unstacked, as float64 like the first rows.)
    numbers = np.concatenate((combined, confidence, scores.ravel(), *metrics), dtype=np.float64)
    if numbers.size != (2 + template.methods + template.metrics) * n:
        raise ValueError("a metric row does not have one value per event")
    texts = (
        json_values(numbers)
        + json_values(np.concatenate((flagged, ready, alarms.ravel())))
        + [dumps(text) for text in explanations]
        + [dumps(service) for service in services]
        + json_values(events_seen)
    )
    if n == 1:
        # The rows' slices and zip below give this same tuple, at several times the cost.
        return [template.text % template.pick(texts)]
    # The template's arguments row by row (slices copy pointers in C); zip makes each event's
    # argument tuple and "%" fills the template, both in C as well.
    arguments = [texts[start : start + n] for start in (template.rows * n).tolist()]
    text = template.text
    return [text % values for values in zip(*arguments, strict=True)]
