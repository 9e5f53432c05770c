"""The default model's head start: a process started before the gateway, claimed only by the same command, ended
when nobody claims it, and driven through the asyncio-like interface the worker backend uses."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from somner.models.backends import head_start

pytestmark = pytest.mark.anyio


def sleeper(seconds: int) -> head_start.HeadStart:
    def command_at(socket_path: Path) -> list[str]:
        return [sys.executable, "-c", f"import time; print('up', flush=True); time.sleep({seconds})", str(socket_path)]

    return head_start.spawn("m", command_at)


def close_pipes(head: head_start.HeadStart) -> None:
    for pipe in (head.process.stdin, head.process.stdout):
        if pipe is not None:
            pipe.close()


def test_only_the_same_command_for_the_same_model_claims_it() -> None:
    head = sleeper(30)
    try:
        assert head_start.claim("other", lambda s: head.command) is None
        assert head_start.claim("m", lambda s: [*head.command, "--more"]) is None  # (other settings)
        assert head_start.claim("m", lambda s: head.command) is head
        assert head_start.claim("m", lambda s: head.command) is None  # (taken)
    finally:
        head.process.kill()
        head.process.wait()
        close_pipes(head)


def test_a_head_start_nobody_claims_is_ended_and_its_directory_removed() -> None:
    head = sleeper(30)
    head_start.discard()
    assert head.process.returncode == -signal.SIGTERM
    assert not head.socket_path.parent.exists()
    assert head_start.claim("m", lambda s: head.command) is None


def test_a_head_start_that_died_is_not_claimed() -> None:
    head = sleeper(0)
    head.process.wait()
    assert head_start.claim("m", lambda s: head.command) is None
    head_start.discard()


async def test_the_adopted_process_reads_and_ends_like_an_asyncio_one() -> None:
    head = sleeper(30)
    claimed = head_start.claim("m", lambda s: head.command)
    assert claimed is not None
    adopted = await head_start.Adopted.of(claimed.process)
    assert adopted.pid == claimed.process.pid
    running = adopted.returncode
    assert running is None
    assert await asyncio.wait_for(adopted.stdout.readline(), 30) == b"up\n"
    adopted.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(adopted.wait(), 30) == -signal.SIGTERM
    assert adopted.returncode == -signal.SIGTERM
    assert await adopted.stdout.read() == b""
    assert adopted.stdin is not None
    adopted.stdin.close()
