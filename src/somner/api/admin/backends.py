"""`GET /admin/backends`: every engine of every pool, its health, requests in flight and recent errors.

A pool that is not loaded shows its configured members as `stopped`. Times are Unix timestamps (the pool keeps
monotonic ones; they are converted here).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import services_of
from somner.api.openai.routes import openai_endpoint
from somner.api.principal import require_admin
from somner.models.backends.pool import MemberSnapshot, PoolBackend
from somner.models.registry import ModelSpec


def _wall(moment: float, now_monotonic: float, now_wall: float) -> float:
    return round(now_wall - (now_monotonic - moment), 3)


def member_json(member: MemberSnapshot) -> dict[str, Any]:
    mono, wall = time.monotonic(), time.time()
    return {
        "name": member.name,
        "backend": member.kind,
        "weight": member.weight,
        "state": member.state,
        "healthy": member.state == "up",
        "in_flight": member.in_flight,
        "requests": member.requests,
        "failures": member.failures,
        "retried_elsewhere": member.retried_elsewhere,
        "ejections": member.ejections,
        "ejected_for": round(member.ejected_for, 3),
        "last_check": _wall(member.last_check, mono, wall) if member.last_check is not None else None,
        "last_check_error": member.last_check_error,
        "recent_errors": [{"at": _wall(at, mono, wall), "message": message} for at, message in member.errors],
    }


def _configured(spec: ModelSpec) -> list[dict[str, Any]]:
    """The members of a pool that is not running, as configured."""
    members = []
    for index, described in enumerate(spec.entry.backends):
        kind = described.kind
        name = described.name or (described.url if described.url is not None else f"{kind}#{index}")
        members.append(
            {"name": name, "backend": kind, "weight": described.weight, "state": "stopped", "healthy": False}
        )
    return members


@openai_endpoint
async def list_backends(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    pools = []
    for spec in services.registry.specs():
        if spec.kind != "pool":
            continue
        backend = services.manager.backend_of(spec.id)
        if isinstance(backend, PoolBackend):
            pools.append({"model": spec.id, "loaded": True, "members": [member_json(m) for m in backend.snapshot()]})
        else:
            pools.append({"model": spec.id, "loaded": False, "members": _configured(spec)})
    return Response(orjson.dumps({"object": "list", "data": pools}), media_type="application/json")


def backend_routes() -> list[BaseRoute]:
    return [Route("/admin/backends", list_backends, methods=["GET"])]
