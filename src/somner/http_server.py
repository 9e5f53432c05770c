"""Running an ASGI app with uvicorn, shared by `somner serve` and `somner worker`.

Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which makes the process die by the signal before
our own cleanup runs and report a signal exit to systemd. Here a signal means "shut down gracefully, clean
up, exit 0".
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn


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


def server_config(app: Any, **options: Any) -> uvicorn.Config:
    """Uvicorn settings for Somner: uvloop and httptools, no access log (we log requests ourselves)."""
    return uvicorn.Config(
        app,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        **options,
    )


def serve(app: Any, **options: Any) -> None:
    Server(server_config(app, **options)).run()
