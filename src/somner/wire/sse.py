"""Server-sent events: the framing of streamed responses (OpenAI, Anthropic, Kobold)."""

from __future__ import annotations

from collections.abc import AsyncIterator

DONE = b"[DONE]"


def event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


async def data_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data:` payloads of an SSE byte stream, in order (multi-line data joined with newlines)."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while True:
            end = buffer.find(b"\n\n")
            if end == -1:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            payload = _payload(block)
            if payload is not None:
                yield payload
    if buffer.strip():
        payload = _payload(buffer)
        if payload is not None:
            yield payload


def _payload(block: bytes) -> bytes | None:
    lines = [line for line in block.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line.startswith(b"data: ") else line[5:] for line in lines)
