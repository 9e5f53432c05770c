"""TabbyAPI's chat template calls. Templates are Jinja files in the templates folder (`templates_dir`, named by
their stem) or Somner's built-ins; switching sets the model's `template` (a run-time setting) and reloads it;
unloading goes back to the model's own template (from its configuration or its GGUF) — a Somner model always has
one, so chat completions stay available (TabbyAPI disables them)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import json_response, read_request, services_of
from somner.api.principal import principal_of
from somner.api.tabby.access import current_model, reload, require_admin, unload_request
from somner.api.tabby.render import tabby_endpoint
from somner.core.template_names import BUILTIN_TEMPLATES, TEMPLATE_ALIASES
from somner.errors import BadRequest, SomnerError
from somner.models.manager import ModelState
from somner.models.names import is_valid_model_name
from somner.models.registry import ModelSpec
from somner.services import Services
from somner.wire.tabby import decode, schemas


def _files(services: Services) -> list[str]:
    folder = services.paths.templates_dir
    return sorted(p.stem for p in folder.glob("*.jinja") if p.is_file()) if folder.is_dir() else []


@tabby_endpoint
async def template_list(request: Request) -> Response:
    """Admins: every template that can be switched to. Others: the current model's template."""
    services = services_of(request)
    if principal_of(request).rights.admin:
        names = _files(services) + [name for name in BUILTIN_TEMPLATES if name not in _files(services)]
    else:
        try:
            template = current_model(request).entry.template
        except SomnerError:
            template = None
        names = [template.rsplit("/", 1)[-1].removesuffix(".jinja")] if template else []
    return json_response({"object": "list", "data": names})


async def _apply(services: Services, spec: ModelSpec, template: str | None) -> None:
    settings = services.registry.runtime_settings(spec.id)
    settings.pop("template", None)
    if template is not None:
        settings["template"] = template
    spec = services.registry.set_runtime(spec.id, settings)
    if services.manager.state(spec.id) is ModelState.LOADED:
        await reload(services, spec)


@tabby_endpoint
async def switch(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    wire = decode.parse(schemas.TemplateSwitchRequest, await read_request(request))
    name = wire.prompt_template_name.removesuffix(".jinja")
    known = _files(services)
    if not is_valid_model_name(name) or (
        name not in known and TEMPLATE_ALIASES.get(name, name) not in BUILTIN_TEMPLATES
    ):
        raise BadRequest(
            f"The template name {wire.prompt_template_name} doesn't exist. Check the spelling?",
            param="prompt_template_name",
        )
    await _apply(services, current_model(request, wire.model), name)
    return json_response(None)


@tabby_endpoint
async def unload(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    await _apply(services, current_model(request, (await unload_request(request)).model), None)
    return json_response(None)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/template/list", template_list, methods=["GET"]),
        Route("/v1/templates", template_list, methods=["GET"]),
        Route("/v1/template/switch", switch, methods=["POST"]),
        Route("/v1/template/unload", unload, methods=["POST"]),
    ]
