"""Old (this package's stores, as at 5e6acec; patterns as at 431d57c) against current online
stores, in one process: ``python -m tests.reference.timing [store ...]`` prints microseconds per
event for a batch of one and of 1,000, old and new alternating, median of 7 rounds, after 10,000
warm-up events of 50 services (bench (f)'s stream). A measuring aid, not a test."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from app.baselines import BaselineStore
from app.events import EventBatch, parse_events
from app.forecasts import ForecastStore
from app.patterns import PatternStore
from app.schemas.events import LogEvent
from app.sequences import SequenceStore
from app.templates import TemplateStore
from app.windows import WindowStore
from bench.common import event_stream
from tests.reference import (
    baselines_scalar,
    forecasts_scalar,
    patterns_scalar,
    sequences_scalar,
    templates_scalar,
    windows_scalar,
)

STORES: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
    "baselines": (
        partial(baselines_scalar.BaselineStore, 20, 3600.0, 100_000),
        partial(BaselineStore, 20, 3600.0, 100_000),
    ),
    "windows": (
        partial(windows_scalar.WindowStore, 300.0, 60, 10, 3600.0, 100_000),
        partial(WindowStore, 300.0, 60, 10, 3600.0, 100_000),
    ),
    "templates": (
        partial(templates_scalar.TemplateStore, 5000, 0.5, 50.0, 100_000, 1),
        partial(TemplateStore, 5000, 0.5, 50.0, 100_000, 1),
    ),
    "sequences": (
        partial(sequences_scalar.SequenceStore, 5, 4096, 100_000),
        partial(SequenceStore, 5, 4096, 100_000),
    ),
    "forecasts": (
        partial(forecasts_scalar.ForecastStore, 48, 86_400.0, 7.0, 10.0, 20),
        partial(ForecastStore, 48, 86_400.0, 7.0, 10.0, 20),
    ),
    "patterns": (
        partial(patterns_scalar.PatternStore, 100_000),
        partial(PatternStore, 100_000),
    ),
}


def _seconds_per_call(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def main(names: list[str]) -> None:
    stream = parse_events(event_stream(12_000, services=50, seed=2))
    spans = {"warm": stream[:10_000], "one": stream[10_000:10_001], "1000": stream[10_000:11_000]}
    miner = TemplateStore(5000, 0.5, 50.0, 100_000)

    def arguments(name: str, events: list[LogEvent]) -> tuple[Any, ...]:
        batch = EventBatch.from_events(events)
        messages = [event.message for event in events]
        if name == "templates":
            return (batch.services, messages, batch.level_scores.tolist())
        if name == "sequences":
            return (batch.services, miner.observe(batch.services, messages).template_id)
        return (batch,)

    for name in names or list(STORES):
        make_old, make_new = STORES[name]
        old, new = make_old(), make_new()
        args = {key: arguments(name, events) for key, events in spans.items()}
        old.observe(*args["warm"])
        new.observe(*args["warm"])
        for key, calls in (("one", 3000), ("1000", 20)):
            size = len(spans[key])
            times: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(7):
                for label, store in (("old", old), ("new", new)):
                    seconds = _seconds_per_call(partial(store.observe, *args[key]), calls)
                    times[label].append(seconds / size * 1e6)
            before, after = statistics.median(times["old"]), statistics.median(times["new"])
            print(  # noqa: T201 - a command-line report
                f"{name:10s} batch of {size:5d}: old {before:7.2f} us/event, "
                f"new {after:7.2f} us/event ({before / after:.1f}x)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
