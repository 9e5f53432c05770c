"""One gateway process of several: `python -m somner serve --gateway-process N`, started by the supervisor.

It reads its orders (`orders`) from stdin, so a process restarted hours later serves with the settings the
supervisor resolved at start, even if the file changed since. It listens with SO_REUSEPORT on the shared port,
runs the ordinary app (whose health port is shared the same way, see `app`), and writes one byte to `ready_fd`
once it serves, so the supervisor can tell a process that cannot start from one that failed later.

It runs in a session of its own, so a Ctrl-C on the terminal reaches only the supervisor, which passes the stop
on exactly once; and it dies with the supervisor (Linux: PR_SET_PDEATHSIG with SIGTERM, so it still drains).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys

import uvicorn

from somner.errors import SomnerError
from somner.gateway_processes.listening import listening_socket
from somner.gateway_processes.orders import Orders, read_orders
from somner.http_limits import gateway_protocol
from somner.http_server import Server, server_config
from somner.models.registry import ModelConfigError
from somner.observability.logging import close_log_files, configure_server_logging
from somner.settings import resolve_data_dir

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with(supervisor_pid: int) -> bool:
    """Ask for SIGTERM when the supervisor dies; False when it is already gone (we were reparented)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == supervisor_pid


def run_gateway_process(number: int) -> int:
    """Serve as gateway process `number` until told to stop; the exit status (0 after a drain)."""
    try:
        orders = read_orders(sys.stdin.buffer)
    except (OSError, EOFError, ValueError) as exc:
        print(f"error: gateway process {number} got no orders: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if orders.number != number or not _die_with(orders.supervisor_pid):
        return 1
    with contextlib.suppress(OSError):
        os.set_inheritable(orders.ready_fd, False)  # engines started from here must not hold the pipe open
    settings = orders.settings
    try:
        configure_server_logging(
            settings.log_level,
            resolve_data_dir(settings) / "logs",
            log_format=settings.log_format,
            max_bytes=int(settings.log_max_bytes),
            keep=settings.log_keep,
            to_stderr=orders.log_to_stderr,
            gateway_process=number,
            tracebacks=not settings.strict_privacy,
        )
    except OSError as exc:
        print(f"error: gateway process {number} cannot write its log file: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    try:
        return _serve(orders)
    except Exception:
        log.exception("gateway process %d failed", number)
        return 1
    finally:
        close_log_files()


def _serve(orders: Orders) -> int:
    from somner.app import create_app

    settings = orders.settings
    try:
        app = create_app(settings)
    except (SomnerError, ModelConfigError) as exc:
        log.error("gateway process %d cannot start: %s", orders.number, getattr(exc, "message", exc))
        return 1
    try:
        listener = listening_socket(settings.host, settings.port, shared=True)
    except OSError as exc:
        log.error(
            "gateway process %d cannot listen on %s:%s: %s", orders.number, settings.host, settings.port, exc.strerror
        )
        return 1
    server = _GatewayProcessServer(
        server_config(app, timeout_graceful_shutdown=settings.drain_timeout, http=gateway_protocol(settings.limits)),
        orders.ready_fd,
    )
    log.info(
        "gateway process %d (pid %d) starting on http://%s:%d", orders.number, os.getpid(), settings.host, settings.port
    )
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
    log.info("gateway process %d stopped", orders.number)
    return 0


class _GatewayProcessServer(Server):
    """The gateway's server, which tells the supervisor once it serves."""

    def __init__(self, config: uvicorn.Config, ready_fd: int) -> None:
        super().__init__(config)
        self._ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._report_ready()

    def _report_ready(self) -> None:
        # The pipe stays open: its end of file, when this process exits, wakes the supervisor at once.
        with contextlib.suppress(OSError):  # the supervisor is gone: PR_SET_PDEATHSIG stops us anyway
            os.write(self._ready_fd, b"1")
