"""POST /score/batch's body is sent as a view of the buffer it was written into
(``render_joined_view``): the view holds the same bytes as ``render_joined`` and keeps them while
it lives, however many bodies are written meanwhile (a view still being sent by the server must
not be written over), and a buffer is reused once its views are gone."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import app.rendering as rendering
from app.rendering import render_joined, render_joined_view, result_template
from tests.test_rendering import CONFIDENCE_EVENTS, THRESHOLD, _answers


def _arguments(columns: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any, Any, Any]:
    seen = columns["seen"]
    return (
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


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(_answers(), _answers(pooled=True)), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_a_view_keeps_its_bytes_while_other_bodies_are_written(
    answers: list[tuple[Any, ...]], dropped: list[bool]
) -> None:
    held: list[tuple[memoryview, bytes]] = []
    for (methods, failed, version, columns), drop in zip(answers, dropped, strict=False):
        template = result_template(methods, failed, version)
        arguments = _arguments(columns)
        view = render_joined_view(template, *arguments, b"<", b">")
        # Written again (into another buffer: this view holds its own) and copied.
        expected = render_joined(template, *arguments, b"<", b">")
        assert view.nbytes == len(view) == len(expected)
        assert bytes(view) == expected
        held.append((view, expected))
        if drop:  # the server is done sending some of them
            held.pop(0)
    for view, expected in held:
        assert bytes(view) == expected


def test_a_buffer_is_reused_once_nothing_refers_to_it() -> None:
    first = rendering._body_buffer(1000)
    view = first[:10].data
    del first
    other = rendering._body_buffer(1000)
    assert not np.shares_memory(other, np.frombuffer(view, dtype=np.uint8))
    address = np.frombuffer(view, dtype=np.uint8).ctypes.data
    del view, other
    again = rendering._body_buffer(500)
    assert again.ctypes.data == address  # reused, not fresh pages
    held = [rendering._body_buffer(100) for _ in range(rendering.KEPT_BUFFERS + 2)]
    addresses = {buffer.ctypes.data for buffer in held}
    assert len(addresses) == len(held)  # every one held is a buffer of its own
    assert len(rendering._kept.buffers) <= rendering.KEPT_BUFFERS
