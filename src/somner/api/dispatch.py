"""`ExactRoutes`: requests for a route without path parameters go straight to its endpoint.

Starlette's router tries each route's regex in turn and wraps every endpoint in two more ASGI layers (exception
handling, request/response); on the gateway's hot path that was a fifth of a request's time. The API routes with
fixed paths (`/v1/chat/completions`, `/api/chat`, ...) are looked up here in one dict instead. Everything else
(paths with parameters, unknown paths, wrong methods: the 404 and 405 answers) goes on to the router unchanged.
Endpoints here are async functions that answer every error themselves (`api.errors.guarded`); anything they
still raise reaches Starlette's outermost error middleware, as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class ExactRoutes:
    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.table: dict[tuple[str, str], Endpoint] = {}
        for route in routes:
            if (
                isinstance(route, Route)
                and not route.param_convertors
                and inspect.iscoroutinefunction(route.endpoint)
                and route.methods
            ):
                for method in route.methods:
                    self.table.setdefault((method, route.path), route.endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.table.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["endpoint"] = endpoint  # (what the router would leave: the request observer names the route)
                scope["path_params"] = {}
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
