"""An engine process's stdout and stderr, copied by the gateway into that model's rotating log file.

Why the gateway copies rather than the engine writing its own file: everything the engine prints reaches the
file, native llama.cpp output and a crash's last words included, with the same rotation for our worker and for
foreign engines (llama-server, vLLM). The copy splits at line ends, so a rotation never cuts a line in two
(unless a line is longer than `_MAX_PENDING`). It ends when every writer of the pipe has closed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable

from somner.observability.logfiles import RotatingFile

log = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_MAX_PENDING = 256 * 1024
_FINISH_WAIT = 2.0


_PROGRESS = re.compile(rb"somner worker: loading (\d{1,3})%")


def load_progress(data: bytes) -> float | None:
    """The last load progress (0..1) our worker reported in `data` (its `somner worker: loading N%` lines)."""
    found = _PROGRESS.findall(data)
    return min(100, int(found[-1])) / 100.0 if found else None


async def copy_output(
    stream: asyncio.StreamReader, files: RotatingFile, on_progress: Callable[[float], None] | None = None
) -> None:
    """Copy `stream` into `files` until end of file; the file is closed when the copy ends. `on_progress` hears
    the load progress the engine reports."""
    pending = b""
    try:
        while True:
            data = await stream.read(_READ_SIZE)
            if not data:
                break
            if on_progress is not None and b"loading" in data:
                progress = load_progress(data)
                if progress is not None:
                    on_progress(progress)
            pending += data
            cut = pending.rfind(b"\n") + 1
            if cut == 0 and len(pending) < _MAX_PENDING:
                continue
            if cut == 0:
                cut = len(pending)
            files.write(pending[:cut])
            pending = pending[cut:]
        files.write(pending)
    except OSError as exc:  # a full or vanished disk must not take the gateway down
        log.warning("cannot write engine output to %s: %s", files.path, exc)
    finally:
        files.close()


def start_copy(
    stream: asyncio.StreamReader | None,
    files: RotatingFile,
    name: str,
    on_progress: Callable[[float], None] | None = None,
) -> asyncio.Task[None] | None:
    if stream is None:
        return None
    return asyncio.create_task(copy_output(stream, files, on_progress), name=name)


async def finish_copy(task: asyncio.Task[None] | None) -> None:
    """Wait for the copy to reach end of file (the process has exited); give up after `_FINISH_WAIT` seconds,
    since a grandchild the engine left behind may still hold the pipe open."""
    if task is None:
        return
    try:
        async with asyncio.timeout(_FINISH_WAIT):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
