"""Model management over HTTP: `/admin/models...`, and the seed proxy's `/status` and `/unload`.

Times are Unix timestamps (the manager keeps monotonic ones; they are converted here). Errors use the OpenAI
envelope, like the rest of Somner's own API.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.body import read_body
from somner.api.handlers import services_of
from somner.api.keep_alive import keep_alive
from somner.api.openai.routes import openai_endpoint
from somner.api.principal import require_admin
from somner.errors import MethodNotAllowed
from somner.models.context import model_context
from somner.models.manager import FOREVER, ModelStatus
from somner.settings import ModelEntry
from somner.wire.body import validation_error

_MASK = "**********"


def _wall(moment: float | None) -> float | None:
    """A monotonic-clock moment as a Unix timestamp."""
    if moment is None or moment == FOREVER:
        return None
    return round(time.time() - (time.monotonic() - moment), 3)


def status_json(status: ModelStatus, aliases: list[str]) -> dict[str, Any]:
    return {
        "id": status.id,
        "aliases": aliases,
        "state": status.state.value,
        "backend": status.backend,
        "memory_estimate": status.memory,
        "in_flight": status.in_flight,
        "loaded_at": _wall(status.loaded_at),
        "last_used": _wall(status.last_used),
        "expires_at": _wall(status.expires_at),
        "keep_loaded": status.pinned or status.expires_at == FOREVER,
        "pinned": status.pinned,
        "loads": status.loads,
        "progress": status.progress,  # while loading: 0..1, as far as the engine reports it
        "error": status.error,
    }


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _statuses(request: Request) -> list[dict[str, Any]]:
    services = services_of(request)
    specs = {spec.id: spec for spec in services.registry.specs()}
    statuses = []
    for s in services.manager.statuses():
        spec = specs.get(s.id)
        body = status_json(s, list(spec.entry.aliases) if spec is not None else [])
        body["parallel"] = spec.parallel if spec is not None else None  # the engine's slots (in_flight of them)
        statuses.append(body)
    return statuses


@openai_endpoint
async def list_models(request: Request) -> Response:
    require_admin(request)
    services_of(request).registry.refresh()
    return _json({"object": "list", "data": _statuses(request)})


def _one(request: Request, model_id: str) -> dict[str, Any]:
    return next(s for s in _statuses(request) if s["id"] == model_id)


def entry_json(entry: ModelEntry) -> dict[str, Any]:
    """A model's configuration entry as JSON: the keys that differ from the defaults, secrets masked (api keys
    dump masked already; the values of `env`, often tokens, are masked here, at any depth)."""

    def masked(value: Any, key: str = "") -> Any:
        if key == "env" and isinstance(value, dict):
            return dict.fromkeys(value, _MASK)
        if isinstance(value, dict):
            return {k: masked(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [masked(item) for item in value]
        return value

    data: dict[str, Any] = masked(entry.model_dump(mode="json", exclude_none=True, exclude_defaults=True))
    return {"id": entry.id, **data}


@openai_endpoint
async def get_model(request: Request) -> Response:
    """One model: its state (as in the list), how it is served (the context one generation gets, slots) and its
    configuration entry, for `somner show`."""
    require_admin(request)
    model_id = request.path_params["model_id"]
    if model_id.endswith(("/load", "/unload")):  # (those two paths take POST; this route would catch their GET)
        raise MethodNotAllowed(f"Method GET is not allowed on {request.url.path}")
    services = services_of(request)
    services.registry.refresh()
    spec = services.manager.resolve(model_id)
    body = {
        **_one(request, spec.id),
        "source": spec.source,
        "context_length": await asyncio.to_thread(model_context, spec),  # (may read the GGUF's header)
        "parallel": spec.parallel,
        "entry": entry_json(spec.entry),
    }
    return _json(body)


class LoadRequest(BaseModel):
    """The optional body of a load: how long the model stays loaded once idle (as `keep_alive` everywhere:
    seconds or a duration, negative for ever, 0 for "unload when idle"); without it, the model's ttl."""

    model_config = ConfigDict(extra="forbid")
    keep_alive: float | str | None = None


async def _keep_alive(request: Request) -> float | None:
    raw = await read_body(request, 64 * 1024)
    if not raw.strip():
        return None
    try:
        body = LoadRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None
    return keep_alive(request, body.keep_alive)


@openai_endpoint
async def load_model(request: Request) -> Response:
    """Load a model (and wait until it is ready); `{"keep_alive": ...}` sets how long it then stays."""
    require_admin(request)
    manager = services_of(request).manager
    spec = manager.resolve(request.path_params["model_id"])
    seconds = await _keep_alive(request)
    if seconds is None:
        await manager.load(spec.id)
    else:
        (await manager.acquire(spec.id)).release(seconds)
    return _json(_one(request, spec.id))


@openai_endpoint
async def unload_model(request: Request) -> Response:
    require_admin(request)
    manager = services_of(request).manager
    spec = manager.resolve(request.path_params["model_id"])
    await manager.unload(spec.id)
    return _json(_one(request, spec.id))


@openai_endpoint
async def status(request: Request) -> Response:
    require_admin(request)
    statuses = _statuses(request)
    loaded = [s["id"] for s in statuses if s["state"] == "loaded"]
    return _json({"status": "ok", "loaded": loaded, "models": statuses})


@openai_endpoint
async def unload_all(request: Request) -> Response:
    if request.method == "HEAD":  # (Starlette adds HEAD to every GET route; a probe must not unload anything)
        raise MethodNotAllowed(f"Method HEAD is not allowed on {request.url.path}")
    require_admin(request)
    manager = services_of(request).manager
    loaded = [s.id for s in manager.statuses() if s.state.value in ("loaded", "failed")]
    await asyncio.gather(*(manager.unload(model_id) for model_id in loaded))
    return _json({"unloaded": loaded})


def model_routes() -> list[BaseRoute]:
    return [
        Route("/admin/models", list_models, methods=["GET"]),
        Route("/admin/models/{model_id:path}/load", load_model, methods=["POST"]),
        Route("/admin/models/{model_id:path}/unload", unload_model, methods=["POST"]),
        Route("/admin/models/{model_id:path}", get_model, methods=["GET"]),  # (after the two above: `:path`)
        Route("/status", status, methods=["GET"]),
        # GET too, as llama-swap serves it: scripts written for it unload with a bare `curl URL/unload`.
        Route("/unload", unload_all, methods=["GET", "POST"]),
    ]
