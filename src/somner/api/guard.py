"""The guard in front of every route (pure ASGI): header limits, the Host check, and authentication.

Every route needs a valid API key except the public ones (`/`, `/ping`, `/health`, `/ready`, TabbyAPI's
`/v1/health`, the API's description `/openapi.json` and `/docs`, and `/metrics` when configured public; the
README's "Public routes" lists them and `tests/api/test_route_walk.py` holds every other route to a key). The
caller's `Principal` is left in the request's state for the routes. Errors are answered here, in the shape of the
dialect the path belongs to.
"""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from somner.api.dialects import renderer_for
from somner.errors import Forbidden, HeadersTooLarge, SomnerError
from somner.gateway.auth import Authenticator, key_from_headers
from somner.gateway.keys import ANONYMOUS
from somner.observability.requests import note_error
from somner.settings import LOOPBACK_HOSTS, Settings, is_loopback

log = logging.getLogger(__name__)

# "/" answers Ollama's probe ("Ollama is running") and nothing else.
PUBLIC_PATHS = frozenset({"/", "/ping", "/health", "/ready", "/v1/health", "/openapi.json", "/docs"})
_AUTH_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-admin-key"})
# A Host header: a name or a bracketed IPv6 address, then an optional port; nothing else.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/@\s]+)(?::[0-9]{1,5})?")


def is_console(path: str) -> bool:
    """The web console's pages and files: public (they hold no data; every call they make carries a key)."""
    return path == "/ui" or path.startswith("/ui/")


def public_paths(settings: Settings) -> frozenset[str]:
    """The paths answered without a key."""
    return PUBLIC_PATHS | {"/metrics"} if settings.metrics_public else PUBLIC_PATHS


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, auth: Authenticator) -> None:
        self.app = app
        self.settings = settings
        self.auth = auth
        self.public = public_paths(settings)
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
            if scope["path"] not in self.public and not is_console(scope["path"]):
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
            parsed = _HOST.fullmatch(host)
            if parsed is None or parsed.group(1).lower() not in self.allowed_hosts:
                raise Forbidden(
                    "This Host is not allowed (a guard against DNS rebinding); add it to auth.allowed_hosts.",
                    code="host_not_allowed",
                )
        return found

    async def _principal(self, headers: dict[str, str]) -> object:
        if not self.settings.auth.enabled:
            return ANONYMOUS
        return await self.auth.authenticate(key_from_headers(headers))
