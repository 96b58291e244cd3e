"""How the last step of rendering a 1,000-event batch could write its bytes (app/rendering.py).

    .venv/bin/python -m bench.render_forms

``render_results`` fills each event's answer with ``bytes %`` on a template of ~57 ``%s`` slots
and POST /score/batch then joins the 1,000 answers into one body. This captures the arguments of
a real call (bench (c)'s bodies, scored by a fresh service) and times, on those arguments, in
alternating rounds, three ways to the same body (asserted byte for byte):

* per event: ``template % values`` for each event, then the one join of the route (today);
* one format: a template repeated for the whole batch, ``%`` once over all values;
* one join: the template's literal pieces and the values interleaved in one list, one
  ``bytes.join`` (no per-event objects, no second copy of the body).

A measurement for the engine's owners, not a code path: nothing in the service uses it. (The
service now writes a batch's body with ``render_joined``: the third form, after the rows whose
text is the same for every event have been folded into the literal pieces.)
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app import engine as engine_module
from app.factory import create_app
from app.rendering import ResultTemplate, json_values, render_joined, render_results
from app.routers.scoring import _results_array
from app.schemas.columns import read_batch
from app.settings import Settings
from bench.http import _batch_bodies


def _capture() -> tuple[ResultTemplate, tuple[Any, ...]]:
    captured: list[tuple[ResultTemplate, tuple[Any, ...]]] = []

    def spy(template: ResultTemplate, *arguments: Any) -> list[bytes]:
        captured.append((template, arguments))
        return render_results(template, *arguments)

    engine_module.render_results = spy  # type: ignore[attr-defined,assignment]

    async def score() -> None:
        with tempfile.TemporaryDirectory() as folder:
            app = create_app(Settings(artifacts_dir=Path(folder)))
            async with app.router.lifespan_context(app):
                engine = app.state.insighthub.engine
                for body in _batch_bodies():
                    columns = read_batch(body)
                    assert columns is not None
                    engine.score_columns(columns)

    asyncio.run(score())
    engine_module.render_results = render_results  # type: ignore[attr-defined]
    return captured[-1]


def main() -> None:
    template, arguments = _capture()
    combined, flagged, scores, alarms, metrics, explanations, services, seen, ready, conf = (
        arguments
    )
    n = len(services)
    # The value rows exactly as render_results makes them.
    numbers = np.concatenate((combined, conf, scores.ravel(), *metrics), dtype=np.float64)
    texts = (
        json_values(numbers)
        + json_values(np.concatenate((flagged, ready, alarms.ravel())))
        + [orjson.dumps(text)[1:-1] for text in explanations]  # the template has the quotes
        + [orjson.dumps(service)[1:-1] for service in services]
        + json_values(seen)
    )
    rows = [texts[start : start + n] for start in (template.rows * n).tolist()]
    text = template.text
    slots = len(rows)

    def per_event() -> bytes:
        return _results_array([text % values for values in zip(*rows, strict=True)])

    whole = b'{"results":[' + b",".join([text] * n) + b"]}"

    def one_format() -> bytes:
        return whole % tuple(chain.from_iterable(zip(*rows, strict=True)))

    # The literal pieces between the slots ("%%" is a literal "%"; "%s" is the only conversion).
    pieces = [p.replace(b"\0", b"%") for p in re.split(rb"%s", text.replace(b"%%", b"\0"))]
    assert len(pieces) == slots + 1
    stride = 2 * slots + 1
    literal_rows = [[piece] * n for piece in [*pieces[:-1], pieces[-1] + b","]]

    def one_join() -> bytes:
        flat: list[bytes] = [b""] * (n * stride)
        for j, row in enumerate(rows):
            flat[2 * j + 1 :: stride] = row
        for j, literal in enumerate(literal_rows):
            flat[2 * j :: stride] = literal
        flat[0] = b'{"results":[' + pieces[0]
        flat[-1] = pieces[-1] + b"]}"
        return b"".join(flat)

    forms: dict[str, Callable[[], bytes]] = {
        "per event % + join (today)": per_event,
        "one % over the batch": one_format,
        "one join of pieces and values": one_join,
    }
    expected = per_event()
    for form in forms.values():
        assert form() == expected
    # What the service writes (the same body).
    joined = render_joined(
        template, combined, flagged, scores, alarms, metrics, explanations, services, seen,
        ready, conf, b'{"results":[', b"]}",
    )  # fmt: skip
    assert joined == expected
    timings: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(7):
        for name, form in forms.items():
            started = time.thread_time()
            for _ in range(10):
                form()
            timings[name].append((time.thread_time() - started) / 10)
    print(f"{n} events, {slots} slots per answer, {len(expected):,} bytes; CPU ms, median of 7:")
    for name, values in timings.items():
        print(f"  {name:<32} {statistics.median(values) * 1e3:6.2f}")


if __name__ == "__main__":
    main()
