"""Answers written straight to JSON bytes are byte for byte what orjson writes for the same
answer built as dicts (the shape the engine built before, and the response schema's key order)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app.rendering as rendering
from app.rendering import (
    FailedMethod,
    MethodLayout,
    json_string_contents,
    json_values,
    render_joined,
    render_results,
    result_template,
)

THRESHOLD = 0.5
CONFIDENCE_EVENTS = 100

# Any text: quotes, backslashes, "%" (the template is a printf format), non-ASCII, controls;
# and the texts that end a JSON string or a value early if an escape is misread.
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(['",', "\\", '"', '","', "a\\", '\\"', "]", ",", "\u00e9\x00\n"]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)


def _as_dicts(
    methods: list[MethodLayout],
    failed: list[FailedMethod],
    version: str,
    columns: dict[str, Any],
) -> list[dict[str, Any]]:
    """The answer as the engine used to build it: dicts, NaN as None, in the schema's order."""

    def number(value: float) -> float | None:
        return None if np.isnan(value) else value

    answers = []
    for i, service in enumerate(columns["services"]):
        by_method: dict[str, Any] = {}
        row = 0
        for m, method in enumerate(methods):
            score = float(columns["scores"][m, i])
            by_method[method.name] = {
                "anomaly_score": score,
                "is_anomaly": score >= THRESHOLD,
                "method": method.label,
                "metrics": {
                    name: number(float(columns["metrics"][row + k, i]))
                    for k, name in enumerate(method.metrics)
                },
            }
            row += len(method.metrics)
        for failure in failed:
            by_method[failure.name] = {
                "anomaly_score": 0.0,
                "is_anomaly": False,
                "method": failure.label,
                "metrics": None,
                "degraded": failure.reason,
            }
        seen = int(columns["seen"][i])
        answers.append(
            {
                "is_anomaly": bool(columns["flagged"][i]),
                "anomaly_score": float(columns["combined"][i]),
                "methods": by_method,
                "model_version": version,
                "explanation": columns["explanations"][i],
                "service": service,
                "service_events_seen": seen,
                "baseline_ready": bool(columns["ready"][i]),
                "confidence": seen / (seen + CONFIDENCE_EVENTS),
            }
        )
    return answers


@st.composite
def _answers(draw: st.DrawFn, pooled: bool = False) -> tuple[Any, ...]:
    """``pooled``: values drawn from a few per answer, so that many rows are the same for every
    event (the batch's format then holds them) and others differ in one event only."""
    n = draw(st.integers(2, 6) if pooled else st.integers(1, 6))
    names = draw(st.lists(texts, max_size=4, unique=True))
    methods = [
        MethodLayout(name, draw(texts), tuple(draw(st.lists(texts, max_size=4, unique=True))))
        for name in names
    ]
    failed_names = draw(st.lists(texts.filter(lambda t: t not in names), max_size=2, unique=True))
    failed = [FailedMethod(name, draw(texts), draw(texts)) for name in failed_names]
    n_metrics = sum(len(m.metrics) for m in methods)

    def pool(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.sampled_from(draw(st.lists(values, min_size=1, max_size=2))) if pooled else values

    def row(k: int, values: st.SearchStrategy[float]) -> Any:
        return np.array(draw(st.lists(pool(values), min_size=k * n, max_size=k * n))).reshape(k, n)

    strings = pool(texts)

    columns = {
        "combined": row(1, st.floats(0.0, 1.0))[0],
        "flagged": np.array(draw(st.lists(pool(st.booleans()), min_size=n, max_size=n))),
        "scores": row(len(methods), st.floats(0.0, 1.0)),
        "metrics": row(n_metrics, floats),
        "explanations": draw(st.lists(strings, min_size=n, max_size=n)),
        "services": draw(st.lists(strings, min_size=n, max_size=n)),
        "seen": np.array(draw(st.lists(pool(st.integers(0, 2**40)), min_size=n, max_size=n))),
        "ready": np.array(draw(st.lists(pool(st.booleans()), min_size=n, max_size=n))),
    }
    return methods, failed, draw(texts), columns


@settings(max_examples=300, deadline=None)
@given(st.one_of(_answers(), _answers(pooled=True)))
def test_rendered_answers_are_the_bytes_orjson_writes_for_the_dicts(
    answer: tuple[Any, ...],
) -> None:
    methods, failed, version, columns = answer
    seen = columns["seen"]
    arguments = (
        columns["combined"],
        columns["flagged"],
        columns["scores"].astype(np.float64),
        columns["scores"] >= THRESHOLD,
        columns["metrics"].astype(np.float64),
        columns["explanations"],
        columns["services"],
        seen,
        columns["ready"],
        seen / (seen + CONFIDENCE_EVENTS),
    )
    rendered = render_results(result_template(methods, failed, version), *arguments)
    expected = _as_dicts(methods, failed, version, columns)
    assert rendered == [orjson.dumps(answer) for answer in expected]
    # The same answers written into one text (POST /score/batch's body).
    joined = render_joined(result_template(methods, failed, version), *arguments, b"<%", b"%>")
    assert joined == b"<%" + b",".join(rendered) + b"%>"
    # Both ways of writing a batch's body (the compiled kernels or, without numba, joining
    # bytes objects), and the kernels' Python sources, write the same bytes.
    if len(columns["services"]) > 1:
        template = result_template(methods, failed, version)
        rows = rendering._value_rows(
            template,
            len(columns["services"]),
            *arguments[:5],
            columns["ready"],
            arguments[-1],
        )
        layout = (
            template,
            rows[0].reshape(-1, len(seen)),
            rows[1].reshape(-1, len(seen)),
            *arguments[5:8],
            b"<%",
            b"%>",
        )
        assert rendering._joined_by_pieces(*layout) == joined
        assert rendering._joined_by_kernel(*layout) == joined
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rendering, "_compiled_scan", rendering._scan_values)
            patch.setattr(rendering, "_compiled_size", rendering._answers_size)
            patch.setattr(rendering, "_compiled_write", rendering._write_answers)
            assert rendering._joined_by_kernel(*layout) == joined
    # Each event rendered alone (the single-event path) gives the same bytes as in the batch.
    template = result_template(methods, failed, version)
    for i, answer_bytes in enumerate(rendered):
        one = slice(i, i + 1)
        alone = render_results(
            template,
            columns["combined"][one],
            columns["flagged"][one],
            columns["scores"][:, one].astype(np.float64),
            columns["scores"][:, one] >= THRESHOLD,
            columns["metrics"][:, one].astype(np.float64),
            columns["explanations"][one],
            columns["services"][one],
            seen[one],
            columns["ready"][one],
            (seen / (seen + CONFIDENCE_EVENTS))[one],
        )
        assert alone == [answer_bytes]


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, max_size=20))
def test_numbers_are_written_as_orjson_writes_python_floats(values: list[float]) -> None:
    assert json_values(np.array(values, dtype=np.float64)) == [
        orjson.dumps(value) for value in values
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(texts, st.sampled_from(['",', "\\", '"', '","', "a\\"])), max_size=8))
def test_string_contents_are_what_orjson_writes_between_the_quotes(strings: list[str]) -> None:
    assert json_string_contents(strings) == [orjson.dumps(s)[1:-1] for s in strings]


def test_a_template_refuses_arrays_made_for_other_methods() -> None:
    template = result_template([MethodLayout("a", "A", ("x",))], [], "v1")
    one = np.zeros(1)
    with pytest.raises(ValueError, match="other methods"):
        render_results(
            template, one, one > 0, np.zeros((1, 1)), np.zeros((1, 1)) > 0, np.zeros((2, 1)),
            ["e"], ["s"], np.zeros(1, dtype=np.int64), one > 0, one,
        )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            floats.map(lambda x: np.array([x, -x, 0.0, -0.0])),
            st.lists(texts, max_size=3),
            st.lists(st.booleans(), max_size=3).map(np.array),
            st.lists(st.integers(-(2**62), 2**62), max_size=3).map(np.array),
        ),
        max_size=5,
    )
)
def test_the_scan_finds_each_value_of_orjsons_text(parts: list[Any]) -> None:
    text = orjson.dumps(parts, option=orjson.OPT_SERIALIZE_NUMPY)
    values = [
        orjson.dumps(value)[1:-1] if isinstance(value, str) else orjson.dumps(value)
        for part in parts
        for value in (part.tolist() if isinstance(part, np.ndarray) else part)
    ]
    array = np.frombuffer(text, dtype=np.uint8)
    for scan in (rendering._scan_values, rendering._compiled_scan):
        assert scan is not None
        starts = np.empty(len(values), dtype=np.int64)
        ends = np.empty(len(values), dtype=np.int64)
        assert scan(array, starts, ends) == len(values)
        assert [text[a:b] for a, b in zip(starts, ends, strict=True)] == values
        # One value too many for the arrays is reported, not written past them.
        if values:
            assert scan(array, starts[1:].copy(), ends[1:].copy()) == len(values)
