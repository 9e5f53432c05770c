"""The guard in front of every route (pure ASGI): header limits, the Host check, and authentication.

Every route needs a valid API key except the public ones (`/`, `/ping`, `/health`, `/ready`, and `/metrics`
when configured public). The caller's `Principal` is left in the request's state for the routes. Errors are answered
here, in the shape of the dialect the path belongs to.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from somner.api.dialects import renderer_for
from somner.errors import Forbidden, HeadersTooLarge, SomnerError
from somner.gateway.auth import Authenticator, key_from_headers
from somner.gateway.keys import ANONYMOUS
from somner.observability.requests import note_error
from somner.settings import Settings

log = logging.getLogger(__name__)

# "/" answers Ollama's probe ("Ollama is running") and nothing else.
PUBLIC_PATHS = frozenset({"/", "/ping", "/health", "/ready"})
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
            self._check_headers(scope)
            if scope["path"] not in self.public:
                scope.setdefault("state", {})["principal"] = await self._principal(scope)
        except SomnerError as exc:
            note_error(scope, exc)
            response = renderer_for(scope["path"])(exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_headers(self, scope: Scope) -> None:
        headers = scope["headers"]
        limits = self.settings.limits
        if len(headers) > limits.max_headers or sum(len(k) + len(v) for k, v in headers) > limits.max_header_bytes:
            raise HeadersTooLarge("The request headers are too many or too large.")
        if self.allowed_hosts is not None:
            host = next((v.decode("latin-1") for k, v in headers if k == b"host"), "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name.lower() not in self.allowed_hosts:
                raise Forbidden(
                    "This Host is not allowed (a guard against DNS rebinding); add it to auth.allowed_hosts.",
                    code="host_not_allowed",
                )

    async def _principal(self, scope: Scope) -> object:
        if not self.settings.auth.enabled:
            return ANONYMOUS
        return await self.auth.authenticate(key_from_headers(Request(scope).headers))
