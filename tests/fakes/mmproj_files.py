"""A tiny multimodal projector (mmproj) GGUF for the default model, written with the `gguf` package: a one-block
random-weight SigLIP-style vision encoder with Gemma 3's projector (`projector_type: gemma3`), whose output width is
the default model's embedding width (640). A 56x56 image in 14-pixel patches, pooled 2x2, becomes 4 image tokens.

With it, the default model reads images (a model's `mmproj`), and tests of image input need no download. `png`
writes an RGB image without an imaging library.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter

IMAGE_TOKENS = 4  # (56 / 14 / 2) ** 2


def make_mmproj(target: Path, *, text_width: int = 640, width: int = 32, seed: int = 0) -> Path:
    """A Gemma 3 projector at `target` (F32) whose image tokens are `text_width` wide."""
    rng = np.random.default_rng(seed)
    image, patch, ffn = 56, 14, width * 2
    writer = GGUFWriter(target, "clip")
    writer.add_string("general.type", "mmproj")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_uint32("clip.vision.image_size", image)
    writer.add_uint32("clip.vision.patch_size", patch)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", ffn)
    writer.add_uint32("clip.vision.projection_dim", text_width)
    writer.add_uint32("clip.vision.block_count", 1)
    writer.add_uint32("clip.vision.attention.head_count", 2)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.projector.scale_factor", 2)

    def weights(*shape: int, scale: float = 0.2) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def constant(n: int, value: float) -> npt.NDArray[np.float32]:
        return np.full(n, value, dtype=np.float32)

    # numpy shapes are ggml's reversed (the patch embedding is a conv kernel: [patch, patch, 3, width] in ggml).
    writer.add_tensor("v.patch_embd.weight", weights(width, 3, patch, patch))
    writer.add_tensor("v.patch_embd.bias", constant(width, 0.0))
    writer.add_tensor("v.position_embd.weight", weights((image // patch) ** 2, width))
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        writer.add_tensor(f"v.blk.0.{name}.weight", weights(width, width))
        writer.add_tensor(f"v.blk.0.{name}.bias", constant(width, 0.0))
    for name in ("ln1", "ln2"):
        writer.add_tensor(f"v.blk.0.{name}.weight", constant(width, 1.0))
        writer.add_tensor(f"v.blk.0.{name}.bias", constant(width, 0.0))
    writer.add_tensor("v.blk.0.ffn_up.weight", weights(ffn, width))
    writer.add_tensor("v.blk.0.ffn_up.bias", constant(ffn, 0.0))
    writer.add_tensor("v.blk.0.ffn_down.weight", weights(width, ffn))
    writer.add_tensor("v.blk.0.ffn_down.bias", constant(width, 0.0))
    writer.add_tensor("v.post_ln.weight", constant(width, 1.0))
    writer.add_tensor("v.post_ln.bias", constant(width, 0.0))
    writer.add_tensor("mm.input_projection.weight", weights(width, text_width, scale=0.5))
    writer.add_tensor("mm.soft_emb_norm.weight", constant(width, 1.0))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def png(width: int, height: int, *, seed: int | None) -> bytes:
    """A PNG of random RGB pixels (`seed` None: all black, which compresses to almost nothing)."""
    if seed is None:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
    else:
        pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
