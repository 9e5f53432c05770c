"""`GET /metrics`: Prometheus text format, or JSON with `Accept: application/json`.

It needs a key with the `metrics` scope (or an admin key) unless `metrics_public` is set; the guard lets it
through without a key then."""

from __future__ import annotations

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.errors import guarded
from somner.api.openai.render import render
from somner.api.principal import principal_of
from somner.gateway.keys import METRICS
from somner.services import Services


@guarded(render)
async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    if not services.settings.metrics_public:
        principal_of(request).require(METRICS)
    await services.gpus.readings()  # (the collector reports the last reading: make it recent)
    if "application/json" in request.headers.get("accept", ""):
        return Response(orjson.dumps(services.metrics.as_json()), media_type="application/json")
    return Response(services.metrics.text(), media_type=CONTENT_TYPE_LATEST)


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
