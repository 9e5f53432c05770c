"""What an image file is, from its first bytes: its format and its size in pixels, without decoding it.

The engine reads PNG, JPEG, GIF and BMP (llama.cpp's image loader); anything else is refused before a decoder sees
it, and so is an image whose header announces more pixels than allowed (a small file can unpack into gigabytes).
A header this reader cannot make sense of means the file is corrupt or in another format: None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_BARE = frozenset({0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})  # markers without a length
_MAX_JPEG_SEGMENTS = 4096


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str  # "png", "jpeg", "gif" or "bmp"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader | None:
    """The format and size an image file declares; None for anything else (or a header that makes no sense)."""
    header = _parse(data)
    return header if header is not None and header.width > 0 and header.height > 0 else None


def _parse(data: bytes) -> ImageHeader | None:
    if data.startswith(_PNG) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return ImageHeader("png", width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageHeader("gif", width, height)
    if data.startswith(b"BM") and len(data) >= 26:
        (size,) = struct.unpack("<I", data[14:18])
        if size == 12:  # (the old OS/2 header)
            width, height = struct.unpack("<HH", data[18:22])
        elif size >= 40:
            width, height = struct.unpack("<ii", data[18:26])
        else:
            return None
        return ImageHeader("bmp", abs(width), abs(height))  # (a negative height: rows stored top-down)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    return None


def _jpeg(data: bytes) -> ImageHeader | None:
    """A JPEG's size, from its frame header (the first SOF segment)."""
    i = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        while i < len(data) and data[i] == 0xFF:
            i += 1  # (fill bytes before a marker)
        if i >= len(data) or data[i - 1] != 0xFF:
            return None
        marker = data[i]
        i += 1
        if marker in _JPEG_BARE:
            continue
        if i + 2 > len(data):
            return None
        (length,) = struct.unpack(">H", data[i : i + 2])
        if marker in _JPEG_FRAMES:
            if i + 7 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return ImageHeader("jpeg", width, height)
        if length < 2 or marker == 0xD9:  # (end of image before any frame)
            return None
        i += length
    return None
