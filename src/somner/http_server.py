"""HTTP serving plumbing shared by `somner serve` and `somner worker`: uvicorn, and streamed responses.

Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which makes the process die by the signal before
our own cleanup runs and report a signal exit to systemd. Here a signal means "shut down gracefully, clean
up, exit 0": the listening socket closes (new connections are refused, idle keep-alive connections closed),
requests in flight, streams included, get up to `timeout_graceful_shutdown` seconds to finish (then the app ends
them itself, `app.state.on_cutoff`: each with its dialect's "shutting down" error, usage recorded; whatever is still
left a few seconds later is cancelled), and only then does the app's lifespan shut down (usage records flushed,
engines stopped). A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Literal

import anyio
import uvicorn
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

_CUTOFF_GRACE = 3.0  # seconds between the app's own ending of what runs at the drain deadline and uvicorn's cancel


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        anyio.CancelScope()  # (imports anyio's backend for this loop now, not in the first streamed response)
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = self.config.timeout_graceful_shutdown
        in_flight = len(self.server_state.tasks)
        log.info("stopping: no new connections; %d request(s) in flight get up to %gs to finish", in_flight, drain or 0)
        state = getattr(self.config.app, "state", None)
        on_drain = getattr(state, "on_drain", None)
        if callable(on_drain):
            on_drain()  # e.g. /ready turns 503 (on the health port) while requests drain
        # At the drain deadline the app ends what still runs itself (`on_cutoff`: each stream with its dialect's
        # error event), and uvicorn's cancellation of whatever is left comes a little later.
        on_cutoff = getattr(state, "on_cutoff", None)
        timer: asyncio.TimerHandle | None = None
        if callable(on_cutoff) and drain is not None:
            timer = asyncio.get_running_loop().call_later(drain, on_cutoff)
            self.config.timeout_graceful_shutdown = drain + _CUTOFF_GRACE  # type: ignore[assignment]
        try:
            await super().shutdown(sockets)
        finally:
            if timer is not None:
                timer.cancel()
            self.config.timeout_graceful_shutdown = drain


class EmbeddedServer(uvicorn.Server):
    """A second server run inside another's event loop (the health port): the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(
    app: Any, *, lifespan: Literal["on", "off"] = "on", http: Any = "httptools", **options: Any
) -> uvicorn.Config:
    """Uvicorn settings for Somner: uvloop and httptools (the gateway's with limits: `http_limits`), no access
    log (we log requests ourselves), and no X-Forwarded-* rewriting (nothing uses the client's address but the
    auth-off queue lanes, and the rewriting costs every request a middleware layer)."""
    return uvicorn.Config(
        app,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=http,
        access_log=False,
        proxy_headers=False,
        log_config=None,
        lifespan=lifespan,
        **options,
    )


def serve(app: Any, **options: Any) -> None:
    Server(server_config(app, **options)).run()


class ManagedStream(StreamingResponse):
    """A streamed response that always cleans up, however it ends.

    Starlette cancels the sending task when the client disconnects; the body generator is then left suspended
    (or never started at all), so cleanup written in its `finally` would run late or never. Here the body is
    closed and `on_close` awaited when the response is over, shielded from that cancellation.

    Two options for long streams (the gateway's; the engine worker uses neither):
    - `keepalive`: bytes sent (an SSE comment) whenever `keepalive_interval` seconds pass with nothing sent, so that
      proxies do not cut a stream whose engine is slow to produce. Only a separate ticker task writes them, and only
      while the stream is waiting for its body (never between a body write and the end of the response).
    - `stop`: when this event is set (the server's drain deadline), the body is cancelled and the stream ends with
      `on_stop()`'s bytes (the dialect's error event) and a proper end of the response, instead of being cut off.
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
        keepalive: bytes | None = None,
        keepalive_interval: float = 0.0,
        stop: asyncio.Event | None = None,
        on_stop: Callable[[], bytes] | None = None,
    ) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._body = body
        self._on_close = on_close
        self._keepalive = keepalive if keepalive_interval > 0 else None
        self._interval = keepalive_interval if self._keepalive is not None else math.inf
        self._stop = stop
        self._on_stop = on_stop
        self._started = False  # the response's start went out
        self._sent = 0  # body writes so far
        self._writing = False  # a body write is under way
        self._body_scope = anyio.CancelScope()
        self._ticker_scope = anyio.CancelScope()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self._keepalive is None and self._stop is None:
                await super().__call__(scope, receive, send)
            else:
                await self._supervised(receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._body, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self._on_close is not None:
                    await self._on_close()

    async def _supervised(self, receive: Receive, send: Send) -> None:
        """The stream, a disconnect listener and the ticker (keep-alives, the stop event), as Starlette runs the
        first two: whichever of stream and listener ends first ends the response."""
        try:
            async with anyio.create_task_group() as group:

                async def then_end(func: Callable[[], Awaitable[None]]) -> None:
                    await func()
                    group.cancel_scope.cancel()

                group.start_soon(then_end, functools.partial(self._stream, send))
                group.start_soon(self._tick, send)
                await then_end(functools.partial(self.listen_for_disconnect, receive))
        except BaseExceptionGroup as group_error:  # one failure is raised as itself, as Starlette does
            if len(group_error.exceptions) != 1:
                raise
            raise group_error.exceptions[0] from None

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._started = True
        with self._body_scope:
            async for chunk in self.body_iterator:
                self._writing = True
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                finally:
                    self._writing = False
                self._sent += 1
        self._ticker_scope.cancel()  # (a keep-alive is written whole or not at all: nothing follows the end)
        if self._body_scope.cancelled_caught and self._on_stop is not None:
            final = self._on_stop()
            if final:
                await send({"type": "http.response.body", "body": final, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _tick(self, send: Send) -> None:
        with self._ticker_scope:
            seen = -1
            while True:
                if self._stop is not None:
                    with anyio.move_on_after(self._interval):
                        await self._stop.wait()
                    if self._stop.is_set():
                        self._body_scope.cancel()
                        return
                else:
                    await anyio.sleep(self._interval)
                if self._keepalive is not None and self._started and self._sent == seen and not self._writing:
                    await send({"type": "http.response.body", "body": self._keepalive, "more_body": True})
                seen = self._sent
