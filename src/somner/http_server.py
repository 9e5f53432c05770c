"""HTTP serving plumbing shared by `somner serve` and `somner worker`: uvicorn, and streamed responses.

Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which makes the process die by the signal before
our own cleanup runs and report a signal exit to systemd. Here a signal means "shut down gracefully, clean
up, exit 0": the listening socket closes (new connections are refused, idle keep-alive connections closed),
requests in flight, streams included, get up to `timeout_graceful_shutdown` seconds to finish (then they are
cancelled; their streams still record usage, see `ManagedStream`), and only then does the app's lifespan
shut down (usage records flushed, engines stopped). A second signal skips the wait.
"""

from __future__ import annotations

import contextlib
import logging
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        in_flight = len(self.server_state.tasks)
        log.info(
            "stopping: no new connections; %d request(s) in flight get up to %gs to finish",
            in_flight,
            self.config.timeout_graceful_shutdown or 0,
        )
        on_drain = getattr(getattr(self.config.app, "state", None), "on_drain", None)
        if callable(on_drain):
            on_drain()  # e.g. /ready turns 503 (on the health port) while requests drain
        await super().shutdown(sockets)


class EmbeddedServer(uvicorn.Server):
    """A second server run inside another's event loop (the health port): the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: Any, *, lifespan: Literal["on", "off"] = "on", **options: Any) -> uvicorn.Config:
    """Uvicorn settings for Somner: uvloop and httptools, no access log (we log requests ourselves), and no
    X-Forwarded-* rewriting (nothing uses the client's address but the auth-off queue lanes, and the rewriting
    costs every request a middleware layer)."""
    return uvicorn.Config(
        app,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
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
    """

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._body, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self._on_close is not None:
                    await self._on_close()
