"""What the supervisor sends a gateway process it starts, and the command line that starts it.

The orders travel pickled through the process's stdin: the settings exactly as the supervisor resolved them (file,
environment and flags, secrets included). Kept apart from `child` so the CLI and the supervisor can use them
without importing the server.
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass
from typing import BinaryIO

from somner.settings import Settings

FLAG = "--gateway-process"


@dataclass(frozen=True, slots=True)
class Orders:
    """What the supervisor tells gateway process `number` (1..workers; a restarted process keeps its number)."""

    settings: Settings
    number: int
    supervisor_pid: int
    ready_fd: int  # the write end of a pipe the supervisor reads: one byte once this process serves
    log_to_stderr: bool


def command(number: int) -> list[str]:
    """The command line of gateway process `number` (readable in `ps`: `... -m somner serve --gateway-process 2`)."""
    return [sys.executable, "-m", "somner", "serve", FLAG, str(number)]


def encode(orders: Orders) -> bytes:
    return pickle.dumps(orders, protocol=pickle.HIGHEST_PROTOCOL)


def read_orders(stream: BinaryIO) -> Orders:
    # Pickle is safe here: the bytes come from our own supervisor, through a pipe only it and this process hold.
    try:
        orders = pickle.load(stream)  # noqa: S301
    except pickle.UnpicklingError as exc:
        raise ValueError(f"unreadable orders: {exc}") from None
    if not isinstance(orders, Orders):
        raise ValueError("the supervisor sent no orders")
    return orders
