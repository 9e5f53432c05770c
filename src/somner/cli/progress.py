"""Progress of long operations on the terminal: a bar with bytes, rate and time left for transfers of known size,
a spinner for steps without one. Both go to stderr (stdout keeps a command's result, for scripts), and only when
stderr is a terminal: with `--quiet`, or into a pipe or a log file, they are plain lines instead (a few, not one
per update), so captured output never fills with control codes."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

import typer

Update = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes if known)."""

PLAIN_INTERVAL = 5.0  # seconds between plain progress lines


def animated(quiet: bool = False) -> bool:
    """Whether progress may animate: stderr is a terminal and nobody asked for quiet."""
    return not quiet and sys.stderr.isatty()


def size(value: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def transfer_line(label: str, done: int, total: int | None, elapsed: float) -> str:
    """One plain progress line: `label: 12.0 MiB of 1.2 GiB (1%), 3.4 MiB/s, 5:49 left`."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        left = f", {clock((total - done) / rate)} left" if rate > 0 and done < total else ""
        return f"{label}: {size(done)} of {size(total)} ({done * 100 // total}%), {size(rate)}/s{left}"
    return f"{label}: {size(done)}, {size(rate)}/s"


class _PlainTransfer:
    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.last = self.started
        self.done = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        now = time.monotonic()
        if now - self.last >= PLAIN_INTERVAL:
            self.last = now
            typer.echo(transfer_line(self.label, done, total, now - self.started), err=True)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        typer.echo(f"{self.label}: {size(self.done)} in {elapsed:.1f}s", err=True)


@contextlib.contextmanager
def transfer(label: str, *, quiet: bool = False) -> Iterator[Update]:
    """Report a transfer through the callback yielded; a bar on a terminal, else a line every few seconds and one
    at the end (none when it fails: the error says why)."""
    if not animated(quiet):
        plain = _PlainTransfer(label)
        typer.echo(f"{label}...", err=True)
        yield plain
        plain.finish()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextlib.contextmanager
def step(label: str, *, quiet: bool = False, plain_line: bool = True) -> Iterator[None]:
    """A step without a known size: a spinner on a terminal (gone when the step ends), else one line (or none,
    without `plain_line`: for commands whose plain output is their answer alone)."""
    if not animated(quiet):
        if plain_line:
            typer.echo(f"{label}...", err=True)
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(label):
        yield
