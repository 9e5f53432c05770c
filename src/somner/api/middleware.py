"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from somner.observability.requests import request_id_for


class RequestIdMiddleware:
    """Gives every request an id (the client's `X-Request-Id` when well-formed) and echoes it in the response.
    (The main app's `RequestObserver` does this itself; this is for apps without it, such as the health port's.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
