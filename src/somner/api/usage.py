"""The calling key's own usage, for any key: `GET /usage/series` and `GET /usage/errors` (the console's usage page
for keys that are not admin keys). The same parameters and answers as the admin reports (`api/admin/usage.py`),
restricted to the caller's key on the server: a key never sees another key's records. Split `by=model` only.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.admin.usage import choice, csv_response, limit_of, since_of
from somner.api.handlers import json_response, services_of
from somner.api.openai.routes import openai_endpoint
from somner.api.principal import principal_of
from somner.gateway.keys import INFERENCE


def _own_key(request: Request) -> str | None:
    """The caller's key id (None with auth off, where anyone sees everything)."""
    principal = principal_of(request)
    principal.require(INFERENCE)
    return principal.key_id


@openai_endpoint
async def own_series(request: Request) -> Response:
    """`?since=24h&bucket=hour|day&by=model&format=json|csv`"""
    key_id = _own_key(request)
    bucket = choice(request, "bucket", ("hour", "day"), "hour")
    by = choice(request, "by", ("model",), None)
    form = choice(request, "format", ("json", "csv"), "json")
    since = since_of(request.query_params.get("since", "24h"))
    services = services_of(request)
    await services.recorder.flush()
    rows = await services.usage.series(since, bucket, by, key_id=key_id)  # type: ignore[arg-type]
    if form == "csv":
        return csv_response(rows, f"somner-my-usage-{bucket}{f'-by-{by}' if by else ''}.csv")
    return json_response({"object": "list", "since": since.isoformat(), "bucket": bucket, "by": by, "data": rows})


@openai_endpoint
async def own_errors(request: Request) -> Response:
    """`?since=7d&limit=20`"""
    key_id = _own_key(request)
    since = since_of(request.query_params.get("since", "7d"))
    limit = limit_of(request, 20)
    services = services_of(request)
    await services.recorder.flush()
    rows = await services.usage.errors(since, limit, key_id=key_id)
    return json_response({"object": "list", "since": since.isoformat(), "data": rows})


def routes() -> list[BaseRoute]:
    return [
        Route("/usage/series", own_series, methods=["GET"]),
        Route("/usage/errors", own_errors, methods=["GET"]),
    ]
