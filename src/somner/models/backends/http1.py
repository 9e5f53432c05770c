"""A small keep-alive HTTP/1.1 client for engines: the one hop every request and token of the gateway crosses.

Why not httpx: per request it costs more than the rest of the gateway together (its connection pool scans every
idle connection with a poll before each request), and that cost grows with the concurrency. Engines speak plain
HTTP/1.1 over a unix socket or TCP (TLS for remote ones), so this client does only that: an asyncio protocol per
connection, httptools (llhttp) to parse responses, and idle connections reused last-in first-out, so a burst
reuses the warmest connection and the surplus ones age out.

Contracts:
- `ConnectionPool.request` returns once the response's status and headers have arrived. Its body is read with
  `Response.read()` or `Response.stream()`; `Response.aclose()` hands the connection back for reuse when the body
  was read to its end and the server allows it, and closes it otherwise (which is also how an engine learns that a
  client left: closing the connection cancels the generation).
- A request that fails on a reused connection before any byte of the answer arrived (the server closed it while
  idle) is sent once more on a new connection; nothing else is retried.
- Errors are `HTTPError`s: `ConnectError` (no connection; `ConnectTimeout` when that timed out), `ReadTimeout`
  (nothing arrived for `read_timeout` seconds), `RemoteProtocolError` (the connection broke or the answer is not
  HTTP). The caller translates them (see openai_http.py).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 1 << 20  # buffered body bytes above which reading pauses until the consumer catches up


class HTTPError(Exception):
    """A transport failure talking to an engine."""


class ConnectError(HTTPError):
    pass


class ConnectTimeout(ConnectError):
    pass


class ReadTimeout(HTTPError):
    pass


class RemoteProtocolError(HTTPError):
    pass


class StatusError(HTTPError):
    """A non-2xx answer where the caller wanted a success (`ConnectionPool.get_json`)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an engine listens: a unix socket, or host and port (with TLS for https)."""

    host: str
    port: int = 0
    tls: bool = False
    unix_path: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        return cls(host=parts.hostname, port=parts.port or (443 if tls else 80), tls=tls)

    @classmethod
    def unix(cls, path: str) -> Endpoint:
        return cls(host="localhost", unix_path=path)

    @property
    def host_header(self) -> bytes:
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        text = name if self.unix_path is not None or self.port == default else f"{name}:{self.port}"
        return text.encode("idna")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one exchange at a time. Body bytes are queued for the consumer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_ready: asyncio.Future[None] | None = None
        self._reading_paused = False
        self.begin()

    def begin(self) -> None:
        """Get ready for the next exchange's answer."""
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.received_any = False
        self.keep_alive = False
        self.error: HTTPError | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._until_close = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports do not subclass asyncio's)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"the engine's answer is not valid HTTP: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and self._until_close and not self.complete:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self.complete:
            self._fail(RemoteProtocolError("the engine closed the connection"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks -----------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        self.headers_done = True
        names = {name for name, _ in self.headers}
        self._until_close = b"content-length" not in names and b"transfer-encoding" not in names
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- the consumer's side -----------------------------------------------------------------------------------

    def _fail(self, error: HTTPError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float | None) -> None:
        """Until something new arrives (headers, body, the end, an error), at most `seconds` (a timer, not a
        cancel scope: this runs once per read of a stream)."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        """The body bytes queued so far (reading resumes if it was paused)."""
        data = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def send(self, data: bytes, seconds: float | None) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self._write_ready is not None:
            try:
                async with asyncio.timeout(seconds):
                    await self._write_ready
            except TimeoutError:
                self.close()
                raise RemoteProtocolError("the engine does not take the request (write timed out)") from None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("the engine sent nothing in time"))


class Response:
    """An answer whose status and headers have arrived; the body follows (`read`, `stream`)."""

    __slots__ = ("_conn", "_pool", "_released", "headers", "status")

    def __init__(self, pool: ConnectionPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case), if present."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, as it arrives (transfer framing removed)."""
        conn = self._conn
        timeout = self._pool.read_timeout
        while True:
            if conn.body:
                yield conn.take()
                continue
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait(timeout)

    async def read(self) -> bytes:
        return b"".join([part async for part in self.stream()])

    async def finish(self, grace: float) -> None:
        """Read what is left of the body (the few bytes that end a stream) within `grace` seconds, so that the
        connection can be used again; then release it."""
        conn = self._conn
        try:
            async with asyncio.timeout(grace):
                while not conn.complete and conn.error is None:
                    await conn.wait(None)
                    conn.take()
        except (TimeoutError, HTTPError):
            pass
        await self.aclose()

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.keep_alive and conn.error is None and not conn.closed:
            self._pool.release(conn)
        else:
            conn.close()


class ConnectionPool:
    """Connections to one engine endpoint, reused last-in first-out."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 600.0,
        write_timeout: float = 30.0,
        keepalive_expiry: float = 15.0,
        max_idle: int = 256,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._fixed = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        self._ssl = ssl.create_default_context() if endpoint.tls else None
        self._closed = False
        self.opened = 0  # connections opened so far (a benchmark and test figure: reuse works when it stays low)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        wait: float | None = None,
    ) -> Response:
        """Send a request; return when the answer's headers are in (within `wait` seconds, else the read
        timeout)."""
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\n%s" % (
            method.encode("ascii"),
            path.encode("utf-8"),
            self.endpoint.host_header,
            self._fixed,
        )
        if body or method != "GET":
            head += b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type.encode("latin-1"), len(body))
        message = head + b"\r\n" + body
        limit = self.read_timeout if wait is None else wait
        while True:
            conn, reused = await self._connection()
            try:
                await conn.send(message, self.write_timeout)
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(limit)
            except RemoteProtocolError:
                conn.close()
                if reused and not conn.received_any:
                    continue  # the engine had closed this idle connection: once more on a fresh one
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, conn)

    async def get_json_bytes(self, path: str, *, within: float) -> bytes:
        """The body of a GET that must succeed within `within` seconds (health and status checks)."""
        response = await self.request("GET", path, wait=within)
        try:
            if response.status != 200:
                raise StatusError(response.status)
            async with asyncio.timeout(within):
                return await response.read()
        except TimeoutError:
            raise ReadTimeout("the engine sent nothing in time") from None
        finally:
            await response.aclose()

    async def _connection(self) -> tuple[_Connection, bool]:
        if self._closed:
            raise ConnectError("the connection pool is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.keepalive_expiry:
                conn.close()
                continue
            conn.begin()
            return conn, True
        return await self._connect(), False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(self.connect_timeout):
                if endpoint.unix_path is not None:
                    _, conn = await loop.create_unix_connection(_Connection, endpoint.unix_path)
                else:
                    _, conn = await loop.create_connection(
                        _Connection,
                        endpoint.host,
                        endpoint.port,
                        ssl=self._ssl,
                        server_hostname=endpoint.host if self._ssl is not None else None,
                    )
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {self._where()} in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self._where()}: {exc}") from None
        self.opened += 1
        return conn

    def _where(self) -> str:
        endpoint = self.endpoint
        return endpoint.unix_path or f"{endpoint.host}:{endpoint.port}"

    def release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
