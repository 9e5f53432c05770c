"""TabbyAPI's LoRA calls. Adapters are GGUF files in the LoRA folder (`loras_dir`), named by their file stem;
loading some makes them the model's adapters (its run-time settings) and reloads it with them, as TabbyAPI
replaces the active set; unloading removes them. Per request, `lora`/`loras` sets their scales (OpenAI routes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import json_response, read_request, services_of
from somner.api.principal import principal_of
from somner.api.tabby.access import current_model, reload, require_admin, unload_request
from somner.api.tabby.render import tabby_endpoint
from somner.errors import BadRequest, SomnerError
from somner.models.gguf import GGUFError, read_gguf
from somner.models.names import is_valid_model_name
from somner.models.registry import ModelSpec
from somner.wire.tabby import decode, encode, schemas


def _active(spec: ModelSpec) -> list[dict[str, Any]]:
    return [encode.lora_card(lora.path.stem, lora.scale) for lora in spec.entry.loras]


@tabby_endpoint
async def active(request: Request) -> Response:
    spec = current_model(request, request.query_params.get("model"))
    return json_response(encode.lora_list(_active(spec)))


@tabby_endpoint
async def available(request: Request) -> Response:
    """Admins: every adapter of the LoRA folder. Others: the current model's active adapters."""
    services = services_of(request)
    if not principal_of(request).rights.admin:
        try:
            return json_response(encode.lora_list(_active(current_model(request))))
        except SomnerError:
            return json_response(encode.lora_list([]))
    folder = services.paths.loras_dir
    names = sorted(p.stem for p in folder.glob("*.gguf") if p.is_file()) if folder.is_dir() else []
    return json_response(encode.lora_list([encode.lora_card(name, None) for name in names]))


def adapter_file(folder: Path, name: str) -> Path | None:
    """The adapter `name` (a file stem, `.gguf` optional) of the LoRA folder, if it is a GGUF LoRA adapter."""
    stem = name.removesuffix(".gguf")
    if not is_valid_model_name(stem):
        return None
    path = folder / f"{stem}.gguf"
    try:
        info = read_gguf(path)
    except (GGUFError, OSError):
        return None
    if info.metadata.get("general.type") != "adapter" or info.metadata.get("adapter.type") != "lora":
        return None
    return path


@tabby_endpoint
async def load(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    wire = decode.parse(schemas.LoraLoadRequest, await read_request(request))
    if not wire.loras:
        raise BadRequest("List of loras to load is not found.", param="loras")
    folder = services.paths.loras_dir
    if not folder.is_dir():
        raise BadRequest("A parent lora directory does not exist for load. Check your config.yml?")
    spec = current_model(request, wire.model)
    found = [(lora, adapter_file(folder, lora.name)) for lora in wire.loras]
    success = [lora.name for lora, path in found if path is not None]
    failure = [lora.name for lora, path in found if path is None]
    if success:
        previous = services.registry.runtime_settings(spec.id)
        loras = [{"path": str(path), "scale": lora.scaling} for lora, path in found if path is not None]
        spec = services.registry.set_runtime(spec.id, {**previous, "loras": loras})
        try:
            await reload(services, spec)
        except SomnerError:
            services.registry.set_runtime(spec.id, previous)  # the model goes back to what it had
            failure, success = failure + success, []
    return json_response({"success": success, "failure": failure})


@tabby_endpoint
async def unload(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    spec = current_model(request, (await unload_request(request)).model)
    settings = services.registry.runtime_settings(spec.id)
    if spec.entry.loras:
        spec = services.registry.set_runtime(spec.id, {**settings, "loras": []})
        await reload(services, spec)
    return json_response(None)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/lora", active, methods=["GET"]),
        Route("/v1/lora/list", available, methods=["GET"]),
        Route("/v1/loras", available, methods=["GET"]),
        Route("/v1/lora/load", load, methods=["POST"]),
        Route("/v1/lora/unload", unload, methods=["POST"]),
    ]
