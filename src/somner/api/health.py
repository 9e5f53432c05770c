"""Liveness and readiness, without a key: `/ping` (always 200, no work), `/health` (detail), `/ready`."""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner import __version__
from somner.services import Services


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def ping(request: Request) -> Response:
    return Response(b"pong", media_type="text/plain")


async def health(request: Request) -> Response:
    services: Services = request.app.state.services
    loaded = [s.id for s in services.manager.statuses() if s.state.value == "loaded"]
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.time() - services.started_at, 1),
            "loaded_models": loaded,
            "queue_depth": services.gateway.queue.depth,
            "in_flight": services.gateway.in_flight,
            "database": await services.db.ping(),
        }
    )


async def ready(request: Request) -> Response:
    services: Services = request.app.state.services
    ok = await services.db.ping()
    return _json({"ready": ok}, 200 if ok else 503)


def routes() -> list[BaseRoute]:
    return [
        Route("/ping", ping, methods=["GET", "HEAD"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
