"""The engines' HTTP/1.1 client against real asyncio servers on loopback and on a unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from somner.models.backends.http1 import (
    ConnectError,
    ConnectionPool,
    Endpoint,
    ReadTimeout,
    RemoteProtocolError,
    StatusError,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body (by content-length); None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class Server:
    """A server (TCP, or a unix socket at `path`) whose connections `handler` answers; counts connections. On
    exit every connection still open is cancelled and closed."""

    def __init__(self, handler: Handler, path: str | None = None) -> None:
        self.handler = handler
        self.path = path
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Endpoint:
        if self.path is not None:
            self.server = await asyncio.start_unix_server(self._serve, self.path)
            return Endpoint.unix(self.path)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Endpoint.from_url(f"http://127.0.0.1:{port}")

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


def keep_alive_json(server_requests: list[bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            head, body = request
            server_requests.append(head + body)
            answer = b'{"echo":%d}' % len(body)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(answer)
            )
            writer.write(answer)
            await writer.drain()

    return handler


async def test_sequential_requests_reuse_one_connection() -> None:
    requests: list[bytes] = []
    server = Server(keep_alive_json(requests))
    async with server as endpoint:
        pool = ConnectionPool(endpoint, headers=[("authorization", "Bearer k")])
        for size in (1, 10, 100):
            response = await pool.request("POST", "/v1/x", b"a" * size)
            assert response.status == 200
            assert response.header(b"content-type") == b"application/json"
            assert await response.read() == b'{"echo":%d}' % size
            await response.aclose()
        await pool.aclose()
    assert server.connections == 1 and pool.opened == 1
    assert len(requests) == 3
    assert b"POST /v1/x HTTP/1.1\r\n" in requests[0]
    assert b"authorization: Bearer k\r\n" in requests[0]
    assert b"host: 127.0.0.1:" in requests[0]


async def test_concurrent_requests_open_connections_then_reuse_them() -> None:
    requests: list[bytes] = []
    server = Server(keep_alive_json(requests))
    async with server as endpoint:
        pool = ConnectionPool(endpoint)

        async def one() -> bytes:
            response = await pool.request("POST", "/", b"xy")
            try:
                return await response.read()
            finally:
                await response.aclose()

        for _ in range(3):
            assert await asyncio.gather(*(one() for _ in range(8))) == [b'{"echo":2}'] * 8
        await pool.aclose()
    assert len(requests) == 24
    assert pool.opened <= 8  # the second and third bursts found the first burst's connections idle


async def test_a_chunked_stream_arrives_in_parts_and_the_connection_is_kept() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"5\r\nfirst\r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()

    server = Server(handler)
    async with server as endpoint:
        pool = ConnectionPool(endpoint)
        response = await pool.request("POST", "/", b"{}")
        parts = response.stream()
        assert await anext(parts) == b"first"
        release.set()
        assert [part async for part in parts] == [b"second"]
        await response.aclose()
        assert pool.idle == 1
        again = await pool.request("POST", "/", b"{}")
        assert await again.read() == b"firstsecond"
        await again.aclose()
        await pool.aclose()
    assert server.connections == 1


async def test_closing_a_response_before_its_end_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            # The rest never comes; the client leaves, which is how an engine learns to stop generating.
            assert await reader.read() == b""
            return

    server = Server(handler)
    async with server as endpoint:
        pool = ConnectionPool(endpoint)
        response = await pool.request("POST", "/", b"{}")
        assert await anext(response.stream()) == b"first"
        await response.aclose()
        assert pool.idle == 0
        await pool.aclose()


async def test_a_stale_idle_connection_is_replaced_without_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        assert request is not None
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # ... and then the server drops the idle connection (its keep-alive timeout).

    server = Server(handler)
    async with server as endpoint:
        pool = ConnectionPool(endpoint)
        for _ in range(3):
            response = await pool.request("POST", "/", b"{}")
            assert await response.read() == b"ok"
            await response.aclose()
            await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
        await pool.aclose()
    assert server.connections == 3


async def test_a_connection_closed_by_the_server_is_not_reused_even_if_it_looked_alive() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        assert request is not None
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    server = Server(handler)
    async with server as endpoint:
        pool = ConnectionPool(endpoint)
        for _ in range(2):
            response = await pool.request("POST", "/", b"{}")
            assert await response.read() == b"ok"
            await response.aclose()
            assert pool.idle == 0  # `connection: close` answers are never pooled
        await pool.aclose()


async def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        await writer.drain()

    server = Server(handler)
    async with server as endpoint:
        pool = ConnectionPool(endpoint)
        response = await pool.request("GET", "/")
        assert await response.read() == b"all of it"
        await response.aclose()
        await pool.aclose()


async def test_errors_say_what_failed() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def breaks_midway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with Server(silent) as endpoint:
        pool = ConnectionPool(endpoint, read_timeout=0.2)
        with pytest.raises(ReadTimeout):
            await pool.request("POST", "/", b"{}")
        await pool.aclose()
    async with Server(breaks_midway) as endpoint:
        pool = ConnectionPool(endpoint)
        response = await pool.request("POST", "/", b"{}")
        with pytest.raises(RemoteProtocolError):
            await response.read()
        await response.aclose()
        await pool.aclose()
    async with Server(not_http) as endpoint:
        pool = ConnectionPool(endpoint)
        with pytest.raises(RemoteProtocolError, match="not valid HTTP"):
            await pool.request("POST", "/", b"{}")
        await pool.aclose()
    async with Server(silent) as endpoint:
        pass  # (closed: nothing listens there any more)
    pool = ConnectionPool(endpoint)
    with pytest.raises(ConnectError):
        await pool.request("POST", "/", b"{}")
    await pool.aclose()


async def test_get_json_bytes_requires_a_200(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            ok = request[0].startswith(b"GET /health ")
            writer.write(
                b'HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{"ok": true}\n'
                if ok
                else b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
            )
            await writer.drain()

    async with Server(handler, str(tmp_path / "engine.sock")) as endpoint:
        pool = ConnectionPool(endpoint)
        assert await pool.get_json_bytes("/health", within=2.0) == b'{"ok": true}\n'
        with pytest.raises(StatusError) as failed:
            await pool.get_json_bytes("/ready", within=2.0)
        assert failed.value.status == 503
        await pool.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # (a sync test: no event loop needed)
def test_endpoints_from_urls(anyio_backend: str) -> None:
    assert Endpoint.from_url("http://example.org") == Endpoint(host="example.org", port=80)
    assert Endpoint.from_url("https://example.org/v1") == Endpoint(host="example.org", port=443, tls=True)
    assert Endpoint.from_url("http://[::1]:8080").host_header == b"[::1]:8080"
    assert Endpoint.from_url("https://example.org").host_header == b"example.org"
    with pytest.raises(ValueError, match="not an http"):
        Endpoint.from_url("ftp://example.org")
