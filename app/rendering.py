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

Where numba is installed, a batch's body is not assembled from Python bytes objects at all: one
orjson call writes every value of the batch, a compiled kernel finds where each value's text
lies in it and copies the template's literal pieces and those slices into the body (splitting
the text into ~50,000 bytes objects and joining them again was most of the cost).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.compiled import compile_kernel

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
    return bytes(
        render_joined_view(
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
            before,
            after,
        )
    )


def render_joined_view(
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
) -> memoryview:
    """``render_joined``'s text, not copied into a bytes object: a view of the buffer it was
    written into, which is not written again while the view (or anything made from it) lives.
    A 1,000-event body is ~2.5 MB, and copying it into fresh bytes cost ~0.7 ms, a fifth of
    rendering; the server can send the view as it is (``transport.write`` takes any buffer)."""
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
        return memoryview(before + b",".join(answers) + after)
    numbers, booleans = _value_rows(
        template, n, combined, flagged, scores, alarms, metrics, ready, confidence
    )
    if _compiled_write is None:
        return memoryview(
            _joined_by_pieces(
                template,
                numbers.reshape(-1, n),
                booleans.reshape(-1, n),
                explanations,
                services,
                events_seen,
                before,
                after,
            )
        )
    return _joined_by_kernel(
        template,
        numbers.reshape(-1, n),
        booleans.reshape(-1, n),
        explanations,
        services,
        events_seen,
        before,
        after,
    )


def _joined_by_pieces(
    template: ResultTemplate,
    numbers: FloatArray,
    booleans: npt.NDArray[np.bool_],
    explanations: Sequence[str],
    services: Sequence[str],
    events_seen: npt.NDArray[np.int64],
    before: bytes,
    after: bytes,
) -> bytes:
    """``render_joined``'s text by one ``bytes.join`` of the literal pieces and the values'
    bytes (without numba): ``numbers`` and ``booleans`` are the rows of ``_value_rows``."""
    n = len(services)
    literals, arguments = _batch_layout(
        template, numbers, booleans, explanations, services, events_seen
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


def _joined_by_kernel(
    template: ResultTemplate,
    numbers: FloatArray,
    booleans: npt.NDArray[np.bool_],
    explanations: Sequence[str],
    services: Sequence[str],
    events_seen: npt.NDArray[np.int64],
    before: bytes,
    after: bytes,
) -> memoryview:
    """``_joined_by_pieces``'s text written by the compiled kernels from one orjson text of
    every value: the values' text is orjson's (floats' shortest round-trip text, NaN as null,
    strings' escapes), only copied into place."""
    assert _compiled_scan is not None
    assert _compiled_size is not None
    assert _compiled_write is not None
    n = numbers.shape[1]
    # A row whose values are all written the same (the same bits: equal floats such as 0.0 and
    # -0.0 are written differently) is written once, not once per event: about half of a real
    # batch's rows, and orjson's float text is the largest cost left.
    parts: list[object] = []
    firsts: list[IntArray] = []
    same_rows: list[npt.NDArray[np.bool_]] = []
    count = 0
    for matrix, bits in ((numbers, numbers.view(np.int64)), (booleans, booleans)):
        same = (bits[:, 1:] == bits[:, :1]).all(axis=1)
        varying = ~same
        n_varying = int(np.count_nonzero(varying))
        parts += [matrix[varying], matrix[same, 0]]
        # Row r's value of event i is the (first[r] + i)-th scalar of the text, or the
        # first[r]-th for every event where the row is the same for all.
        firsts.append(
            count
            + np.where(varying, (np.cumsum(varying) - 1) * n, n_varying * n + np.cumsum(same) - 1)
        )
        same_rows.append(same)
        count += n_varying * n + len(same) - n_varying
    for values in (_listed(explanations), _listed(services), events_seen):
        same_row = (
            values.count(values[0]) == n if isinstance(values, list | tuple) else _same(values)
        )
        parts.append(values[:1] if same_row else values)
        firsts.append(np.array([count]))
        same_rows.append(np.array([same_row]))
        count += 1 if same_row else n
    dumped = orjson.dumps(parts, option=_NUMPY)
    text = np.frombuffer(dumped, dtype=np.uint8)
    starts = np.empty(count, dtype=np.int64)
    ends = np.empty(count, dtype=np.int64)
    if _compiled_scan(text, starts, ends) != count:
        raise ValueError("the values' text does not hold one value per slot")
    first = np.concatenate(firsts)
    # The rows whose text is the same for all events go into the literal text between the
    # others (about half of the slots: fewer, longer copies per event).
    same_list, first_list = np.concatenate(same_rows).tolist(), first.tolist()
    pieces = template.pieces
    literals: list[bytes] = [pieces[0]]
    slots: list[int] = []
    for slot, row in enumerate(template.slot_rows, 1):
        if same_list[row]:
            k = first_list[row]
            literals[-1] += dumped[starts[k] : ends[k]]
            literals[-1] += pieces[slot]
        else:
            slots.append(first_list[row])
            literals.append(pieces[slot])
    literal_text = np.frombuffer(b"".join(literals), dtype=np.uint8)
    literal_ends = np.cumsum([len(literal) for literal in literals], dtype=np.int64)
    first_of_slot = np.array(slots, dtype=np.int64)
    head, tail = np.frombuffer(before, dtype=np.uint8), np.frombuffer(after, dtype=np.uint8)
    size = _compiled_size(starts, ends, literal_ends, first_of_slot, n, head.size + tail.size)
    body = _body_buffer(size)
    _compiled_write(
        body, text, starts, ends, literal_text, literal_ends, first_of_slot, n, head, tail
    )
    return body[:size].data


# The body is written into a buffer kept from one batch to the next: a fresh buffer of a few MB
# is fresh pages, each 4 KiB a page fault, which cost more than writing the body. The body is
# handed on as a view of that buffer, so a buffer is written again only once nothing refers to
# it any more (a view of it still being sent by the server holds it): each thread keeps a few,
# and uses one that only its list refers to. Larger bodies than this get a buffer of their own.
KEPT_BUFFER_BYTES = 16 << 20
KEPT_BUFFERS = 4
_kept = threading.local()
# sys.getrefcount of a kept buffer that nothing else refers to: the list, the loop's name and
# getrefcount's own argument. A view of it (a slice, a memoryview of one) adds its reference.
_FREE_REFERENCES = 3


def _body_buffer(size: int) -> npt.NDArray[np.uint8]:
    if size > KEPT_BUFFER_BYTES:
        return np.empty(size, dtype=np.uint8)
    buffers: list[npt.NDArray[np.uint8]] | None = getattr(_kept, "buffers", None)
    if buffers is None:
        buffers = _kept.buffers = []
    for index in range(len(buffers)):  # not enumerate: its reused tuple holds a reference
        buffer = buffers[index]
        if sys.getrefcount(buffer) == _FREE_REFERENCES:
            if buffer.size < size:
                buffer = buffers[index] = np.empty(size, dtype=np.uint8)
            return buffer
    buffer = np.empty(size, dtype=np.uint8)
    if len(buffers) < KEPT_BUFFERS:
        buffers.append(buffer)
    return buffer


def _same(row: npt.NDArray[np.int64]) -> bool:
    return bool((row[1:] == row[0]).all())


def _listed(strings: Sequence[str]) -> list[str] | tuple[str, ...]:
    # orjson writes lists and tuples only.
    return strings if isinstance(strings, list | tuple) else list(strings)


def _scan_values(text: npt.NDArray[np.uint8], starts: IntArray, ends: IntArray) -> int:
    """Where each scalar of ``text`` lies, in order (orjson's text of arrays and lists of
    numbers, booleans, null or strings, nested): ``text[starts[k]:ends[k]]`` is the k-th, a
    string without its quotes. Returns how many there are (one more than fit when too many).

    Inside orjson's string text a quote is always escaped and a backslash always starts a
    two-byte escape or a ``\\uXXXX`` whose last four bytes are hex digits, so skipping the byte
    after each backslash finds the closing quote; a number's text holds no comma nor bracket."""
    count = 0
    size = text.size
    i = 0
    while i < size:
        c = text[i]
        if c == 91 or c == 93 or c == 44:  # "[", "]", ","
            i += 1
            continue
        if count == starts.size:
            return count + 1
        if c == 34:  # '"'
            j = i + 1
            # The next quote or backslash, by steps of one byte whatever the byte: each step's
            # index then does not wait on the byte before it (stepping by 2 or 1 on each byte's
            # value, as a select, chained every load: ~2.5 ns a byte against ~0.7).
            while True:
                while text[j] != 34 and text[j] != 92:
                    j += 1
                if text[j] == 34:
                    break
                j += 2  # a backslash and the byte it escapes
            starts[count] = i + 1
            ends[count] = j
            i = j + 1
        else:
            j = i + 1
            while text[j] != 44 and text[j] != 93:
                j += 1
            starts[count] = i
            ends[count] = j
            i = j
        count += 1
    return count


def copy_bytes(
    out: npt.NDArray[np.uint8],
    at: int,
    source: npt.NDArray[np.uint8],
    start: int,
    length: int,
) -> None:
    """``out[at : at + length] = source[start : start + length]``; compiled, one memcpy (numba
    copies a slice byte by byte, at several times the cost for the body's ~100,000 copies)."""
    out[at : at + length] = source[start : start + length]


def _answers_size(
    starts: IntArray,
    ends: IntArray,
    literal_ends: IntArray,
    first: IntArray,
    n: int,
    around: int,
) -> int:
    """The length of ``_write_answers``'s text (``around``: ``before`` and ``after``'s)."""
    slots = first.size
    size = around + n * int(literal_ends[slots]) + n - 1
    for j in range(slots):
        for k in range(first[j], first[j] + n):
            size += int(ends[k] - starts[k])
    return size


def _write_answers(
    out: npt.NDArray[np.uint8],
    text: npt.NDArray[np.uint8],
    starts: IntArray,
    ends: IntArray,
    literals: npt.NDArray[np.uint8],
    literal_ends: IntArray,
    first: IntArray,
    n: int,
    before: npt.NDArray[np.uint8],
    after: npt.NDArray[np.uint8],
) -> None:
    """Writes into ``out`` ``before``, then ``n`` answers separated by commas, then ``after``:
    answer i is the literal pieces with slot j's value between pieces j and j + 1, the value
    being the ``first[j] + i``-th scalar of ``text`` (as ``_scan_values`` found them). ``out``
    holds at least ``_answers_size`` bytes."""
    slots = first.size
    copy_bytes(out, 0, before, 0, before.size)
    at = before.size
    for i in range(n):
        if i:
            out[at] = 44  # ","
            at += 1
        piece = 0
        for j in range(slots + 1):
            end = literal_ends[j]
            copy_bytes(out, at, literals, piece, end - piece)
            at += end - piece
            piece = end
            if j < slots:
                k = first[j] + i
                copy_bytes(out, at, text, starts[k], ends[k] - starts[k])
                at += ends[k] - starts[k]
    copy_bytes(out, at, after, 0, after.size)


def _compile_copy_bytes() -> bool:
    """Gives numba ``copy_bytes`` as a call of LLVM's memcpy; False without numba."""
    try:
        from numba.core import cgutils, types
        from numba.extending import intrinsic, overload
    except ImportError:  # pragma: no cover - numba is a dependency; this keeps numpy-only installs
        return False

    @intrinsic
    def memcpy(
        typingctx: object, out: Any, at: Any, source: Any, start: Any, length: Any
    ) -> tuple[Any, Callable[..., None]]:
        def codegen(context: Any, builder: Any, signature: Any, arguments: Any) -> None:
            target = context.make_array(signature.args[0])(context, builder, arguments[0])
            origin = context.make_array(signature.args[2])(context, builder, arguments[2])
            cgutils.raw_memcpy(  # type: ignore[no-untyped-call]
                builder,
                builder.gep(target.data, [arguments[1]]),
                builder.gep(origin.data, [arguments[3]]),
                arguments[4],
                1,
            )

        return types.void(out, at, source, start, length), codegen

    @overload(copy_bytes)
    def compiled_copy_bytes(
        out: Any, at: Any, source: Any, start: Any, length: Any
    ) -> Callable[..., None]:
        def call(out: Any, at: Any, source: Any, start: Any, length: Any) -> None:
            # numba passes the typing context itself.
            memcpy(out, at, source, start, length)  # type: ignore[call-arg]

        return call

    return True


# Bytes seen through numpy are read-only arrays: the kernels take them as they are, uncopied.
_TEXT = "Array(uint8, 1, 'C', readonly=True)"
_compiled_scan = compile_kernel(_scan_values, f"int64({_TEXT}, int64[::1], int64[::1])")
_compiled_size = compile_kernel(
    _answers_size, "int64(int64[::1], int64[::1], int64[::1], int64[::1], int64, int64)"
)
_compiled_write = (
    compile_kernel(
        _write_answers,
        f"void(uint8[::1], {_TEXT}, int64[::1], int64[::1], {_TEXT}, int64[::1], int64[::1],"
        f" int64, {_TEXT}, {_TEXT})",
    )
    if _compile_copy_bytes()
    else None
)


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
