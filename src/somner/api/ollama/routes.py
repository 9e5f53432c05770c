"""Ollama-compatible routes: the probe, version, model listings, generation, embeddings and model management.

Model names follow Ollama's tags (`name` is `name:latest`; see `lookup`). Errors are `{"error": "..."}` with
the status (`render`). Listings come from the registry and the model manager; generation goes through
`somner.api.serving` like every dialect (`generation`); pull, delete and copy need an admin key (`management`).
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner import __version__
from somner.api.handlers import json_response, read_request, services_of
from somner.api.ollama import catalog, generation, lookup, management, tokenizer
from somner.api.ollama.generation import ollama_endpoint
from somner.api.principal import principal_of
from somner.models.manager import FOREVER, ModelState
from somner.models.registry import ModelSpec
from somner.services import Services
from somner.wire.ollama import decode, encode, schemas

_FAR_FUTURE = 253402300799.0  # 9999-12-31T23:59:59Z: "kept loaded" (Ollama, too, reports a far-off expiry)


async def root(request: Request) -> Response:
    """The probe Ollama clients send first (public, like Ollama's)."""
    return Response(b"Ollama is running", media_type="text/plain; charset=utf-8")


@ollama_endpoint
async def version(request: Request) -> Response:
    return json_response({"version": __version__})


async def _describe(services: Services, spec: ModelSpec) -> catalog.Description:
    return await asyncio.to_thread(catalog.describe, spec, services.started_at)


@ollama_endpoint
async def tags(request: Request) -> Response:
    """Every model the key may use, under each of its names (an alias is listed as Ollama lists a copy)."""
    services = services_of(request)
    services.registry.refresh()
    principal = principal_of(request)
    models = []
    for spec in services.registry.specs():
        if not principal.rights.may_use(spec.id):
            continue
        description = await _describe(services, spec)
        for name in spec.names:
            listed = lookup.listed_name(name)
            models.append(
                {
                    "name": listed,
                    "model": listed,
                    "modified_at": encode.rfc3339(description.modified_at),
                    "size": description.size,
                    "digest": description.digest,
                    "details": description.details,
                    "capabilities": description.capabilities,  # (an extension: Ollama lists none here)
                }
            )
    return json_response({"models": models})


@ollama_endpoint
async def show(request: Request) -> Response:
    services = services_of(request)
    wire = decode.parse(schemas.ModelRequest, await read_request(request))
    spec = services.registry.get(decode.model_name(wire.model, wire.name))
    principal_of(request).require_model(spec.id)
    description = await _describe(services, spec)
    body = catalog.show(spec, description)
    body["modified_at"] = encode.rfc3339(description.modified_at)
    return json_response(body)


def _wall(moment: float) -> float:
    """A moment of the manager's (monotonic) clock as a Unix time."""
    return time.time() - (time.monotonic() - moment)


@ollama_endpoint
async def ps(request: Request) -> Response:
    """Loaded models. `size` is the manager's memory estimate; Somner does not measure per-model VRAM, so
    `size_vram` is 0."""
    services = services_of(request)
    principal = principal_of(request)
    models = []
    for status in services.manager.statuses():
        if status.state is not ModelState.LOADED or not principal.rights.may_use(status.id):
            continue
        spec = services.registry.find(status.id)
        if spec is None:
            continue
        description = await _describe(services, spec)
        if status.expires_at is None:  # in use: the timer starts when its last request ends
            ttl = spec.entry.ttl if spec.entry.ttl is not None else services.manager.policy.ttl
            expires = _FAR_FUTURE if ttl < 0 else time.time() + ttl
        else:
            expires = _FAR_FUTURE if status.expires_at == FOREVER else _wall(status.expires_at)
        name = lookup.listed_name(status.id)
        entry = {
            "name": name,
            "model": name,
            "size": status.memory or description.size,
            "digest": description.digest,
            "details": description.details,
            "expires_at": encode.rfc3339(expires),
            "size_vram": 0,
        }
        context = spec.ctx or description.context_length
        if context is not None:
            entry["context_length"] = context
        models.append(entry)
    return json_response({"models": models})


def routes() -> list[BaseRoute]:
    return [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/chat", generation.chat, methods=["POST"]),
        Route("/api/generate", generation.generate, methods=["POST"]),
        Route("/api/embed", generation.embed, methods=["POST"]),
        Route("/api/embeddings", generation.embeddings, methods=["POST"]),
        Route("/api/pull", management.pull, methods=["POST"]),
        Route("/api/delete", management.delete, methods=["DELETE"]),
        Route("/api/copy", management.copy, methods=["POST"]),
        *tokenizer.routes(),
    ]
