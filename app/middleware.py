"""The guard in front of every route: API key, body size, concurrency, request metrics.

Pure ASGI (no BaseHTTPMiddleware), for four reasons:

* it answers 401, 413 and 503 before the route runs and before the body is read, so refusing a
  request costs microseconds whatever its size;
* it counts the body bytes as ``receive()`` hands them over, so a chunked upload without a
  Content-Length (or with a false one) cannot slip past the limit;
* it adds no task or memory stream per request on the scoring hot path;
* a route may hand it a shortcut (``Shortcut``): after the checks, the guard reads the body and
  the shortcut answers the common case itself, without the framework's per-request machinery;
  whatever it declines reaches the route with the body replayed, so the route still gives every
  other answer (POST /score, app/routers/scoring.py).

FastAPI's own ``max_body_size`` counts bytes too, but answers text/plain and only once the route
reads; every error of this service is problem+json, and an oversized declared Content-Length is
refused here without waiting for a byte.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_MEDIA_TYPE, Overloaded, PayloadTooLarge, problem_body
from app.metrics import Metrics
from app.pausing import TrainingPause
from app.security import UNAUTHORIZED_DETAIL, KeyChecker, Unauthorized
from app.settings import Settings

UNMATCHED = "(unmatched)"
# Probes and scrapes must answer even when the service is saturated: that is when they matter.
UNLIMITED_ROUTES = frozenset({"/health", "/ready", "/metrics"})
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_POLICY_CACHE_SIZE = 4096

# A route's answer to a request whose body has been read in full and is within the limit, sent
# without the framework's request machinery; False declines (nothing sent), and the request then
# takes the app's ordinary path with the same body, so every other answer (errors included) is the
# app's own.
Shortcut = Callable[[Scope, bytes, Send], Awaitable[bool]]


class BodyTooLarge(HTTPException):
    """Raised from ``receive()``; FastAPI re-raises HTTPExceptions met while reading a body, so
    the app's handler renders it as a 413 problem+json."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds this route's limit of {limit} bytes")


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    route: str  # the path template: the metrics label, bounded whatever paths clients send
    needs_key: bool
    max_body_bytes: int
    limited: bool  # counts against max_concurrent_requests
    shortcut: Shortcut | None = None


class RouteIndex:
    """Which policy applies to a request, read from the app's OpenAPI document.

    The published contract is what is enforced: an operation that declares a security
    requirement (from the ``require_api_key`` dependency) needs the key here too, so the docs
    and the guard cannot disagree. Path templates are matched the way Starlette matches them.
    A route left out of the schema is not known here; its ``require_api_key`` dependency still
    refuses it, only after the body has been read.
    """

    def __init__(
        self,
        openapi: dict[str, Any],
        settings: Settings,
        shortcuts: Mapping[tuple[str, str], Shortcut] | None = None,
    ) -> None:
        shortcuts = shortcuts or {}
        body_limits = {
            "/score": settings.max_body_bytes_score,
            "/score/batch": settings.max_body_bytes_batch,
            "/train": settings.max_body_bytes_train,
        }
        self._entries: list[tuple[str, re.Pattern[str], RoutePolicy]] = []
        for path, operations in openapi.get("paths", {}).items():
            regex, _, _ = compile_path(path)
            for method, operation in operations.items():
                if method.upper() not in HTTP_METHODS:
                    continue
                policy = RoutePolicy(
                    route=path,
                    needs_key=bool(operation.get("security")),
                    max_body_bytes=body_limits.get(path, settings.max_body_bytes),
                    limited=path not in UNLIMITED_ROUTES,
                    shortcut=shortcuts.get((method.upper(), path)),
                )
                self._entries.append((method.upper(), regex, policy))
                if method.upper() == "GET":  # Starlette answers HEAD on every GET route
                    self._entries.append(("HEAD", regex, policy))
        self._unmatched = RoutePolicy(UNMATCHED, False, settings.max_body_bytes, True)
        self._cache: dict[tuple[str, str], RoutePolicy] = {}

    def policy(self, scope: Scope) -> RoutePolicy:
        method: str = scope["method"]
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        key = (method, path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        found = self._unmatched
        for entry_method, regex, policy in self._entries:
            if entry_method == method and regex.match(path):
                found = policy
                break
        if len(self._cache) < _POLICY_CACHE_SIZE:
            self._cache[key] = found
        return found


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _send_problem(
    send: Send, status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = problem_body(status, title, detail)
    raw_headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` as it was before ``messages`` were taken from it."""
    pending = iter(messages)

    async def replayed() -> Message:
        message = next(pending, None)
        return message if message is not None else await receive()

    return replayed


class _WatchedSend:
    """``send``, noting the status of the response it starts, for the request metrics."""

    __slots__ = ("send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.status = 500  # what the server answers if the app raises before starting a response

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        await self.send(message)


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        openapi: Callable[[], dict[str, Any]],
        settings: Settings,
        keys: KeyChecker,
        metrics: Metrics,
        shortcuts: Mapping[tuple[str, str], Shortcut] | None = None,
        pause: TrainingPause | None = None,
    ) -> None:
        self.app = app
        self.pause = pause or TrainingPause(enabled=False)
        self.settings = settings
        self._openapi = openapi
        self._shortcuts = dict(shortcuts or {})
        self._index: RouteIndex | None = None
        self.keys = keys
        self.metrics = metrics
        self.max_in_flight = settings.max_concurrent_requests
        self.retry_after = str(settings.retry_after_seconds)
        # One event loop per process runs every request, and nothing awaits between reading
        # and changing this counter, so it needs no lock.
        self.in_flight = 0
        # Read at scrape time: a gauge's inc()/dec() take a lock twice on every request.
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        if self._index is None:
            # Built on the first request, when every route is included.
            self._index = RouteIndex(self._openapi(), self.settings, self._shortcuts)
        policy = self._index.policy(scope)
        watched = _WatchedSend(send)
        self.pause.request_started()
        try:
            await self._guarded(scope, receive, watched, policy)
        finally:
            self.pause.request_finished()
            self.metrics.observe(
                policy.route, scope["method"], watched.status, time.perf_counter() - started_at
            )

    async def _guarded(
        self, scope: Scope, receive: Receive, send: _WatchedSend, policy: RoutePolicy
    ) -> None:
        if policy.needs_key and not self.keys.accepts_headers(
            _header(scope, b"authorization"), _header(scope, b"x-api-key")
        ):
            self.metrics.rejected.labels("unauthorized").inc()
            await _send_problem(
                send, 401, Unauthorized.title, UNAUTHORIZED_DETAIL, dict(Unauthorized.headers)
            )
            return
        limit = policy.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.rejected.labels("too_large").inc()
            await _send_problem(
                send,
                413,
                PayloadTooLarge.title,
                f"the request body ({int(declared)} bytes) exceeds this route's limit of "
                f"{limit} bytes",
                {"Connection": "close"},
            )
            return
        if policy.limited:
            if self.in_flight >= self.max_in_flight:
                self.metrics.rejected.labels("overloaded").inc()
                await _send_problem(
                    send,
                    503,
                    Overloaded.title,
                    f"{self.max_in_flight} requests are already being served; retry shortly",
                    {"Retry-After": self.retry_after},
                )
                return
            self.in_flight += 1
        try:
            if policy.shortcut is not None:
                await self._shortcut(scope, receive, send, limit, policy.shortcut)
            else:
                await self._counted(scope, receive, send, limit)
        finally:
            if policy.limited:
                self.in_flight -= 1

    async def _shortcut(
        self, scope: Scope, receive: Receive, send: _WatchedSend, limit: int, shortcut: Shortcut
    ) -> None:
        """Reads the whole body and offers it to the route's shortcut; a body over the limit,
        a client gone, or a declined request goes on to the app as if nothing had been read."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                break
            if not message.get("more_body", False):
                body = (
                    messages[0].get("body", b"")
                    if len(messages) == 1
                    else b"".join(part.get("body", b"") for part in messages)
                )
                # Straight to the server: a shortcut answers 200 or declines without sending.
                if await shortcut(scope, body, send.send):
                    send.status = 200
                    return
                break
        await self._counted(scope, _replay(messages, receive), send, limit)

    async def _counted(
        self, scope: Scope, receive: Receive, send: _WatchedSend, limit: int
    ) -> None:
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self.metrics.rejected.labels("too_large").inc()
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, receive_counted, send)
        except BodyTooLarge as exc:
            # Normally the app's exception handler has answered already; this is the fallback
            # for a body read outside FastAPI's request handling.
            if send.started:
                raise
            await _send_problem(send, 413, PayloadTooLarge.title, str(exc.detail))
