"""Limits on what a client may do before a request reaches the app: uvicorn's httptools protocol with a deadline
for the request head and a cap on its size.

Uvicorn has neither: a connection that sends nothing, or sends its headers a byte every few seconds (slowloris),
is held open forever, and httptools gathers a header of any size in memory. Here the head (request line and
headers) must be complete within `header_timeout` seconds of the connection or of the request's first byte (408
and close otherwise), and may not be larger than `max_head_bytes` or have more than `max_headers` headers (431 and
close, before the app sees it). The app's own guard checks the same header limits again (for every transport).
A slow body is the app's concern (`limits.body_timeout`, in `api.body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from somner.settings.gateway import LimitSettings

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# Room for the request line (method, target, version) on top of the headers' own limit.
_REQUEST_LINE_BYTES = 8192


class _Refused(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_head_bytes: int = 16384 + _REQUEST_LINE_BYTES
    max_headers: int = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_count = 0
        self._refusal: tuple[int, str] | None = None

    # -- the head's deadline --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_count = 0
        self._arm_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_deadline()
        super().on_headers_complete()

    def _arm_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_deadline()  # a response is still going out: this connection is not idle, look again later
            return
        self._answer(408, "The request headers were not received in time.")

    # -- the head's size --

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 1)
        super().on_header(name, value)

    def _count(self, size: int, headers: int) -> None:
        self._head_bytes += size
        self._head_count += headers
        if self._head_bytes > self.max_head_bytes or self._head_count > self.max_headers:
            self._refusal = (431, "The request headers are too many or too large.")
            raise _Refused

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # (already answered; the connection is closing)
        try:
            super().data_received(data)
        except _Refused:  # (httptools may hand a callback's exception back as it is)
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        """Uvicorn's answer to a request httptools cannot parse; ours when the parse stopped on a limit."""
        if self._refusal is not None:
            self._answer(*self._refusal)
        else:
            super().send_400_response(msg)

    def _answer(self, status: int, text: str) -> None:
        self._disarm_deadline()
        body = text.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()


def gateway_protocol(limits: LimitSettings) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with the gateway's `limits`."""
    return type(
        "GatewayHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "header_timeout": limits.header_timeout,
            "max_head_bytes": limits.max_header_bytes + _REQUEST_LINE_BYTES,
            "max_headers": limits.max_headers,
        },
    )
