"""The gateway's HTTP protocol limits, on a real uvicorn server and raw sockets: slow clients (slowloris) are cut
off with a 408, oversized or overcrowded request heads with a 431, before the app is called; the server goes on
serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from somner.http_limits import LimitedHttpToolsProtocol, gateway_protocol
from somner.http_server import EmbeddedServer, server_config
from somner.settings.gateway import LimitSettings

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT = 0.4


class _App:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, _App]]:
    app = _App()
    limits = LimitSettings(header_timeout=HEADER_TIMEOUT, max_header_bytes=1024, max_headers=10)
    config = server_config(app, lifespan="off", http=gateway_protocol(limits))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    running = EmbeddedServer(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    for _ in range(1000):  # (uvicorn has no event for "listening")
        if running.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1], app
    finally:
        running.should_exit = True
        await task
        sock.close()


async def _exchange(port: int, *pieces: bytes, pause: float = 0.0) -> tuple[bytes, float]:
    """Send the pieces (`pause` seconds apart); what came back before the server closed, and when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    answer = b""
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:  # (stop writing once the server has answered: more bytes would only draw a reset)
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(65536), timeout=pause)
                if answer:
                    break
        answer += await asyncio.wait_for(reader.read(), timeout=5)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return answer, time.monotonic() - start


async def _ok(port: int) -> None:
    answer, _ = await _exchange(port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer


async def test_a_connection_that_sends_nothing_is_closed_with_408(server: tuple[int, _App]) -> None:
    port, app = server
    answer, took = await _exchange(port)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert HEADER_TIMEOUT * 0.9 <= took < HEADER_TIMEOUT + 2
    assert app.calls == 0
    await _ok(port)


async def test_slowloris_headers_are_cut_off(server: tuple[int, _App]) -> None:
    """A header line every 0.1 s keeps each gap short; the head as a whole still has to arrive in time."""
    port, app = server
    drip = [b"GET / HTTP/1.1\r\n", b"Host: localhost\r\n"] + [b"X-A: b\r\n"] * 8
    answer, took = await _exchange(port, *drip, pause=0.1)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < 8 * 0.1 + 2
    assert app.calls == 0
    await _ok(port)


async def test_an_idle_keep_alive_connection_is_closed_too(server: tuple[int, _App]) -> None:
    port, app = server
    first = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    answer, _ = await _exchange(port, first + b"GET / HTTP/1.1\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 408" in answer  # the second request's head never finished
    assert app.calls == 1


async def test_a_huge_header_is_refused_with_431_before_the_app(server: tuple[int, _App]) -> None:
    port, app = server
    huge = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n"
    answer, _ = await _exchange(port, huge)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    long_url = b"GET /" + b"a" * 64 * 1024 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    answer, _ = await _exchange(port, long_url)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert app.calls == 0
    await _ok(port)


async def test_too_many_headers_are_refused_with_431(server: tuple[int, _App]) -> None:
    port, app = server
    crowd = b"".join(b"X-%d: y\r\n" % i for i in range(50))
    answer, _ = await _exchange(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + crowd + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert app.calls == 0
    await _ok(port)


async def test_garbage_is_still_a_plain_400(server: tuple[int, _App]) -> None:
    port, _ = server
    answer, _ = await _exchange(port, b"\x00\x01\x02 nonsense\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    await _ok(port)


def test_uvicorn_config_takes_the_protocol_class() -> None:
    limits = LimitSettings(header_timeout=3, max_header_bytes=2048, max_headers=12)
    config = server_config(object(), lifespan="off", http=gateway_protocol(limits))
    assert isinstance(config, uvicorn.Config)
    config.load()
    protocol = config.http_protocol_class
    assert issubclass(protocol, LimitedHttpToolsProtocol)
    assert protocol.header_timeout == 3
    assert protocol.max_headers == 12
