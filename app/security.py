"""API keys: who may change the service's state.

The key is checked twice, on purpose:

* ``GuardMiddleware`` (app/middleware.py) checks it before the route runs, so a request without a
  valid key is answered 401 before a single byte of its body is read: an attacker cannot make
  the service buffer and parse a 100 MiB body it will refuse anyway.
* ``require_api_key`` is the routes' declared dependency. It makes the OpenAPI document carry the
  security schemes (Swagger UI's Authorize button, typed SDKs), tells the middleware which routes
  are protected, and checks again, so a route stays protected even if the middleware is missing.

Keys are compared with ``hmac.compare_digest`` on their SHA-256 digests: constant time whatever
the length or content of the guess, so timing tells nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Annotated, ClassVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import InsightHubError

API_KEY_HEADER = "X-API-Key"

# auto_error=False: a missing key is our 401 problem+json, not FastAPI's own 403 body.
bearer_scheme = HTTPBearer(
    scheme_name="BearerKey",
    description="`Authorization: Bearer <INSIGHTHUB_API_KEY>`",
    auto_error=False,
)
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKeyHeader",
    description="`X-API-Key: <INSIGHTHUB_API_KEY>`",
    auto_error=False,
)


class Unauthorized(InsightHubError):
    status = 401
    title = "Unauthorized"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="insighthub"'}


UNAUTHORIZED_DETAIL = (
    "this endpoint needs the service's API key: send 'Authorization: Bearer <key>' or "
    f"'{API_KEY_HEADER}: <key>'"
)


def _digest(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return hashlib.sha256(raw).digest()


class KeyChecker:
    """Holds the configured key (as a digest only) and judges presented credentials."""

    def __init__(self, key: str | None) -> None:
        self._digest = _digest(key) if key is not None else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def accepts(self, presented: str | bytes | None) -> bool:
        if self._digest is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(_digest(presented), self._digest)

    def accepts_headers(self, authorization: bytes | None, api_key: bytes | None) -> bool:
        """Raw ASGI header values: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
        if self._digest is None:
            return True
        if api_key is not None and self.accepts(api_key.strip()):
            return True
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer" and self.accepts(credentials.strip()):
                return True
        return False


def key_checker(request: Request) -> KeyChecker:
    checker: KeyChecker = request.app.state.key_checker
    return checker


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> None:
    """Route dependency: the configured API key, as a bearer token or in ``X-API-Key``."""
    checker = key_checker(request)
    if not checker.enabled:
        return
    if checker.accepts(api_key) or (bearer is not None and checker.accepts(bearer.credentials)):
        return
    raise Unauthorized(UNAUTHORIZED_DETAIL)


RequireApiKey = Depends(require_api_key)
