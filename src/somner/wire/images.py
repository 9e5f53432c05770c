"""Images as the dialects send them (data URLs, bare base64, http(s) URLs) into core `Image`s, and back into the
data URLs the gateway sends engines. Only the transport is checked here (base64, scheme); what the bytes are and
how large is `gateway.images`' and the engine's business."""

from __future__ import annotations

import base64
import binascii

from somner.core import IMAGE_MARKER, Image, Message
from somner.core.images import read_header
from somner.errors import BadRequest


def from_url(url: object, param: str) -> Image:
    """An OpenAI-style image URL: `data:<type>;base64,...`, or an http(s) URL (the gateway decides whether to fetch)."""
    if not isinstance(url, str) or not url:
        raise BadRequest(f"'{param}' must be an image URL (a data URL, or http(s)).", param=param)
    if url.startswith("data:"):
        meta, comma, payload = url[5:].partition(",")
        if not comma or not meta.endswith(";base64"):
            raise BadRequest(f"'{param}' must be a base64 data URL (data:image/png;base64,...).", param=param)
        return from_base64(payload, param)
    if url.startswith(("http://", "https://")):
        return Image(url=url)
    raise BadRequest(f"'{param}' must be a data URL or an http(s) URL.", param=param)


def from_base64(text: object, param: str) -> Image:
    """Bare base64 image data (Ollama's `images`, Anthropic's base64 source)."""
    if not isinstance(text, str):
        raise BadRequest(f"'{param}' must be base64 image data.", param=param)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"'{param}' is not valid base64.", param=param, code="invalid_image") from None
    if not data:
        raise BadRequest(f"'{param}' is empty.", param=param, code="invalid_image")
    return Image(data=data)


def data_url(image: Image) -> str:
    """An image as a data URL (its type from its header; a URL image is passed on as its URL)."""
    if image.url is not None and not image.data:
        return image.url
    header = read_header(image.data)
    kind = header.format if header is not None else "octet-stream"
    prefix = "image" if header is not None else "application"
    return f"data:{prefix}/{kind};base64,{base64.b64encode(image.data).decode('ascii')}"


def content_parts(message: Message) -> str | list[dict[str, object]]:
    """A message's content for an OpenAI engine: its text, or text and image parts in order when it has images."""
    if not message.images:
        return message.content
    pieces = message.content.split(IMAGE_MARKER)
    check_markers(message)
    parts: list[dict[str, object]] = []
    for i, text in enumerate(pieces):
        if text:
            parts.append({"type": "text", "text": text})
        if i < len(message.images):
            parts.append({"type": "image_url", "image_url": {"url": data_url(message.images[i])}})
    return parts


def check_markers(message: Message) -> None:
    """Each image of a message stands once in its text: text of its own that looks like the marker is refused."""
    if message.images and message.content.count(IMAGE_MARKER) != len(message.images):
        raise BadRequest(
            f"The text of a message with images may not contain {IMAGE_MARKER!r}.",
            param="messages",
            code="invalid_value",
        )
