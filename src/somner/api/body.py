"""Reading request bodies within the size limit, before any work is done."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from somner.api.streaming import ClientDisconnected
from somner.errors import BadRequest, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientDisconnected from None  # the client left mid-body: a 499, not a server error
    return b"".join(chunks)
