"""Usage for admins: `GET /admin/usage?since=7d&by=user|key|model|day` (the same table as `somner usage`), and
the console's usage page: `/admin/usage/series` (per hour or day, per key or model; `format=csv` for a CSV
export), `/admin/usage/top` (the busiest keys or models), `/admin/usage/errors` (the latest failed requests).
All are aggregated in the database (`store.usage_report`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import json_response, services_of
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


SERIES_BY = ("key", "model", "user")
BUCKETS = ("hour", "day")
_MAX_LIMIT = 1000


def choice(request: Request, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = request.query_params.get(name, default)
    if value is None or (value == "" and default is None):
        return None
    if value not in allowed:
        raise BadRequest(f"'{name}' is one of {', '.join(allowed)}.", param=name)
    return value


def limit_of(request: Request, default: int) -> int:
    text = request.query_params.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= _MAX_LIMIT:
        raise BadRequest(f"'limit' is a whole number from 1 to {_MAX_LIMIT}.", param="limit")
    return int(text)


def csv_response(rows: list[dict[str, Any]], filename: str) -> Response:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


@openai_endpoint
async def usage_series(request: Request) -> Response:
    """`?since=24h&bucket=hour|day&by=key|model|user` (no `by`: all requests together) `&format=json|csv`."""
    require_admin(request)
    bucket = choice(request, "bucket", BUCKETS, "hour")
    by = choice(request, "by", SERIES_BY, None)
    form = choice(request, "format", ("json", "csv"), "json")
    since = since_of(request.query_params.get("since", "24h"))
    services = services_of(request)
    await services.recorder.flush()
    rows = await services.usage.series(since, bucket, by)  # type: ignore[arg-type]
    if form == "csv":
        return csv_response(rows, f"somner-usage-{bucket}{f'-by-{by}' if by else ''}.csv")
    body = {"object": "list", "since": since.isoformat(), "bucket": bucket, "by": by, "data": rows}
    return Response(orjson.dumps(body), media_type="application/json")


@openai_endpoint
async def usage_top(request: Request) -> Response:
    """`?since=7d&by=key|model|user&limit=10`: the busiest first, with tokens, errors and mean latency."""
    require_admin(request)
    by = choice(request, "by", SERIES_BY, "key")
    since = since_of(request.query_params.get("since", "7d"))
    limit = limit_of(request, 10)
    services = services_of(request)
    await services.recorder.flush()
    rows = await services.usage.top(since, by, limit)  # type: ignore[arg-type]
    return json_response({"object": "list", "since": since.isoformat(), "by": by, "data": rows})


@openai_endpoint
async def usage_errors(request: Request) -> Response:
    """`?since=7d&limit=20`: the latest requests answered with status 400 or above, newest first."""
    require_admin(request)
    since = since_of(request.query_params.get("since", "7d"))
    limit = limit_of(request, 20)
    services = services_of(request)
    await services.recorder.flush()
    rows = await services.usage.errors(since, limit)
    return json_response({"object": "list", "since": since.isoformat(), "data": rows})


def usage_routes() -> list[BaseRoute]:
    return [
        Route("/admin/usage", usage_summary, methods=["GET"]),
        Route("/admin/usage/series", usage_series, methods=["GET"]),
        Route("/admin/usage/top", usage_top, methods=["GET"]),
        Route("/admin/usage/errors", usage_errors, methods=["GET"]),
    ]
