from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from somner.models.gguf import GGUFError, read_gguf


def gguf_bytes(version: int = 3, kv: list[tuple[str, int, bytes]] | None = None) -> bytes:
    items = kv or []
    out = b"GGUF" + struct.pack("<IQQ", version, 0, len(items))
    for key, code, payload in items:
        raw = key.encode()
        out += struct.pack("<Q", len(raw)) + raw + struct.pack("<I", code) + payload
    return out


def string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def test_reads_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    tokens = struct.pack("<IQ", 8, 2) + string("<a>") + string("<b>")
    path.write_bytes(
        gguf_bytes(
            kv=[
                ("general.architecture", 8, string("llama")),
                ("llama.context_length", 4, struct.pack("<I", 8192)),
                ("tokenizer.ggml.tokens", 9, tokens),
                ("tokenizer.chat_template", 8, string("{{ x }}")),
                ("general.flag", 7, b"\x01"),
            ]
        )
    )
    info = read_gguf(path)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.chat_template == "{{ x }}"
    assert info.metadata["tokenizer.ggml.tokens"] is None  # skipped unless asked for
    assert info.metadata["general.flag"] is True
    assert read_gguf(path, keep_arrays=True).metadata["tokenizer.ggml.tokens"] == ["<a>", "<b>"]


def test_reads_the_real_model(model_path: Path) -> None:
    info = read_gguf(model_path)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert info.arch_value("embedding_length") == 640


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a GGUF"),
        (b"PK\x03\x04 not gguf", "bad magic"),
        (b"GGUF" + struct.pack("<I", 99) + b"\x00" * 16, "unsupported GGUF version"),
        (b"GGUF\x03\x00", "truncated"),
        (gguf_bytes(kv=[("k", 8, struct.pack("<Q", 1 << 40))]), "too long"),
        (gguf_bytes(kv=[("k", 77, b"")]), "unknown GGUF value type"),
    ],
)
def test_refuses_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError, match=message):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="cannot read"):
        read_gguf(tmp_path / "absent.gguf")


def _vocabulary(*items: bytes) -> bytes:
    return struct.pack("<IQ", 8, len(items)) + b"".join(items)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (_vocabulary(string("<a>"), struct.pack("<Q", 5) + b"ab"), "truncated"),  # the last string runs off the end
        (struct.pack("<IQ", 8, 2) + string("<a>"), "truncated"),  # fewer strings than counted
        (_vocabulary(string("<a>"), struct.pack("<Q", 1 << 40)), "too long"),
    ],
)
def test_refuses_a_broken_vocabulary(tmp_path: Path, array: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(gguf_bytes(kv=[("tokenizer.ggml.tokens", 9, array)]))
    with pytest.raises(GGUFError, match=message):
        read_gguf(path)


def test_a_skipped_vocabulary_leaves_the_reader_at_the_next_key(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    vocabulary = _vocabulary(*(string(f"<t{i}>" * (i % 7)) for i in range(1000)))
    path.write_bytes(gguf_bytes(kv=[("tokenizer.ggml.tokens", 9, vocabulary), ("after", 8, string("still read"))]))
    assert read_gguf(path).metadata["after"] == "still read"


def test_a_settled_file_is_read_once_and_a_changed_one_again(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(kv=[("general.architecture", 8, string("llama"))]))
    fresh = read_gguf(path)
    assert read_gguf(path) is not fresh  # written just now: not remembered (file times are coarse)
    old = 1_600_000_000
    os.utime(path, (old, old))
    first = read_gguf(path)
    assert read_gguf(path) is first
    assert read_gguf(path, keep_arrays=True) is not first  # (another reading of the same file)
    path.write_bytes(gguf_bytes(kv=[("general.architecture", 8, string("gemma"))]))
    os.utime(path, (old + 5, old + 5))
    assert read_gguf(path).architecture == "gemma"
