"""TabbyAPI's sampler override calls: list the presets and the active overrides, switch to a preset (or an inline
set), unload. The overrides apply to every generation on every dialect (see `models.presets`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import json_response, read_request, services_of
from somner.api.principal import principal_of
from somner.api.tabby.access import require_admin
from somner.api.tabby.render import tabby_endpoint
from somner.wire.tabby import decode, schemas


@tabby_endpoint
async def override_list(request: Request) -> Response:
    presets = services_of(request).presets
    names = presets.names() if principal_of(request).rights.admin else []
    return json_response({"selected_preset": presets.selected, "overrides": presets.listing(), "presets": names})


@tabby_endpoint
async def switch(request: Request) -> Response:
    require_admin(request)
    wire = decode.parse(schemas.SamplerOverrideSwitchRequest, await read_request(request))
    services_of(request).presets.switch(wire.preset, wire.overrides)
    return json_response(None)


@tabby_endpoint
async def unload(request: Request) -> Response:
    require_admin(request)
    services_of(request).presets.unload()
    return json_response(None)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/sampling/override/list", override_list, methods=["GET"]),
        Route("/v1/sampling/overrides", override_list, methods=["GET"]),
        Route("/v1/sampling/override/switch", switch, methods=["POST"]),
        Route("/v1/sampling/override/unload", unload, methods=["POST"]),
    ]
