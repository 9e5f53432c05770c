"""Serving one admitted request, for every dialect: admission, the model lease, and the one ending.

`begin` resolves the model (an unknown one is a 404 before any quota is spent), applies the gateway's checks and
admission (429/503), then takes a lease on the model (loading it if needed). The returned `Call` must be closed
exactly once, with the outcome: it releases the lease (with the request's keep_alive) and finishes the ticket,
which frees the turn, charges the tokens and writes the usage record.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

from starlette.requests import Request

from somner.api.errors import request_id
from somner.api.principal import lane_of, principal_of
from somner.api.streaming import ClientDisconnected
from somner.core import Chunk
from somner.gateway.admission import Ticket, status_of
from somner.models.manager import Lease
from somner.models.registry import ModelSpec
from somner.services import Services


@dataclass(eq=False)
class Call:
    ticket: Ticket
    lease: Lease
    keep: float | None
    prompt_text: str | None = None
    text: list[str] = field(default_factory=list)  # the completion, kept only when requests are logged
    completed: bool = False
    error_status: int | None = None  # a stream that ended with an error event
    closed: bool = False

    @property
    def spec(self) -> ModelSpec:
        return self.lease.spec

    def observe(self, chunk: Chunk) -> None:
        """Account for one chunk on its way to the client."""
        if chunk.text:
            self.ticket.first_token()
            self.ticket.usage.completion_tokens += 1
            if self.prompt_text is not None:
                self.text.append(chunk.text)
        if chunk.usage is not None:
            self.ticket.usage = dataclasses.replace(chunk.usage)  # a copy: the chunk's own object goes on

    def close(self, status: int, *, disconnected: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.lease.release(self.keep)
        finally:
            self.ticket.finish(
                status,
                disconnected=disconnected,
                prompt_text=self.prompt_text,
                completion_text="".join(self.text) if self.prompt_text is not None else None,
            )

    def close_stream(self) -> None:
        """For streams: completed, ended with an error event, or cut off by the client."""
        if self.completed:
            self.close(200)
        elif self.error_status is not None:
            self.close(self.error_status)
        else:
            self.close(499, disconnected=True)


async def begin(
    request: Request,
    services: Services,
    *,
    model: str,
    dialect: str,
    route: str,
    bytes_in: int,
    max_tokens: int | None = None,
    messages: int = 0,
    keep: float | None = None,
    prompt_text: str | None = None,
) -> Call:
    principal = principal_of(request)
    spec = services.manager.resolve(model)
    services.gateway.check_request(principal, (model, spec.id), max_tokens, messages)
    ticket = await services.gateway.admit(
        principal,
        lane=lane_of(request),
        request_id=request_id(request),
        model=spec.id,
        dialect=dialect,
        route=route,
        bytes_in=bytes_in,
    )
    try:
        lease = await services.manager.acquire(spec.id)
    except BaseException as exc:
        ticket.finish(status_of(exc))
        raise
    logged = prompt_text if services.gateway.log_requests else None
    return Call(ticket=ticket, lease=lease, keep=keep, prompt_text=logged)


def fail(call: Call, error: BaseException) -> None:
    """Close a call whose request failed, or whose client left, before its response started."""
    if isinstance(error, ClientDisconnected | asyncio.CancelledError):
        call.close(499, disconnected=True)
    else:
        call.close(status_of(error))
