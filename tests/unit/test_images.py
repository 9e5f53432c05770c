"""Image headers (format and size without decoding), images on the wire, and the gateway's checks of them."""

from __future__ import annotations

import struct

import pytest

from somner.core import IMAGE_MARKER, Image, Message
from somner.core.images import ImageHeader, read_header
from somner.errors import BadRequest
from somner.gateway.images import check, host_allowed, images_of
from somner.settings.gateway import LimitSettings
from somner.wire import images as wire_images
from tests.fakes.mmproj_files import png


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + b"\xff" + sof0 + b"\xff\xd9"


def bmp(width: int, height: int) -> bytes:
    return b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, width, height) + b"\0" * 28


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(7, 5, seed=0), ImageHeader("png", 7, 5)),
        (b"GIF89a" + struct.pack("<HH", 320, 200) + b"\0" * 8, ImageHeader("gif", 320, 200)),
        (bmp(640, -480), ImageHeader("bmp", 640, 480)),  # (top-down rows)
        (jpeg(1024, 768), ImageHeader("jpeg", 1024, 768)),
    ],
)
def test_headers_say_format_and_size(data: bytes, expected: ImageHeader) -> None:
    assert read_header(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain text",
        png(7, 5, seed=0)[:20],  # (cut inside IHDR)
        b"GIF89a\x00\x00\x05\x00",  # (zero width)
        b"\xff\xd8\xff\xd9",  # (a JPEG ending before any frame)
        b"\xff\xd8" + b"\xff\xe0\x00",  # (a segment cut short)
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",  # (WebP: not a format the engine reads)
    ],
)
def test_anything_else_has_no_header(data: bytes) -> None:
    assert read_header(data) is None


def test_data_urls_and_base64_decode_and_http_urls_wait_for_the_gateway() -> None:
    assert wire_images.from_url("data:image/png;base64,aGk=", "p") == Image(data=b"hi")
    assert wire_images.from_url("https://example.com/a.png", "p") == Image(url="https://example.com/a.png")
    for bad in ("data:image/png,hi", "data:image/png;base64,%%", "file:///etc/passwd", "", 5):
        with pytest.raises(BadRequest):
            wire_images.from_url(bad, "p")
    with pytest.raises(BadRequest, match="empty"):
        wire_images.from_base64("", "p")


def test_a_message_with_images_goes_to_engines_as_parts_in_order() -> None:
    red = png(2, 2, seed=1)
    message = Message(role="user", content=f"a{IMAGE_MARKER}b{IMAGE_MARKER}", images=[Image(data=red), Image(data=red)])
    parts = wire_images.content_parts(message)
    assert isinstance(parts, list)
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url"]
    assert str(parts[1]["image_url"]).startswith("{'url': 'data:image/png;base64,")
    assert wire_images.content_parts(Message(role="user", content="plain")) == "plain"
    with pytest.raises(BadRequest, match="may not contain"):
        wire_images.check_markers(Message(role="user", content=f"{IMAGE_MARKER}{IMAGE_MARKER}", images=[Image(red)]))


def test_allowed_hosts_are_exact_or_a_domain_with_its_subdomains() -> None:
    allowed = ["images.example.com", "*.cdn.example.org"]
    assert host_allowed("IMAGES.example.com", allowed)
    assert host_allowed("a.b.cdn.example.org", allowed)
    assert not host_allowed("cdn.example.org.evil.com", allowed)
    assert not host_allowed("example.com", allowed)
    assert not host_allowed("anything", [])


def test_the_gateway_checks_bytes_format_and_pixels() -> None:
    limits = LimitSettings(max_image_bytes=2048, max_image_pixels=100)
    check(png(10, 10, seed=None), 0, limits)
    with pytest.raises(BadRequest, match="10x11 pixels"):
        check(png(10, 11, seed=None), 0, limits)
    with pytest.raises(BadRequest, match="bytes"):
        check(png(40, 40, seed=1), 3, limits)
    with pytest.raises(BadRequest, match="Image 1 is not a PNG"):
        check(b"RIFF....WEBP", 1, limits)
    assert images_of([Message(role="user", content="", images=[Image(b"x")]), Message(role="a", content="")]) == [
        Image(b"x")
    ]
