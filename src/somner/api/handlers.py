"""What every route handler needs, whatever its dialect: the services, the size-limited body, a JSON response."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from somner.api.body import read_body
from somner.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def json_response(body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


async def read_request(request: Request) -> bytes:
    settings = services_of(request).settings
    return await read_body(request, settings.max_request_bytes, settings.limits.body_timeout)
