"""TabbyAPI's model calls: the model card, the model and draft lists, load (with progress as SSE) and unload.

A load's options (max_seq_len, cache_size, cache_mode, chunk_size, prompt_template, draft_model, ... and Somner's
own model options) become the model's run-time settings (`ModelRegistry.set_runtime`), over its configuration
until the server stops; a loaded model whose settings change is reloaded. Unlike TabbyAPI, loading a model does
not unload the others: the model manager keeps what fits in the memory budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import json_response, read_request, services_of
from somner.api.principal import principal_of
from somner.api.streaming import event_stream
from somner.api.tabby.access import NO_MODEL, current_model, require_admin, unload_request
from somner.api.tabby.render import tabby_endpoint
from somner.errors import BadRequest, ModelNotFound, SomnerError, Unavailable
from somner.models.backends.base import HasProps
from somner.models.context import model_context
from somner.models.gguf import GGUFError, read_gguf
from somner.models.manager import ModelState
from somner.models.registry import ModelSpec
from somner.services import Services
from somner.wire.tabby import decode, encode, schemas

_POLL = 0.1  # seconds between looks at a load's progress
_FALLBACK_MODULES = 100


def _created(spec: ModelSpec) -> int:
    try:
        return int(spec.path.stat().st_mtime) if spec.path is not None else int(time.time())
    except OSError:
        return int(time.time())


async def _parameters(services: Services, spec: ModelSpec) -> dict[str, Any]:
    """The card's `parameters`: from the running engine where it says (llama-server's /props), else the spec."""
    backend = services.manager.backend_of(spec.id)
    props: dict[str, Any] = await backend.props() if isinstance(backend, HasProps) else {}
    settings = props.get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    slots = props.get("total_slots")
    template = spec.entry.template
    content = props.get("chat_template") if isinstance(props.get("chat_template"), str) else None
    draft = None
    if spec.entry.draft_model is not None:
        draft = encode.model_card(spec.entry.draft_model.stem, {"max_seq_len": n_ctx or model_context(spec)})
    return encode.card_parameters(
        max_seq_len=n_ctx if isinstance(n_ctx, int) else model_context(spec),
        slots=slots if isinstance(slots, int) else spec.parallel,
        cache_types=spec.cache_types,
        rope_scale=spec.entry.rope_scale,
        chunk_size=spec.batch,
        prompt_template=_template_name(template) if template else props.get("template"),
        prompt_template_content=content,
        draft=draft,
    )


def _template_name(template: str) -> str:
    """A template as TabbyAPI names it: a file's stem, or the built-in's name."""
    return template.rsplit("/", 1)[-1].removesuffix(".jinja")


@tabby_endpoint
async def model_card(request: Request) -> Response:
    services = services_of(request)
    spec = current_model(request, request.query_params.get("model"))
    await services.capabilities.read_ahead([spec])
    capabilities = services.capabilities.of(spec).listed()
    card = encode.model_card(spec.id, await _parameters(services, spec), _created(spec), capabilities)
    return json_response(card)


@tabby_endpoint
async def model_list(request: Request) -> Response:
    services = services_of(request)
    services.registry.refresh()
    rights = principal_of(request).rights
    specs = [s for s in services.registry.specs() if rights.may_use(s.id)]
    await services.capabilities.read_ahead(specs)
    cards = [
        encode.model_card(s.id, created=_created(s), capabilities=services.capabilities.of(s).listed()) for s in specs
    ]
    return json_response(encode.model_list(cards))


@tabby_endpoint
async def draft_list(request: Request) -> Response:
    """Admins: every GGUF model (any model with the same vocabulary can draft for another). Others: the draft
    models of the loaded models."""
    services = services_of(request)
    principal = principal_of(request)
    if principal.rights.admin:
        names = [s.id for s in services.registry.specs() if s.kind == "worker"]
    else:
        loaded = {s.id for s in services.manager.statuses() if s.state is ModelState.LOADED}
        names = sorted(
            {
                s.entry.draft_model.stem
                for s in services.registry.specs()
                if s.id in loaded and s.entry.draft_model is not None and principal.rights.may_use(s.id)
            }
        )
    return json_response(encode.model_list([encode.model_card(name) for name in names]))


def _draft_path(services: Services, request: schemas.ModelLoadRequest) -> str | None:
    if request.draft_model is None:
        return None
    name = request.draft_model.draft_model_name
    spec = services.registry.find(name.removesuffix(".gguf"))
    if spec is None or spec.path is None:
        raise BadRequest(
            f"Could not find the draft model '{name}' for load. Check the model name?", param="draft_model_name"
        )
    return str(spec.path)


def _modules(spec: ModelSpec) -> int:
    """How many "modules" a load reports: the model's layers (TabbyAPI counts its modules), else percent."""
    if spec.path is None:
        return _FALLBACK_MODULES
    try:
        blocks = read_gguf(spec.path).arch_value("block_count")
    except GGUFError:
        return _FALLBACK_MODULES
    return blocks if isinstance(blocks, int) and blocks > 0 else _FALLBACK_MODULES


@tabby_endpoint
async def load(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    wire = decode.parse(schemas.ModelLoadRequest, await read_request(request))
    try:
        spec = services.registry.get(wire.model_name)
    except ModelNotFound:
        raise BadRequest(
            f"Could not find the model '{wire.model_name}' for load. Check the model name?", param="model_name"
        ) from None
    options = decode.load_options(wire, _draft_path(services, wire), spec.kind)
    changed = services.registry.runtime_settings(spec.id) != options
    spec = services.registry.set_runtime(spec.id, options)
    if changed and services.manager.state(spec.id) is ModelState.LOADED:
        await services.manager.unload(spec.id, grace=0.0 if wire.skip_queue else None)
    modules = _modules(spec)
    loading = services.background(services.manager.load(spec.id), name=f"tabby-load-{spec.id}")
    if not wire.stream:
        await asyncio.shield(loading)
        return json_response({"model_type": "model", "module": modules, "modules": modules, "status": "finished"})
    return event_stream(_progress(services, spec.id, loading, modules))


async def _progress(
    services: Services, model_id: str, loading: asyncio.Task[None], modules: int
) -> AsyncIterator[bytes]:
    """TabbyAPI's load events: `processing` per module as the engine reports progress, then `finished`; an
    error event when the load fails. A client that leaves does not stop the load."""
    shown = 0
    while not loading.done():
        await asyncio.wait({loading}, timeout=_POLL)
        status = next((s for s in services.manager.statuses() if s.id == model_id), None)
        progress = status.progress if status is not None else None
        module = min(modules - 1, int((progress or 0.0) * modules))
        while shown < module:
            shown += 1
            yield encode.load_event(shown, modules, "processing")
    error = loading.exception()
    if error is not None:
        failure = error if isinstance(error, SomnerError) else SomnerError("The model could not be loaded")
        yield encode.error_event(failure)
        return
    yield encode.load_event(modules, modules, "processing")
    yield encode.load_event(modules, modules, "finished")


@tabby_endpoint
async def unload(request: Request) -> Response:
    """The named model (Somner's extension `model`), else every loaded model (TabbyAPI has one)."""
    require_admin(request)
    services = services_of(request)
    wire = await unload_request(request)
    if wire.model:
        names = [current_model(request, wire.model).id]
    else:
        names = [s.id for s in services.manager.statuses() if s.state is ModelState.LOADED]
    if not names or all(services.manager.state(name) is not ModelState.LOADED for name in names):
        raise Unavailable(NO_MODEL)
    await asyncio.gather(*(services.manager.unload(name) for name in names))
    return json_response(None)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/model", model_card, methods=["GET"]),
        Route("/v1/model/list", model_list, methods=["GET"]),
        Route("/v1/model/draft/list", draft_list, methods=["GET"]),
        Route("/v1/model/load", load, methods=["POST"]),
        Route("/v1/model/unload", unload, methods=["POST"]),
    ]
