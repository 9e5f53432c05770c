"""Reading a GGUF file's header and metadata without loading the model (pure Python, bounded reads).

Used to refuse a file that is not GGUF before an engine is started for it, and to describe a model
(architecture, context length, chat template) without loading its weights.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
_MAX_STRING = 1 << 24  # 16 MiB; a longer metadata string means a corrupt or hostile file
_MAX_ITEMS = 1 << 26
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_TENSOR_NAME = 63  # GGML_MAX_NAME less its terminating zero
_MAX_ELEMENTS = (1 << 63) - 1  # ggml counts elements in int64

# type code -> (struct format, size)
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING = 8
_ARRAY = 9
_DEFAULT_ALIGNMENT = 32

# ggml tensor types: (elements per block, bytes per block). Facts of the file format.
_TENSOR_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
    42: (64, 18),  # Q2_0
}


class GGUFError(ValueError):
    """The file is not a readable GGUF file; the message says why."""


@dataclass(slots=True)
class GGUFInfo:
    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    # Bytes the file must have to hold every tensor; None when a tensor type is unknown to this reader.
    needed_bytes: int | None = None

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def arch_value(self, suffix: str) -> Any:
        arch = self.architecture
        return self.metadata.get(f"{arch}.{suffix}") if arch else None

    @property
    def context_length(self) -> int | None:
        value = self.arch_value("context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, size: int) -> int:
        start = self.pos
        if size < 0 or start + size > len(self.buf):
            raise GGUFError("truncated GGUF header")
        self.pos = start + size
        return start

    def scalar(self, code: int) -> Any:
        fmt, size = _SCALARS[code]
        return struct.unpack_from(fmt, self.buf, self.take(size))[0]

    def string(self) -> str:
        (length,) = struct.unpack_from("<Q", self.buf, self.take(8))
        if length > _MAX_STRING:
            raise GGUFError("GGUF metadata string too long")
        start = self.take(length)
        return bytes(self.buf[start : start + length]).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Skip `count` strings: the vocabulary (262,144 of them in Gemma 3), so a tight loop that checks the
        bounds once at the end (a position past the end is only ever compared, never read)."""
        buf, pos, size, unpack = self.buf, self.pos, len(self.buf), _U64.unpack_from
        longest = 0
        for _ in range(count):
            if pos + 8 > size:
                raise GGUFError("truncated GGUF header")
            (length,) = unpack(buf, pos)
            longest = max(longest, length)
            pos += 8 + length
        if longest > _MAX_STRING:
            raise GGUFError("GGUF metadata string too long")
        if pos > size:
            raise GGUFError("truncated GGUF header")
        self.pos = pos

    def value(self, code: int, keep_arrays: bool) -> Any:
        if code in _SCALARS:
            return self.scalar(code)
        if code == _STRING:
            return self.string()
        if code == _ARRAY:
            item_code = self.scalar(4)
            count = self.scalar(10)
            if count > _MAX_ITEMS:
                raise GGUFError("GGUF metadata array too long")
            if item_code == _ARRAY:  # (llama.cpp has no nested arrays; unbounded nesting would recurse without end)
                raise GGUFError("GGUF metadata array of arrays (nested arrays are not supported)")
            if item_code in _SCALARS and not keep_arrays:
                self.take(_SCALARS[item_code][1] * count)
                return None
            if item_code == _STRING and not keep_arrays:
                self.skip_strings(count)
                return None
            return [self.value(item_code, keep_arrays) for _ in range(count)]
        raise GGUFError(f"unknown GGUF value type {code}")


# Headers already read, by file version: a server reads one model's header for several reasons (vetting, its
# memory estimate, its capabilities, its context length), and each read walks the whole vocabulary. A file changed
# in the last `_SETTLE_S` seconds is not remembered: file times are only as fine as the kernel's clock tick, so a
# file rewritten at once with the same size could otherwise look unchanged.
_MEMO: dict[tuple[object, ...], GGUFInfo] = {}
_MEMO_LOCK = threading.Lock()
_MEMO_LIMIT = 32
_SETTLE_S = 2.0
_U64 = struct.Struct("<Q")


def read_gguf(path: Path, *, keep_arrays: bool = False) -> GGUFInfo:
    """Header and metadata of `path`. Large arrays (the vocabulary) are skipped unless `keep_arrays`. The result is
    shared between callers (do not change it)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise GGUFError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    version = (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, keep_arrays)
    with _MEMO_LOCK:
        known = _MEMO.get(version)
    if known is not None:
        return known
    info = _read_gguf(path, keep_arrays)
    if time.time() - stat.st_mtime_ns / 1e9 > _SETTLE_S:
        with _MEMO_LOCK:
            if len(_MEMO) >= _MEMO_LIMIT:
                _MEMO.clear()
            _MEMO[version] = info
    return info


def _read_gguf(path: Path, keep_arrays: bool) -> GGUFInfo:
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
            if head != MAGIC:
                raise GGUFError(f"{path.name} is not a GGUF file (bad magic)")
            handle.seek(0)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(_Reader(buf), keep_arrays)
    except OSError as exc:
        raise GGUFError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # mmap of an empty file
        if isinstance(exc, GGUFError):
            raise
        raise GGUFError(f"{path.name} is not a GGUF file") from exc


def _parse(reader: _Reader, keep_arrays: bool) -> GGUFInfo:
    reader.take(4)
    version = reader.scalar(4)
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"unsupported GGUF version {version}")
    tensor_count = reader.scalar(10)
    kv_count = reader.scalar(10)
    if kv_count > _MAX_ITEMS:
        raise GGUFError("GGUF metadata count out of range")
    info = GGUFInfo(version=version, tensor_count=tensor_count)
    for _ in range(kv_count):
        key = reader.string()
        if key in info.metadata:
            raise GGUFError(f"GGUF metadata key {key[:64]!r} appears twice")
        code = reader.scalar(4)
        info.metadata[key] = reader.value(code, keep_arrays)
    if tensor_count > _MAX_ITEMS:
        raise GGUFError("GGUF tensor count out of range")
    align = _alignment(info.metadata)
    end = 0
    known = True
    names: set[str] = set()
    for _ in range(tensor_count):
        name = reader.string()
        if len(name.encode("utf-8")) > _MAX_TENSOR_NAME:
            raise GGUFError("GGUF tensor name too long")
        if name in names:
            raise GGUFError(f"GGUF tensor {name!r} appears twice")
        names.add(name)
        dims = reader.scalar(4)
        if dims > _MAX_DIMS:
            raise GGUFError(f"GGUF tensor {name!r} has too many dimensions ({dims})")
        shape = [reader.scalar(10) for _ in range(dims)]
        elements = 1
        for extent in shape:
            elements *= extent
            if elements > _MAX_ELEMENTS:
                raise GGUFError(f"GGUF tensor {name!r} has dimensions whose product overflows")
        kind = reader.scalar(4)
        offset = reader.scalar(10)
        if offset % align:
            raise GGUFError(f"GGUF tensor {name!r} is not aligned to {align} bytes")
        if kind not in _TENSOR_TYPES:
            known = False
            continue
        block, size = _TENSOR_TYPES[kind]
        if shape and shape[0] % block:
            raise GGUFError(f"GGUF tensor {name!r} has a row that is not a whole number of blocks")
        end = max(end, offset + elements // block * size)
    data_start = -(-reader.pos // align) * align  # (no tensors: no data section, nothing to pad to)
    info.needed_bytes = (data_start + end if tensor_count else reader.pos) if known else None
    return info


def _alignment(metadata: dict[str, Any]) -> int:
    """The data alignment: `general.alignment` (a uint32 power of two) or the default."""
    if "general.alignment" not in metadata:
        return _DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1) or value > 1 << 16:
        raise GGUFError(f"GGUF alignment {value!r} is not a power of two (up to 65536)")
    return value


def check_complete(path: Path) -> GGUFInfo:
    """The file's header, if the file is a GGUF that holds all its tensor data; GGUFError otherwise."""
    info = read_gguf(path)
    size = path.stat().st_size
    if info.needed_bytes is not None and size < info.needed_bytes:
        raise GGUFError(
            f"{path.name} is truncated or its tensor offsets are out of range: it has {size} bytes, its tensors "
            f"need {info.needed_bytes}"
        )
    return info
