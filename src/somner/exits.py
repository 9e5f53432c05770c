"""How a child process (an engine, a gateway process) ended, in words for logs and client-safe messages."""

from __future__ import annotations

import signal


def describe_exit(status: int | None) -> str:
    """ "exited with status 2", "was killed by SIGKILL" (asyncio's negative statuses are signals)."""
    if status is None:
        return "stopped"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"
