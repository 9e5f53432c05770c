"""Rendering errors once per dialect, and the wrapper every route handler goes through.

Only `SomnerError` becomes a 4xx/5xx with its own message. Anything else is a bug: the client gets a 500 that
names the request id, and the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from somner.api.streaming import ClientDisconnected
from somner.errors import SomnerError
from somner.observability.requests import note_error

log = logging.getLogger("somner.api")

Renderer = Callable[[SomnerError], Response]
Handler = Callable[[Request], Awaitable[Response]]


def json_renderer(error_body: Callable[[SomnerError], object]) -> Renderer:
    """A dialect's renderer: its error body as JSON, with the error's status and headers (Retry-After)."""

    def render(error: SomnerError) -> Response:
        return Response(
            orjson.dumps(error_body(error)),
            status_code=error.status,
            media_type="application/json",
            headers=error.headers,
        )

    return render


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def internal_error(request: Request) -> SomnerError:
    return SomnerError(f"Internal server error (request id {request_id(request)})")


def guarded(render: Renderer) -> Callable[[Handler], Handler]:
    """Decorate a route handler: our errors are rendered in the dialect's shape; others become a safe 500."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except SomnerError as exc:
                note_error(request.scope, exc)
                return render(exc)
            except ClientDisconnected:
                return Response(status_code=499)  # nobody is listening; nginx's "client closed request"
            except Exception:
                log.exception("unhandled error in %s %s [%s]", request.method, request.url.path, request_id(request))
                return render(internal_error(request))

        return endpoint

    return wrap
