"""Streaming responses and client disconnects.

A stream releases what it holds (the model lease, the engine's stream) when the response is over, whether it
ended, failed, or the client went away (`event_stream(..., on_close=...)`); cleanup is shielded from the
cancellation that a disconnect causes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

from somner.errors import Unavailable
from somner.http_server import ManagedStream

T = TypeVar("T")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class ClientDisconnected(Exception):
    """The client went away before the response was ready."""


KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: every SSE client ignores it


def event_stream(
    body: AsyncIterator[bytes],
    on_close: Callable[[], Awaitable[None]] | None = None,
    media_type: str = "text/event-stream",
    headers: Mapping[str, str] | None = None,
    *,
    keepalive_interval: float = 0.0,
    stop: asyncio.Event | None = None,
    on_stop: Callable[[], bytes] | None = None,
) -> ManagedStream:
    """A streamed response whose `on_close` runs however it ends (finished, failed, or the client left). SSE
    streams get keep-alive comments after `keepalive_interval` seconds of silence (NDJSON streams cannot carry
    any); `stop` ends the stream with `on_stop()`'s bytes (see `ManagedStream`)."""
    return ManagedStream(
        body,
        on_close=on_close,
        media_type=media_type,
        headers={**SSE_HEADERS, **(headers or {})},
        keepalive=KEEPALIVE if media_type == "text/event-stream" else None,
        keepalive_interval=keepalive_interval,
        stop=stop,
        on_stop=on_stop,
    )


async def shielded(cleanup: Callable[[], Awaitable[None]]) -> None:
    with anyio.CancelScope(shield=True):
        await cleanup()


def shutting_down() -> Unavailable:
    """What a request still running at the drain deadline ends with."""
    return Unavailable("The server is shutting down; try again shortly.", headers={"Retry-After": "5"})


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (for responses that are not streamed), or when
    the server's drain deadline passes (`app.state.cutoff`: then `shutting_down()` is raised)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    listener = asyncio.ensure_future(disconnected())
    waiting: set[asyncio.Future[Any]] = {task, listener}
    cutoff: asyncio.Event | None = getattr(request.app.state, "cutoff", None)
    deadline = asyncio.ensure_future(cutoff.wait()) if cutoff is not None else None
    if deadline is not None:
        waiting.add(deadline)
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        for watcher in (listener, deadline):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if listener in done:
        raise ClientDisconnected
    raise shutting_down()
