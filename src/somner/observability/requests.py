"""One observation per request: the metrics and the one log line, written when the response is over.

`RequestObserver` is pure ASGI middleware (no buffering: streams pass through untouched). What it needs to know
is left in the request's scope state by the code that learns it: `serving.begin` leaves the admission ticket
(model, tokens, time to first token, queue wait, key), the error renderers leave the error a request was refused
with. Nothing of the prompt or completion is ever logged here, nor the client's address or user agent; with
`privacy: strict` there is no line at all (the metrics only).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from somner.errors import SomnerError
from somner.gateway.admission import Ticket
from somner.observability.metrics import Metrics, RequestObservation, rejection_reason
from somner.observability.request_feed import RequestFeed

log = logging.getLogger("somner.requests")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TICKET = "somner_ticket"
_ERROR = "somner_error"
UNMATCHED = "unmatched"  # the route label of paths no route serves (bounded: never the raw path)


def request_id_for(scope: Scope) -> str:
    """The request's id: the client's `X-Request-Id` when well-formed, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _CLIENT_ID.fullmatch(candidate):
                return candidate
            break
    return os.urandom(16).hex()  # (as random as uuid4's hex, at a third of the cost)


def remember_ticket(scope: Scope, ticket: Ticket) -> None:
    scope.setdefault("state", {})[_TICKET] = ticket


def note_error(scope: Scope, error: SomnerError) -> None:
    """Record the error a request was answered with (for the refusal counter and the log line)."""
    scope.setdefault("state", {})[_ERROR] = error


class RouteNames:
    """The route template (`/v1/models/{model_id}`) that served a request, found from the endpoint Starlette
    matched; templates are the only path labels, so label sets stay bounded."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes = [r for r in routes if isinstance(r, Route)]
        by_endpoint: dict[int, list[Route]] = {}
        for route in self._routes:
            by_endpoint.setdefault(id(route.endpoint), []).append(route)
        self._by_endpoint = by_endpoint

    def of(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        candidates = self._by_endpoint.get(id(endpoint), []) if endpoint is not None else []
        if len(candidates) == 1:
            return candidates[0].path
        # Several routes share the endpoint, or the request was answered before routing (the guard's 401):
        # find the route the path belongs to.
        for route in candidates or self._routes:
            if route.matches(scope)[0] is not Match.NONE:
                return route.path
        return UNMATCHED


class RequestObserver:
    """Gives every request its id (echoed as `x-request-id`), then observes it once it is over. (One layer for
    both: each middleware layer costs every request a call and a `send` wrapper.)"""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: RouteNames,
        dialect_of: Callable[[str], str],
        feed: RequestFeed | None = None,
        log_lines: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.dialect_of = dialect_of
        self.log_lines = log_lines  # off with `privacy: strict`: metrics only, no line and no feed per request
        self.feed = feed  # the log line's fields, for live subscribers (the console's log tail)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        rid = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            try:
                self._observe(scope, status, time.perf_counter() - started)
            except Exception:  # an observation must never fail a request
                log.exception("could not record request metrics")

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        state: dict[str, Any] = scope.get("state", {})
        ticket: Ticket | None = state.get(_TICKET)
        error: SomnerError | None = state.get(_ERROR)
        if ticket is not None and ticket.status is not None and status == 200:
            status = ticket.status  # a stream that ended with an error event, or a client that left
        route = self.routes.of(scope)
        dialect = self.dialect_of(scope["path"])
        principal = state.get("principal")
        key_id = getattr(principal, "key_id", None) or ""
        if error is not None:
            reason = rejection_reason(error)
            if reason is not None:
                self.metrics.refused(reason)
        model = ticket.model if ticket is not None else ""
        prompt = completion = 0
        if ticket is not None:
            prompt, completion = ticket.usage.prompt_tokens, ticket.usage.completion_tokens
            self.metrics.request(
                RequestObservation(
                    route=route,
                    dialect=dialect,
                    model=model,
                    status=status,
                    seconds=seconds,
                    key=key_id,
                    ttft_seconds=ticket.ttft_ms / 1000.0 if ticket.ttft_ms is not None else None,
                    token_gap_seconds=ticket.token_gap_seconds,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    queue_wait_seconds=ticket.permit.waited,
                )
            )
        else:
            self.metrics.request(
                RequestObservation(route=route, dialect=dialect, model="", status=status, seconds=seconds, key=key_id)
            )
        if not self.log_lines or (route in _QUIET_ROUTES and status < 400):
            return  # health checks and scrapes every few seconds would drown the log
        latency_ms = round(seconds * 1000.0, 1)
        prefix = getattr(principal, "prefix", None) or "-"
        request_id = state.get("request_id", "-")
        fields = {
            "request_id": request_id,
            "method": scope["method"],
            "route": route,
            "dialect": dialect,
            "model": model or None,
            "status": status,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "latency_ms": latency_ms,
            "key_prefix": prefix if prefix != "-" else None,
        }
        log.info(
            "%s %s %s %d tokens=%d+%d %.1fms id=%s key=%s",
            scope["method"],
            route if route != UNMATCHED else scope["path"][:200],
            model or "-",
            status,
            prompt,
            completion,
            latency_ms,
            request_id,
            prefix,
            extra=fields,
        )
        if self.feed is not None and not scope["path"].startswith(_UNFED_PREFIXES):
            self.feed.publish({"time": time.time(), **fields})


_QUIET_ROUTES = frozenset({"/ping", "/health", "/ready", "/metrics"})
# The console's own pages and files, and the tail itself: a log page would otherwise fill its own tail.
_UNFED_PREFIXES = ("/ui/", "/admin/logs/")
