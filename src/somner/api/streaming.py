"""Streaming responses and client disconnects.

A stream releases what it holds (the model lease, the engine's stream) when the response is over, whether it
ended, failed, or the client went away (`event_stream(..., on_close=...)`); cleanup is shielded from the
cancellation that a disconnect causes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import anyio
from starlette.requests import Request

from somner.http_server import ManagedStream

T = TypeVar("T")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class ClientDisconnected(Exception):
    """The client went away before the response was ready."""


def event_stream(
    body: AsyncIterator[bytes],
    on_close: Callable[[], Awaitable[None]] | None = None,
    media_type: str = "text/event-stream",
    headers: Mapping[str, str] | None = None,
) -> ManagedStream:
    """A streamed response whose `on_close` runs however it ends (finished, failed, or the client left)."""
    return ManagedStream(body, on_close=on_close, media_type=media_type, headers={**SSE_HEADERS, **(headers or {})})


async def shielded(cleanup: Callable[[], Awaitable[None]]) -> None:
    with anyio.CancelScope(shield=True):
        await cleanup()


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (for responses that are not streamed)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    listener = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnected
