"""Single-event requests that arrive together are scored together (adaptive batching).

The engine's cost per call is mostly fixed (a few dozen numpy calls, whatever the batch size), so
when many clients each POST one event, scoring every request alone spends most of the time on
that fixed cost. ``ScoreCoalescer`` collects the events of the requests that reach it during one
turn of the event loop and scores them in one engine call on the next turn, in arrival order.

Results are exactly those of scoring the events one at a time in that order (the engine's own
guarantee for a batch). A lone request waits one loop turn, microseconds; nothing waits on a timer.
Concurrency: everything here runs on the event loop thread, so the pending list needs no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from app.schemas.events import LogEvent

# The engine's answer for one event (the service uses its JSON bytes).
Result = TypeVar("Result")

# Past ~32 events the engine's fixed cost per call is already under ~3 us per event, while every
# extra event in a flush delays the answers to all the others (a burst is parsed before it is
# scored): larger batches would buy little throughput for more latency.
MAX_COALESCED_EVENTS = 32


class ScoreCoalescer(Generic[Result]):
    def __init__(
        self,
        score: Callable[[Sequence[LogEvent]], list[Result]],
        max_events: int = MAX_COALESCED_EVENTS,
    ) -> None:
        self._score = score
        self.max_events = max_events
        self._pending: list[tuple[LogEvent, asyncio.Future[Result]]] = []
        self.flushes = 0  # engine calls made, for tests and metrics
        self.events = 0

    async def score(self, event: LogEvent) -> Result:
        """Score ``event`` with whatever else arrives in this loop turn; its own result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((event, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        elif len(self._pending) >= self.max_events:
            self._flush()
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        self.flushes += 1
        self.events += len(pending)
        try:
            results = self._score([event for event, _ in pending])
        except Exception as exc:
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(pending, results, strict=True):
            # A client that hung up has a cancelled future; its event was still scored (it was
            # received, and the windows count it), only the answer goes nowhere.
            if not future.done():
                future.set_result(result)
