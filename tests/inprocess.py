"""Running the gateway app with uvicorn in a background thread, for tests that need a real socket and also
want to look inside the server (its services)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from somner.app import create_app
from somner.http_server import Server, server_config
from somner.services import Services
from somner.settings import Settings
from tests.servers import free_port

NO_AUTH = {"enabled": False}
"""Settings for tests that are not about keys: the gateway listens on loopback only, so auth may be off."""


class ThreadedGateway:
    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.app = create_app(settings, services=services)
        self.services: Services = self.app.state.services
        self.port = free_port()
        self.server = Server(server_config(self.app, host="127.0.0.1", port=self.port, timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedGateway:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(60)
