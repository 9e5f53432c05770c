"""Admission: the checks a request passes before any engine work, and the ticket that follows it to the end.

`Gateway.admit` checks the key's scope and model allow-list, the size limits, the key's rate limits and quotas
(429), then waits for a turn in the fair queue (503 when full or too long). The returned `Ticket` is finished
exactly once, however the request ends: it frees the turn, charges the tokens to the key's limits, and writes the
one usage record of the request.

The limiter is in memory (one process) or in Redis (several replicas): then a key's `max_concurrent` is also a
slot shared by the replicas, held after the local turn is granted and given back with it. `Ticket.finish` stays
synchronous: a shared limiter charges and releases in the background.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field

from somner.core import Usage
from somner.errors import BadRequest, RateLimited, SomnerError
from somner.gateway.keys import INFERENCE, Principal
from somner.gateway.queue import FairQueue, Permit
from somner.gateway.ratelimit import Lease, Limiter, Reservation
from somner.gateway.usage import UsageRecorder
from somner.settings import LimitSettings
from somner.store.usage import UsageRecord


@dataclass(eq=False)
class Ticket:
    gateway: Gateway
    principal: Principal
    request_id: str
    model: str
    dialect: str
    route: str
    bytes_in: int
    permit: Permit
    lease: Lease | None = None
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    wall_start: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    usage: Usage = field(default_factory=Usage)
    ttft_ms: float | None = None
    bytes_out: int = 0
    finished: bool = False
    ended: float | None = None  # perf_counter at finish
    status: int | None = None

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0

    @property
    def token_gap_seconds(self) -> float | None:
        """The mean time between generated tokens after the first (None for fewer than two)."""
        tokens = self.usage.completion_tokens
        if self.ttft_ms is None or self.ended is None or tokens < 2:
            return None
        return max(0.0, self.ended - self.started - self.ttft_ms / 1000.0) / (tokens - 1)

    def finish(
        self,
        status: int,
        *,
        usage: Usage | None = None,
        disconnected: bool = False,
        prompt_text: str | None = None,
        completion_text: str | None = None,
    ) -> None:
        if self.finished:
            return
        self.finished = True
        self.ended = time.perf_counter()
        self.status = status
        if usage is not None:
            self.usage = usage
        self.gateway._finish(self, status, disconnected, prompt_text, completion_text)


class Gateway:
    def __init__(
        self,
        limits: LimitSettings,
        limiter: Limiter,
        queue: FairQueue,
        recorder: UsageRecorder,
        *,
        log_requests: bool,
    ) -> None:
        self.limits = limits
        self.limiter = limiter
        self.queue = queue
        self.recorder = recorder
        self.log_requests = log_requests
        self.in_flight = 0

    def check_request(
        self, principal: Principal, models: tuple[str, ...], max_tokens: int | None, messages: int = 0
    ) -> None:
        """What can be refused from the request alone: scope, model allow-list, size limits (no quota spent)."""
        principal.require(INFERENCE)
        if not any(principal.rights.may_use(name) for name in models):
            principal.require_model(models[0])
        ceiling = self.limits.max_tokens
        if ceiling is not None and max_tokens is not None and max_tokens > ceiling:
            raise BadRequest(f"max_tokens may be at most {ceiling} on this server.", param="max_tokens")
        if messages > self.limits.max_messages:
            raise BadRequest(f"At most {self.limits.max_messages} messages per request.", param="messages")

    async def admit(
        self,
        principal: Principal,
        *,
        lane: str,
        request_id: str,
        model: str,
        dialect: str,
        route: str,
        bytes_in: int,
    ) -> Ticket:
        """Rate limits, then a turn in the queue. `lane` is the fairness unit (the key, or the client address)."""
        reservation: Reservation | None = None
        headers: dict[str, str] = {}
        if principal.key_id is not None:
            verdict, reservation = await self.limiter.reserve(principal.key_id, principal.rights, time.time())
            headers = verdict.headers
            if not verdict.allowed:
                retry = str(max(1, round(verdict.retry_after + 0.5)))
                raise RateLimited(verdict.reason, code=verdict.code, headers={**headers, "Retry-After": retry})
        lease: Lease | None = None
        limit = principal.rights.max_concurrent
        try:
            permit = await self.queue.enter(lane, limit)
            if principal.key_id is not None and limit is not None:
                try:
                    lease = await self.limiter.hold(principal.key_id, limit, self.queue.timeout)
                except BaseException:
                    self.queue.leave(permit)
                    raise
        except BaseException:
            if reservation is not None:
                await self.limiter.cancel(reservation)  # refused for concurrency: no quota spent
            raise
        self.in_flight += 1
        return Ticket(self, principal, request_id, model, dialect, route, bytes_in, permit, lease, headers)

    def _finish(
        self, ticket: Ticket, status: int, disconnected: bool, prompt: str | None, completion: str | None
    ) -> None:
        self.in_flight -= 1
        self.queue.leave(ticket.permit)
        if ticket.lease is not None:
            self.limiter.release(ticket.lease)
        usage = ticket.usage
        principal = ticket.principal
        if principal.key_id is not None:
            tokens = usage.prompt_tokens + usage.completion_tokens
            self.limiter.settle(principal.key_id, principal.rights, tokens, time.time())
        self.recorder.record(
            UsageRecord(
                record_id=os.urandom(16).hex(),
                request_id=ticket.request_id,
                time=ticket.wall_start,
                user_name=ticket.principal.user,
                key_id=ticket.principal.key_id,
                model=ticket.model,
                dialect=ticket.dialect,
                route=ticket.route,
                status=status,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                ttft_ms=ticket.ttft_ms,
                latency_ms=(time.perf_counter() - ticket.started) * 1000.0,
                bytes_in=ticket.bytes_in,
                bytes_out=ticket.bytes_out,
                disconnected=disconnected,
                prompt_text=prompt if self.log_requests else None,
                completion_text=completion if self.log_requests else None,
            )
        )


def status_of(error: BaseException) -> int:
    return error.status if isinstance(error, SomnerError) else 500
