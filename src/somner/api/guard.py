"""The guard in front of every route (pure ASGI): header limits, the Host check, and authentication.

Every route needs a valid API key except the public ones (`/`, `/ping`, `/health`, `/ready`, TabbyAPI's
`/v1/health`, and `/metrics` when configured public). The caller's `Principal` is left in the request's state for
the routes. Errors are answered here, in the shape of the dialect the path belongs to.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from somner.api.dialects import renderer_for
from somner.errors import Forbidden, HeadersTooLarge, SomnerError
from somner.gateway.auth import Authenticator, key_from_headers
from somner.gateway.keys import ANONYMOUS
from somner.observability.requests import note_error
from somner.settings import Settings

log = logging.getLogger(__name__)

# "/" answers Ollama's probe ("Ollama is running") and nothing else.
PUBLIC_PATHS = frozenset({"/", "/ping", "/health", "/ready", "/v1/health"})
_AUTH_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-admin-key"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, auth: Authenticator) -> None:
        self.app = app
        self.settings = settings
        self.auth = auth
        self.public = PUBLIC_PATHS | {"/metrics"} if settings.metrics_public else PUBLIC_PATHS
        self.allowed_hosts = (
            frozenset(LOOPBACK_HOSTS | {h.lower() for h in settings.auth.allowed_hosts})
            if is_loopback(settings.host)
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            found = self._check_headers(scope)
            if scope["path"] not in self.public:
                scope.setdefault("state", {})["principal"] = await self._principal(found)
        except SomnerError as exc:
            note_error(scope, exc)
            response = renderer_for(scope["path"])(exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_headers(self, scope: Scope) -> dict[str, str]:
        """Check the headers' count and size and the Host; return the ones auth reads (one pass over them)."""
        headers = scope["headers"]
        limits = self.settings.limits
        size = 0
        host = ""
        found: dict[str, str] = {}
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"host":
                host = value.decode("latin-1")
            elif name in _AUTH_HEADERS:
                found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        if len(headers) > limits.max_headers or size > limits.max_header_bytes:
            raise HeadersTooLarge("The request headers are too many or too large.")
        if self.allowed_hosts is not None:
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name.lower() not in self.allowed_hosts:
                raise Forbidden(
                    "This Host is not allowed (a guard against DNS rebinding); add it to auth.allowed_hosts.",
                    code="host_not_allowed",
                )
        return found

    async def _principal(self, headers: dict[str, str]) -> object:
        if not self.settings.auth.enabled:
            return ANONYMOUS
        return await self.auth.authenticate(key_from_headers(headers))
