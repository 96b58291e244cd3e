"""Where a 1,000-event ``POST /score/batch`` spends the server's CPU, in-process.

    .venv/bin/python -m bench.batch_where [--rounds 5] [--requests 12]

The ASGI app (``app.main``'s factory, started through its lifespan) is called directly, no
server and no sockets, with bench (c)'s four bodies of 1,000 events of 100 services, one request
at a time. The stages of the route are timed by wrapping them in place: the column-wise body
check (``read_batch``), the engine (``engine.score_columns_view``, which writes the answer's
body; ``score_columns`` on the route's path), the answer's assembly (``_results_array``, the
route's path only); what is left of the whole request is the guard, FastAPI's routing and
dependencies, metrics and the hand-over of the answer. The ceiling app (bench/ceiling.py, same
request model, a constant answer of the same size) is called the same way. CPU time of this
thread (``time.thread_time``), median over rounds of the mean per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app import engine as engine_module
from app.factory import create_app
from app.rendering import render_joined_view, render_results
from app.routers import scoring
from app.settings import Settings
from bench.http import _batch_bodies


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/score/batch",
        "raw_path": b"/score/batch",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }


async def _call(app: Any, body: bytes) -> int:
    """One request; the answer's status (the body is dropped, as the socket would take it)."""
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # no disconnect while the answer is being sent
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(body), receive, send)
    return status


class _Stages:
    """CPU time spent inside wrapped functions, per stage, and in the garbage collector (which
    runs inside whichever stage allocates when a generation fills)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            name = f"gc generation {info['generation']} (inside the stages above)"
            self.seconds[name] += time.thread_time() - self._gc_started

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.thread_time() - started

        return timed


async def _measure(
    app: Any, bodies: list[bytes], rounds: int, requests: int, stages: _Stages
) -> dict[str, float]:
    for body in bodies:  # warm-up: first-call caches, page faults
        assert await _call(app, body) == 200
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        stages.seconds.clear()
        started = time.thread_time()
        for i in range(requests):
            await _call(app, bodies[i % len(bodies)])
        whole = time.thread_time() - started
        figures = {name: seconds / requests for name, seconds in stages.seconds.items()}
        figures["whole"] = whole / requests
        per_round.append(figures)
    return {name: statistics.median(r.get(name, 0.0) for r in per_round) for name in per_round[0]}


async def _service(bodies: list[bytes], rounds: int, requests: int) -> dict[str, float]:
    stages = _Stages()
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(artifacts_dir=Path(folder)))
        async with app.router.lifespan_context(app):
            engine = app.state.insighthub.engine
            engine_module.render_results = stages.wrap(  # type: ignore[attr-defined]
                "  of which rendering", render_results
            )
            engine_module.render_joined_view = stages.wrap(  # type: ignore[attr-defined]
                "  of which rendering", render_joined_view
            )
            engine.score_columns = stages.wrap("engine", engine.score_columns)
            engine.score_columns_view = stages.wrap("engine", engine.score_columns_view)
            engine.score_json = stages.wrap("engine", engine.score_json)
            scoring.read_batch = stages.wrap("validation", scoring.read_batch)  # type: ignore[attr-defined]
            scoring._results_array = stages.wrap("answer", scoring._results_array)
            figures: dict[str, float] = await _measure(app, bodies, rounds, requests, stages)
            return figures


async def _ceiling(bodies: list[bytes], rounds: int, requests: int, size: int) -> float:
    import os

    os.environ["BENCH_BATCH_BYTES"] = str(size)
    import bench.ceiling

    app: FastAPI = bench.ceiling.app
    figures: dict[str, float] = await _measure(app, bodies, rounds, requests, _Stages())
    return figures["whole"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=12, help="requests per round")
    parser.add_argument(
        "--canned",
        action="store_true",
        help="the engine answers copies of its first results (bench/edge_app.py): the edge alone",
    )
    args = parser.parse_args()
    if args.canned:
        import bench.edge_app  # noqa: F401  (patches the engine's class)
    bodies = _batch_bodies()
    figures = asyncio.run(_service(bodies, args.rounds, args.requests))
    ceiling = asyncio.run(_ceiling(bodies, args.rounds, args.requests * 2, 2_160_000))
    stages = ("engine", "validation", "answer")
    rest = figures["whole"] - sum(figures.get(name, 0.0) for name in stages)
    print(f"CPU ms per 1,000-event request, median of {args.rounds} rounds:")
    shown = ("whole", "engine", "  of which rendering", "validation", "answer")
    for name in (*shown, *sorted(k for k in figures if k.startswith("gc"))):
        print(f"  {name:<52} {figures.get(name, 0.0) * 1e3:7.3f}")
    print(f"  {'rest (guard, routing, dependencies, metrics, send)':<52} {rest * 1e3:7.3f}")
    print(f"  {'outside the engine':<52} {(figures['whole'] - figures['engine']) * 1e3:7.3f}")
    print(f"  {'ceiling app, whole request':<52} {ceiling * 1e3:7.3f}")


if __name__ == "__main__":
    main()
