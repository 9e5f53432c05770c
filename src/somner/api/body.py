"""Reading request bodies within the size and time limits, before any work is done.

A body may come gzip- or deflate-encoded (`Content-Encoding`); it is decoded here with the same size limit on
what comes out, in pieces, so a small body that inflates to gigabytes (a decompression bomb) is refused with a 413
after `limit` bytes of output, never held whole. Other codings are refused with a 415. A client that sends its
body too slowly (`limits.body_timeout`) gets a 408.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import ClientDisconnect, Request

from somner.api.streaming import ClientDisconnected
from somner.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

# zlib's window bits: gzip's header and trailer, or zlib's (deflate as HTTP means it; raw deflate as a fallback).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")


async def read_body(request: Request, limit: int, time_limit: float | None = None) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
    codings = [c.strip().lower() for c in request.headers.get("content-encoding", "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    for coding in codings:
        if coding not in _WBITS:
            raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported (gzip and deflate are).")
    try:
        async with asyncio.timeout(time_limit):
            raw = await _read_raw(request, limit)
    except TimeoutError:
        raise RequestTimeout("The request body was not received in time.") from None
    for coding in reversed(codings):  # (applied in the order listed: undone last first)
        raw = decompress(raw, coding, limit)
    return raw


async def _read_raw(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientDisconnected from None  # the client left mid-body: a 499, not a server error
    return b"".join(chunks)


def decompress(data: bytes, coding: str, limit: int) -> bytes:
    """`data` decoded from `coding` (gzip, deflate), at most `limit` bytes of it: PayloadTooLarge past that,
    BadRequest when it is not valid in that coding."""
    wbits = _WBITS[coding]
    if coding == "deflate" and data[:1] and (data[0] & 0x0F) != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, as some clients send it
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit)
        out += inflater.flush()
    except zlib.error:
        raise BadRequest(f"The request body is not valid {coding} data.", code="invalid_body_encoding") from None
    if len(out) > limit:
        raise _too_large(limit)
    if not inflater.eof:
        raise BadRequest(f"The request body's {coding} data is cut short.", code="invalid_body_encoding")
    return out
