"""Images in a model's prompt, through llama.cpp's multimodal library (mtmd) and the model's projector (`mmproj`).

`Vision.prompt` turns a rendered prompt, in which each image stands as the media marker, into what the scheduler
feeds: text tokens, and for each image a run of stand-in token ids with the image's embeddings (`Media`), computed
here on the caller's thread (an mtmd context serves one image at a time: a lock). The stand-in ids lie above the
vocabulary and derive from the image's bytes, so two prompts that differ only in an image differ in their tokens
and the prefix cache never takes one image's cache for another's; they never reach a sampler or a draft model.
Every foreign failure becomes a `BadRequest` (the image's fault) or an `EngineError` (the projector's) here.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from llama_cpp import mtmd_cpp as mtmd

from somner.core.images import read_header
from somner.engine.llama import EngineError, LlamaModel, route_log
from somner.errors import BadRequest

MARKER: str = mtmd.mtmd_default_marker().decode()  # where an image goes in a rendered prompt
_IMAGE_CHUNK = mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
_TEXT_CHUNK = mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT
_STAND_IN_SPAN = 2**31 - 1  # stand-in ids stay within llama_token (int32)


# llama.cpp's image loader (stb_image, inside libmtmd). Called directly: mtmd's own helper tries data it cannot
# decode as audio, then as video through an outside program (ffprobe), which a server must never start for a client.
_stbi_load = mtmd._libmtmd.stbi_load_from_memory
_stbi_load.argtypes = [
    ctypes.POINTER(ctypes.c_uint8),
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
_stbi_load.restype = ctypes.POINTER(ctypes.c_uint8)
_stbi_free = mtmd._libmtmd.stbi_image_free
_stbi_free.argtypes = [ctypes.c_void_p]
_stbi_free.restype = None


def _bitmap(data: bytes) -> mtmd.mtmd_bitmap_p | None:
    """An RGB bitmap of an image file's pixels; None when it does not decode."""
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    width, height, channels = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    pixels = _stbi_load(buffer, len(data), ctypes.byref(width), ctypes.byref(height), ctypes.byref(channels), 3)
    if not pixels:
        return None
    try:
        rgb = ctypes.cast(pixels, ctypes.POINTER(ctypes.c_ubyte * (width.value * height.value * 3))).contents
        return mtmd.mtmd_bitmap_init(width.value, height.value, rgb) or None
    finally:
        _stbi_free(pixels)


@dataclass(frozen=True, slots=True)
class Media:
    """One image of a prompt: its embeddings take the prompt's positions [start, start + tokens)."""

    start: int
    embeddings: npt.NDArray[np.float32]  # (tokens, the model's embedding width)
    non_causal: bool  # the model reads the image's tokens all at once (Gemma 3): one decode, no causal mask

    @property
    def end(self) -> int:
        return self.start + len(self.embeddings)


class Vision:
    """A model's projector: loaded with the model, freed with it."""

    def __init__(self, path: Path, model: LlamaModel, *, threads: int, use_gpu: bool) -> None:
        route_log(mtmd.mtmd_log_set)
        route_log(mtmd.mtmd_helper_log_set)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False
        handle = mtmd.mtmd_init_from_file(str(path).encode(), model.handle, params)
        if not handle:
            raise EngineError(f"llama.cpp could not load the projector {path.name} for this model (see the engine log)")
        self.handle = handle
        self._model = model
        self._lock = threading.Lock()
        if not mtmd.mtmd_support_vision(handle):
            self.close()
            raise EngineError(f"{path.name} has no vision encoder")
        if mtmd.mtmd_decode_use_mrope(handle):
            self.close()
            raise EngineError(f"{path.name} needs M-RoPE positions (Qwen2-VL style), which this engine does not feed")

    def prompt(self, text: str, images: Sequence[bytes], *, add_special: bool) -> tuple[list[int], list[Media]]:
        """The tokens of `text` with its markers replaced by `images` (in order), and those images' embeddings."""
        with self._lock:
            bitmaps: list[mtmd.mtmd_bitmap_p] = []
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                for i, data in enumerate(images):
                    # (only what the header shows to be an image in a format the engine reads reaches the loader)
                    bitmap = _bitmap(data) if read_header(data) is not None else None
                    if not bitmap:
                        raise BadRequest(
                            f"Image {i} could not be read: it is corrupt, or not a PNG, JPEG, GIF or BMP image.",
                            param="messages",
                            code="invalid_image",
                        )
                    bitmaps.append(bitmap)
                return self._tokens(chunks, text, bitmaps, images, add_special)
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
                for bitmap in bitmaps:
                    mtmd.mtmd_bitmap_free(bitmap)

    def _tokens(
        self,
        chunks: mtmd.mtmd_input_chunks_p,
        text: str,
        bitmaps: list[mtmd.mtmd_bitmap_p],
        images: Sequence[bytes],
        add_special: bool,
    ) -> tuple[list[int], list[Media]]:
        raw = text.encode("utf-8")
        given = mtmd.mtmd_input_text()
        given.text, given.text_len, given.add_special, given.parse_special = raw, len(raw), add_special, True
        array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        if text.count(MARKER) != len(images):
            raise BadRequest(
                f"The prompt has {text.count(MARKER)} image places for {len(images)} images (is {MARKER!r} in the "
                "text?).",
                param="messages",
            )
        if mtmd.mtmd_tokenize(self.handle, chunks, ctypes.byref(given), array, len(bitmaps)) != 0:
            raise BadRequest("The engine could not prepare the images of this request.", param="messages")
        tokens: list[int] = []
        media: list[Media] = []
        image = 0
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == _TEXT_CHUNK:
                count = ctypes.c_size_t(0)
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens += list(pointer[: count.value]) if pointer else []
            elif kind == _IMAGE_CHUNK:
                embeddings = self._encode(chunk)
                non_causal = bool(mtmd.mtmd_decode_use_non_causal(self.handle, chunk))
                media.append(Media(start=len(tokens), embeddings=embeddings, non_causal=non_causal))
                tokens += self._stand_ins(images[image], len(embeddings))
                image += 1
            else:
                raise BadRequest("This model reads images only.", param="messages")
        return tokens, media

    def _encode(self, chunk: mtmd.mtmd_input_chunk_p) -> npt.NDArray[np.float32]:
        count = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        if mtmd.mtmd_input_chunk_get_n_pos(chunk) != count:
            raise EngineError("this projector's images take other positions than tokens, which the engine cannot feed")
        if mtmd.mtmd_encode_chunk(self.handle, chunk) != 0:
            raise EngineError("the projector failed to encode an image")
        output = mtmd.mtmd_get_output_embd(self.handle)
        if not output:
            raise EngineError("the projector produced no embeddings")
        width = self._model.n_embd
        return np.ctypeslib.as_array(output, shape=(count * width,)).reshape(count, width).copy()

    def _stand_ins(self, data: bytes, count: int) -> list[int]:
        base = self._model.n_vocab
        seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
        return [base + (seed + i) % (_STAND_IN_SPAN - base) for i in range(count)]

    def close(self) -> None:
        if self.handle:
            mtmd.mtmd_free(self.handle)
            self.handle = None
