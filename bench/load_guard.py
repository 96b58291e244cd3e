"""What the guard middleware (API key, body limit, concurrency limit, metrics) costs per request.

    .venv/bin/python -m bench.load_guard

Calls a do-nothing ASGI app directly and through ``GuardMiddleware`` in the same process, in
alternating rounds, for a POST /score with a ~100-byte body; reports the median time per request
of each and the difference. No server, no network: only the middleware's own work.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from app.factory import create_app
from app.metrics import Metrics
from app.middleware import GuardMiddleware
from app.security import KeyChecker
from app.settings import Settings

BODY = b'{"service":"api","level":"INFO","latency_ms":12.5,"message":"GET /api/v1/orders 200"}'
ROUNDS = 7
CALLS = 20_000


async def _noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _time_calls(app: Any, headers: list[tuple[bytes, bytes]]) -> float:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/score",
        "root_path": "",
        "headers": headers,
    }
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        return None

    started = time.perf_counter()
    for _ in range(CALLS):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / CALLS


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        key = "bench-key-0123456789abcdef"
        settings = Settings(artifacts_dir=Path(folder), api_key=key, require_key_for_scoring=True)
        real = create_app(settings)  # for its OpenAPI document: the guard's route table
        guarded = GuardMiddleware(
            _noop_app,
            openapi=real.openapi,
            settings=settings,
            keys=KeyChecker(key),
            metrics=Metrics(),
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ]
        plain: list[float] = []
        with_guard: list[float] = []
        for _ in range(ROUNDS):
            plain.append(await _time_calls(_noop_app, headers))
            with_guard.append(await _time_calls(guarded, headers))
    base = statistics.median(plain) * 1e6
    guard = statistics.median(with_guard) * 1e6
    print(f"do-nothing app:           {base:6.2f} us per request (median of {ROUNDS} rounds)")
    print(f"through GuardMiddleware:  {guard:6.2f} us per request")
    print(f"guard's own cost:         {guard - base:6.2f} us per request (key check included)")


if __name__ == "__main__":
    asyncio.run(main())
