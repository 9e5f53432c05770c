"""`create_app(settings)`: the gateway as an ASGI app. Nothing happens at import; the lifespan starts and
stops the services (the database, the usage writer, every engine process)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from somner.api import health, metrics, usage
from somner.api.admin import routes as admin_routes
from somner.api.anthropic import routes as anthropic_routes
from somner.api.dialects import dialect_of, renderer_for
from somner.api.dispatch import ExactRoutes
from somner.api.guard import GuardMiddleware
from somner.api.kobold import routes as kobold_routes
from somner.api.ollama import routes as ollama_routes
from somner.api.openai import rerank, responses, tokenizer
from somner.api.openai import routes as openai_routes
from somner.api.openapi import routes as openapi_routes
from somner.api.tabby import routes as tabby_routes
from somner.console import routes as console_routes
from somner.errors import MethodNotAllowed, NotFound
from somner.gateway_processes.listening import listening_socket
from somner.http_server import EmbeddedServer, server_config
from somner.observability.requests import RequestObserver, RouteNames
from somner.services import Services, build_services
from somner.settings import Settings


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    render = renderer_for(request.url.path)
    if status == 405:
        return render(MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}"))
    return render(NotFound(f"No such endpoint: {request.method} {request.url.path}"))


def dialect_routes(enabled: list[str]) -> list[BaseRoute]:
    """The routes of the enabled API dialects (`api_servers`)."""
    by_dialect: dict[str, Callable[[], list[BaseRoute]]] = {
        "openai": lambda: [*openai_routes.routes(), *responses.routes(), *tokenizer.routes(), *rerank.routes()],
        "anthropic": anthropic_routes.routes,
        "kobold": kobold_routes.routes,
        "ollama": ollama_routes.routes,
        "tabby": tabby_routes.routes,
    }
    return [route for name, make in by_dialect.items() if name in enabled for route in make()]


def create_app(settings: Settings, *, services: Services | None = None) -> Starlette:
    services = services if services is not None else build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        health_server = await _start_health_server(settings, services)
        try:
            await services.start()
            yield
        finally:
            try:
                await services.stop()
            finally:
                if health_server is not None:
                    await health_server.stop()

    middleware: list[Middleware] = []
    if settings.auth.cors_origins:
        origins = settings.auth.cors_origins
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "x-admin-key",
                    "x-api-key",
                    "x-request-id",
                    "x-somner-keep-alive",
                ],
                allow_credentials="*" not in origins,  # never a wildcard with credentials
            )
        )
    middleware.append(Middleware(GuardMiddleware, settings=settings, auth=services.auth))
    routes: list[BaseRoute] = [
        *health.routes(),
        *metrics.routes(),
        *openapi_routes.routes(),
        *dialect_routes(list(settings.api_servers)),
        *admin_routes.routes(),
        *usage.routes(),
        console_routes.mount(),
    ]
    middleware.append(Middleware(ExactRoutes, routes=routes))  # innermost: fixed paths skip the router
    # Outermost: the observer (request id, metrics, the log line), so that it sees every answer, refusals too.
    middleware.insert(
        0,
        Middleware(
            RequestObserver,
            metrics=services.metrics,
            routes=RouteNames(routes),
            dialect_of=dialect_of,
            feed=services.request_feed,
            log_lines=not settings.strict_privacy,
        ),
    )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: _http_error, 405: _http_error},
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.on_drain = services.begin_drain
    app.state.on_cutoff = services.cut_off
    app.state.cutoff = services.cutoff
    return app


class _HealthServer:
    """`health_port`: /ping, /health and /ready alone on a second port, in the same event loop."""

    def __init__(self, server: EmbeddedServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.task = asyncio.create_task(server.serve(sockets=[sock]), name="health-port")

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sock.close()


async def _start_health_server(settings: Settings, services: Services) -> _HealthServer | None:
    """Listening before the main server's (slower) start-up goes on; OSError when the port cannot be had. With
    several gateway processes (`workers`) each listens on the port and answers for itself (a process being
    restarted simply has no socket in the group)."""
    if settings.health_port is None:
        return None
    try:
        sock = listening_socket(settings.host, settings.health_port, shared=settings.workers > 1, backlog=64)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on the health port {settings.health_port}: {exc.strerror}") from None
    config = server_config(health.health_app(services), lifespan="off")
    return _HealthServer(EmbeddedServer(config), sock)
