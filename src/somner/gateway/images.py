"""A chat request's images, made ready before it is admitted: http(s) images fetched (only from the hosts an admin
allows: anything else would let clients make the server call into its own network), then every image checked
against the limits (count, bytes, pixels as its header declares) and for a format the engine reads. Each problem is
a 400 that names the image."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from somner.core import Image, Message
from somner.core.images import read_header
from somner.errors import BadRequest
from somner.settings.gateway import LimitSettings

_FETCH_TIMEOUT = 10.0


def images_of(messages: Sequence[Message]) -> list[Image]:
    return [image for message in messages for image in message.images]


async def prepare(messages: Sequence[Message], limits: LimitSettings) -> None:
    """Fetch the allowed http(s) images of `messages` and check every image; BadRequest for the first problem."""
    images = images_of(messages)
    if len(images) > limits.max_images:
        raise BadRequest(
            f"This request has {len(images)} images; at most {limits.max_images} are allowed.",
            param="messages",
            code="too_many_images",
        )
    for number, image in enumerate(images):
        if image.url is not None and not image.data:
            image.data = await fetch(image.url, number, limits)
            image.url = None
        check(image.data, number, limits)


def check(data: bytes, number: int, limits: LimitSettings) -> None:
    if len(data) > limits.max_image_bytes:
        raise BadRequest(
            f"Image {number} has {len(data)} bytes; at most {limits.max_image_bytes} are allowed.",
            param="messages",
            code="image_too_large",
        )
    header = read_header(data)
    if header is None:
        raise BadRequest(
            f"Image {number} is not a PNG, JPEG, GIF or BMP image (or it is corrupt).",
            param="messages",
            code="invalid_image",
        )
    if header.pixels > limits.max_image_pixels:
        raise BadRequest(
            f"Image {number} is {header.width}x{header.height} pixels; at most {limits.max_image_pixels} pixels are "
            "allowed.",
            param="messages",
            code="image_too_large",
        )


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """`host` is one of `allowed`, or under one written `*.example.com`."""
    host = host.lower().rstrip(".")
    for entry in (a.lower().rstrip(".") for a in allowed):
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


async def fetch(url: str, number: int, limits: LimitSettings) -> bytes:
    host = urlsplit(url).hostname or ""
    if not host_allowed(host, limits.image_hosts):
        raise BadRequest(
            f"Image {number} is a URL on {host or 'no host'}, which this server does not fetch from; send the image "
            "as a data URL (an admin may allow hosts with `limits.image_hosts`).",
            param="messages",
            code="image_url_not_allowed",
        )
    try:
        async with (
            httpx.AsyncClient(timeout=_FETCH_TIMEOUT, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise BadRequest(
                    f"Image {number} could not be fetched: {host} answered {response.status_code}.",
                    param="messages",
                    code="image_fetch_failed",
                )
            data = bytearray()
            async for piece in response.aiter_bytes():
                data += piece
                if len(data) > limits.max_image_bytes:
                    raise BadRequest(
                        f"Image {number} has more than {limits.max_image_bytes} bytes.",
                        param="messages",
                        code="image_too_large",
                    )
            return bytes(data)
    except httpx.HTTPError as exc:
        raise BadRequest(
            f"Image {number} could not be fetched from {host}: {type(exc).__name__}.",
            param="messages",
            code="image_fetch_failed",
        ) from None
