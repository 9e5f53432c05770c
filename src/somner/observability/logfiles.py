"""Log files under `<data_dir>/logs/`: `<UTC timestamp>-<kind>.log`, rotated by size, a count kept per kind.

Names start with a sortable UTC timestamp (`20261123T101500Z-server.log`), so `ls` lists them in the order they
were begun and the newest file of a kind is the last one. A kind is what wrote the file: `server` (the gateway's
own log; `server-<n>` for gateway process n of several, see `workers`), `worker-<model id>` (one model's engine
output), `console` (what a `somner start`ed server printed outside logging).

Contract of `RotatingFile`: every `write` lands whole in one file; a new file begins when a write would take the
current one past `max_bytes` (a single write larger than that still goes into one file); after a new file begins,
only the newest `keep` files of the kind remain. Names of one kind strictly increase: a file begun within the same
second as the newest existing one takes the next second, so name order is always creation order.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_NAME = re.compile(r"(?P<stamp>\d{8}T\d{6}Z)-(?P<kind>.+)\.log")
_STAMP = "%Y%m%dT%H%M%SZ"
DEFAULT_MAX_BYTES = 20 * 1024**2
DEFAULT_KEEP = 10


def stamp(moment: float) -> str:
    """The UTC timestamp a log file name starts with, to the second."""
    return time.strftime(_STAMP, time.gmtime(moment))


def _seconds(text: str) -> int:
    return calendar.timegm(time.strptime(text, _STAMP))


def files_of(directory: Path, kind: str) -> list[Path]:
    """The log files of one kind in `directory`, oldest first (the kind must match exactly, not as a suffix)."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is not None and match["kind"] == kind and entry.is_file():
            found.append(entry)
    return sorted(found, key=lambda p: p.name)


def newest_of(directory: Path, kind: str) -> Path | None:
    found = files_of(directory, kind)
    return found[-1] if found else None


def prune(directory: Path, kind: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` files of `kind`; returns what was deleted."""
    old = files_of(directory, kind)[: -keep if keep > 0 else None]
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return old


def new_path(directory: Path, kind: str, now: float) -> Path:
    """A name for a new file of `kind` begun at `now`, later than every existing file of that kind."""
    newest = newest_of(directory, kind)
    moment = int(now)
    if newest is not None:
        match = _NAME.fullmatch(newest.name)
        assert match is not None
        moment = max(moment, _seconds(match["stamp"]) + 1)
    return directory / f"{stamp(moment)}-{kind}.log"


class RotatingFile:
    """Appends bytes to the current file of one kind, beginning a new one past `max_bytes` (thread-safe)."""

    def __init__(
        self,
        directory: Path,
        kind: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep < 1 or max_bytes < 1:
            raise ValueError("keep and max_bytes must be at least 1")
        self.directory = directory
        self.kind = kind
        self.max_bytes = max_bytes
        self.keep = keep
        self._clock = clock
        self._lock = threading.Lock()
        self._handle: BinaryIO | None = None
        self._size = 0
        self._path: Path | None = None

    @property
    def path(self) -> Path | None:
        """The file being written (None before the first write or `open`)."""
        return self._path

    def open(self) -> Path:
        """Begin a new file now (also what a write does when none is open); returns its path."""
        with self._lock:
            return self._begin()

    def _begin(self) -> Path:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = new_path(self.directory, self.kind, self._clock())
        # Unbuffered: each write is one system call, so nothing sits in memory when the process dies.
        self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across writes, closed in close()
        self._size = 0
        self._path = path
        prune(self.directory, self.kind, self.keep)
        return path

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._handle is None or (self._size > 0 and self._size + len(data) > self.max_bytes):
                self._begin()
            assert self._handle is not None
            self._handle.write(data)
            self._size += len(data)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def tail(paths: list[Path], limit: int) -> str:
    """The last `limit` bytes across `paths` (oldest first), as text: a log tail that may span a rotation."""
    chunks: list[bytes] = []
    wanted = limit
    for path in reversed(paths):
        if wanted <= 0:
            break
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - wanted))
                data = handle.read()
        except OSError:
            continue
        chunks.append(data)
        wanted -= len(data)
    return b"".join(reversed(chunks)).decode("utf-8", errors="replace")
