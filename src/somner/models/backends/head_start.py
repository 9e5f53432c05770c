"""A head start for the default model's engine: `somner serve` starts its worker before it builds the gateway.

A cold start's critical path was the gateway's imports and set-up (about a second), then the worker's own imports
and model load (another second), one after the other. `begin` (called by `somner serve` right after reading its
settings, before importing the app) vets the default model's file and spawns its worker at once, so both halves
run side by side. When the manager then loads that model, the worker backend `claim`s the waiting process instead
of starting one, if it is the very command the backend would run (the same spec after the manager fitted its slots
to the memory budget: anything else and the head start is not used). `discard` ends a head start nobody claimed
(the server is up, or stopping).

The waiting process is a `subprocess.Popen` (the event loop does not exist yet); `Adopted` gives it the interface
of an asyncio subprocess that the backend uses.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class HeadStart:
    spec_id: str
    command: list[str]
    socket_path: Path
    process: subprocess.Popen[bytes]


class _Waiting:
    head: HeadStart | None = None  # (one at most: the default model's)


def spawn(spec_id: str, command_at: Callable[[Path], list[str]]) -> HeadStart:
    """Start `command_at(socket)` now (its socket in a private directory of its own) and keep it for `claim`."""
    discard()
    directory = Path(tempfile.mkdtemp(prefix="somner-"))  # (mode 0700; short enough for a socket path)
    atexit.register(shutil.rmtree, directory, True)
    socket_path = directory / "w.sock"
    command = command_at(socket_path)
    process = subprocess.Popen(  # noqa: S603 (our own worker; its stdin a pipe: it exits when this process does)
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _Waiting.head = HeadStart(spec_id, command, socket_path, process)
    log.debug("engine for %s started ahead (pid %d)", spec_id, process.pid)
    return _Waiting.head


def claim(spec_id: str, command_at: Callable[[Path], list[str]]) -> HeadStart | None:
    """The waiting head start, if it runs exactly what `command_at` would for `spec_id` (and still runs)."""
    head = _Waiting.head
    if head is None or head.spec_id != spec_id or head.process.poll() is not None:
        return None
    if command_at(head.socket_path) != head.command:
        log.info("the engine started ahead for %s runs other settings: starting another", spec_id)
        return None
    _Waiting.head = None
    return head


def discard() -> None:
    """End a head start nobody claimed."""
    head, _Waiting.head = _Waiting.head, None
    if head is None:
        return
    if head.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            head.process.send_signal(signal.SIGTERM)
        try:
            head.process.wait(10)
        except subprocess.TimeoutExpired:
            head.process.kill()
            head.process.wait()
    if head.process.stdin is not None:
        head.process.stdin.close()
    if head.process.stdout is not None:
        head.process.stdout.close()
    shutil.rmtree(head.socket_path.parent, ignore_errors=True)


class Adopted:
    """A `subprocess.Popen` with the parts of `asyncio.subprocess.Process` the worker backend uses."""

    def __init__(self, process: subprocess.Popen[bytes], stdout: asyncio.StreamReader) -> None:
        self._process = process
        self.stdout = stdout
        self.stdin = process.stdin

    @classmethod
    async def of(cls, process: subprocess.Popen[bytes]) -> Adopted:
        """Its output read on the running loop."""
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
        return cls(process, reader)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    async def wait(self) -> int:
        return await asyncio.to_thread(self._process.wait)

    def send_signal(self, sig: int) -> None:
        self._process.send_signal(sig)

    def kill(self) -> None:
        self._process.kill()
