"""What the tests of the guard's shortcuts (POST /score, POST /score/batch) share: the same
requests sent to two fresh apps, one answering through the shortcut and one through the FastAPI
route alone, so their answers can be compared byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Scope, Send

from app.routers.scoring import BatchShortcut, ScoreShortcut
from tests.conftest import RunningApp, copy_artifacts, make_settings, start_app

Answer = tuple[int, dict[str, str], bytes]
Shortcut = type[ScoreShortcut] | type[BatchShortcut]
# Taken at import, before any test replaces them.
Call = Callable[[Any, Scope, bytes, Send], Awaitable[bool]]
ORIGINAL_CALLS: dict[Shortcut, Call] = {
    ScoreShortcut: ScoreShortcut.__call__,
    BatchShortcut: BatchShortcut.__call__,
}


class ShortcutSpy:
    """Counts the requests ``shortcut`` answered; ``declines`` turns it off entirely, so the
    same app serves every request through the documented FastAPI route instead."""

    def __init__(self, shortcut: Shortcut, declines: bool) -> None:
        self.shortcut = shortcut
        self.declines = declines
        self.answered = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        spy = self
        original = ORIGINAL_CALLS[self.shortcut]

        async def call(shortcut: Any, scope: Scope, body: bytes, send: Send) -> bool:
            if spy.declines:
                return False
            answered = await original(shortcut, scope, body, send)
            spy.answered += answered
            return answered

        monkeypatch.setattr(self.shortcut, "__call__", call)


@asynccontextmanager
async def fresh_app(
    tmp_path: Path, artifacts: Path, name: str, **overrides: Any
) -> AsyncIterator[RunningApp]:
    copy_artifacts(artifacts, tmp_path / name / "artifacts")
    async for running in start_app(make_settings(tmp_path / name, **overrides)):
        yield running


async def both_ways(
    shortcut: Shortcut,
    tmp_path: Path,
    artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
    send: Callable[[RunningApp], Awaitable[list[Answer]]],
) -> tuple[list[Answer], list[Answer], int]:
    """The same requests to two fresh apps from the same model: through ``shortcut``, and
    through the FastAPI route alone; and how many the shortcut answered."""
    results = []
    answered = 0
    for name, declines in (("shortcut", False), ("route", True)):
        spy = ShortcutSpy(shortcut, declines)
        spy.install(monkeypatch)
        async with fresh_app(tmp_path, artifacts, name) as running:
            results.append(await send(running))
        answered += spy.answered
    return results[0], results[1], answered
