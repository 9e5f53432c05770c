"""Liveness and readiness, without a key: `/ping` (always 200, no work), `/health` (detail), `/ready`.

None of them touches an engine: they read the manager's and the gateway's own state, so a platform's health
checks never load a model or keep a scale-to-zero machine awake. The same three routes are served alone on
`health_port` when it is set (`health_app`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner import __version__
from somner.api.middleware import RequestIdMiddleware
from somner.models.manager import ModelState, ModelStatus
from somner.models.placement import gpu
from somner.services import Services


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def ping(request: Request) -> Response:
    return Response(b"pong", media_type="text/plain")


async def health(request: Request) -> Response:
    """200 with `status: ok`; 503 with `status: degraded` while an engine is unwell (hung, being replaced): the
    gateway itself is alive (that is `/ping`), but part of what it serves is not."""
    services = _services(request)
    statuses = services.manager.statuses()
    unwell = {s.id: s.health for s in statuses if s.health is not None}
    return _json(
        {
            "status": "degraded" if unwell else "ok",
            "version": __version__,
            "uptime_s": round(time.time() - services.started_at, 1),
            "ready": services.ready,
            "loaded_models": [s.id for s in statuses if s.state is ModelState.LOADED],
            "models": {
                s.id: {"state": s.state.value, "in_flight": s.in_flight, "health": s.health or "ok"} for s in statuses
            },
            "queue_depth": services.gateway.queue.depth,
            "in_flight": services.gateway.in_flight,
            "database": await services.db.ping(),
            "gpus": _gpus(await services.gpus.devices(), statuses),
        },
        503 if unwell else 200,
    )


def _gpus(devices: list[dict[str, Any]], statuses: list[ModelStatus]) -> list[dict[str, Any]]:
    """Each GPU's reading, with what the loaded models hold there (the manager's estimates)."""
    for device in devices:
        key = gpu(int(device["index"]))
        device["models"] = {
            s.id: s.placement[key] for s in statuses if s.state is ModelState.LOADED and key in s.placement
        }
    return devices


async def ready(request: Request) -> Response:
    services = _services(request)
    problems: list[str] = []
    if not services.ready:
        problems.append("starting" if not services.stopping else "stopping")
    elif not await services.db.ping():
        problems.append("database unreachable")
    settings = services.settings
    statuses = services.manager.statuses()
    if settings.ready_requires_model and not any(s.state is ModelState.LOADED for s in statuses):
        problems.append("no model loaded")
    problems.extend(f"{s.id}: {s.health}" for s in statuses if s.health is not None)
    stalled = services.manager.stalled(settings.stall_timeout)
    if stalled:
        problems.append(f"no progress for {settings.stall_timeout:g}s: {', '.join(sorted(stalled))}")
    if problems:
        return _json({"ready": False, "reasons": problems}, 503)
    return _json({"ready": True})


def routes() -> list[BaseRoute]:
    return [
        Route("/ping", ping, methods=["GET", "HEAD"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]


def health_app(services: Services) -> Starlette:
    """The three routes alone, for the health port (no key, no engines, no other route)."""
    app = Starlette(routes=routes(), middleware=[Middleware(RequestIdMiddleware)])
    app.state.services = services
    return app
