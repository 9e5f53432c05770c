"""`GET /admin/logs/stream`: the request log, live, as server-sent events (admin keys only).

Each event is one request's log line as JSON (`data: {...}`): time, request id, method, route, dialect, model,
status, tokens, latency and key prefix; never prompt or completion text (those are only ever stored with the
usage records, when `log_requests` is on). The stream starts with the most recent requests (`replay=false`
skips them), sends a keep-alive comment when quiet, and ends when the server begins to drain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.handlers import services_of
from somner.api.openai.routes import openai_endpoint
from somner.api.principal import require_admin
from somner.api.streaming import event_stream
from somner.errors import BadRequest
from somner.observability.request_feed import Subscription

KEEPALIVE_SECONDS = 15.0


async def _events(subscription: Subscription) -> AsyncIterator[bytes]:
    yield b": request log\n\n"  # the headers and a first byte go out at once: the client knows it is connected
    try:
        async for event in subscription.events():
            yield b"data: " + orjson.dumps(event) + b"\n\n"
    finally:
        subscription.close()


@openai_endpoint
async def log_stream(request: Request) -> Response:
    require_admin(request)
    replay = request.query_params.get("replay", "true")
    if replay not in ("true", "false"):
        raise BadRequest("'replay' is true or false.", param="replay")
    services = services_of(request)
    subscription = services.request_feed.subscribe(replay=replay == "true")
    return event_stream(
        _events(subscription),
        on_close=_closer(subscription),
        keepalive_interval=KEEPALIVE_SECONDS,
        stop=services.cutoff,
    )


def _closer(subscription: Subscription) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        subscription.close()  # (also when the body never started: the client left at once)

    return close


def log_routes() -> list[BaseRoute]:
    return [Route("/admin/logs/stream", log_stream, methods=["GET"])]
