"""Small, valid GGUF files made in the test (F32 tensors), for the reader and for pulls."""

from __future__ import annotations

import struct


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def make_gguf(
    tensor_elements: list[int],
    *,
    architecture: str = "llama",
    alignment: int = 32,
    strings: dict[str, str] | None = None,
    ints: dict[str, int] | None = None,
) -> bytes:
    """A GGUF v3 file with one F32 tensor per entry of `tensor_elements`, its data zeroed; `strings` are more
    string metadata (e.g. `general.type: adapter` for a LoRA adapter), `ints` uint32 ones (`llama.block_count`)."""
    values = {"general.architecture": architecture, **(strings or {})}
    kv = b"".join(_string(key) + struct.pack("<I", 8) + _string(value) for key, value in values.items())
    kv += b"".join(_string(key) + struct.pack("<II", 4, value) for key, value in (ints or {}).items())
    count = len(values) + len(ints or {})
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensor_elements), count) + kv
    infos = b""
    offset = 0
    for i, elements in enumerate(tensor_elements):
        infos += _string(f"t{i}") + struct.pack("<I", 1) + struct.pack("<Q", elements) + struct.pack("<I", 0)
        infos += struct.pack("<Q", offset)
        offset += -(-(elements * 4) // alignment) * alignment
    body = header + infos
    body += b"\0" * (-len(body) % alignment)
    return body + b"\0" * offset
