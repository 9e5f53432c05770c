"""`GET /admin/usage?since=7d&by=user|key|model|day`: the same table as `somner usage`."""

from __future__ import annotations

import datetime as dt

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import services_of
from somner.api.openai.routes import openai_endpoint
from somner.api.principal import require_admin
from somner.durations import parse_duration
from somner.errors import BadRequest

GROUPS = ("user", "key", "model", "day")


def since_of(text: str) -> dt.datetime:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise BadRequest(f"Invalid value for 'since': {exc}", param="since") from None
    if seconds < 0:
        raise BadRequest("'since' is a duration back from now, e.g. 7d.", param="since")
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


@openai_endpoint
async def usage_summary(request: Request) -> Response:
    require_admin(request)
    by = request.query_params.get("by", "user")
    if by not in GROUPS:
        raise BadRequest(f"'by' is one of {', '.join(GROUPS)}.", param="by")
    since = since_of(request.query_params.get("since", "7d"))
    await services_of(request).recorder.flush()
    rows = await services_of(request).usage.summary(since, by)  # type: ignore[arg-type]
    body = {"object": "list", "since": since.isoformat(), "by": by, "data": rows}
    return Response(orjson.dumps(body), media_type="application/json")


def usage_routes() -> list[BaseRoute]:
    return [Route("/admin/usage", usage_summary, methods=["GET"])]
