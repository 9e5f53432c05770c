"""The tiny projector of `tests/fakes/mmproj_files.py`, on its own: llama.cpp's multimodal library (mtmd) loads it
next to the default model, and an image becomes the expected number of image tokens of the model's width, computed
deterministically (what the vision tests build on)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from llama_cpp import mtmd_cpp as mtmd

from somner.engine.llama import LlamaModel
from tests.fakes.mmproj_files import IMAGE_TOKENS, make_mmproj, png

pytestmark = pytest.mark.integration

_IMAGE_CHUNK = 1  # MTMD_INPUT_CHUNK_TYPE_IMAGE


@pytest.fixture(scope="module")
def vision(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path
) -> Iterator[tuple[LlamaModel, mtmd.mtmd_context_p]]:
    model = LlamaModel(model_path, gpu_layers=0)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = 2
    params.print_timings = False
    projector = make_mmproj(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf")
    context = mtmd.mtmd_init_from_file(str(projector).encode(), model.handle, params)
    assert context, "mtmd did not load the projector"
    try:
        yield model, context
    finally:
        mtmd.mtmd_free(context)
        model.close()


def image_embeddings(
    context: mtmd.mtmd_context_p, image: bytes
) -> tuple[list[tuple[int, int]], npt.NDArray[np.float32]]:
    """The prompt's chunks (type, tokens) and the image's embeddings."""
    data = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(context, data, len(image), False)
    assert bitmap, "the image did not decode"
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        prompt = b"<start_of_turn>user\nLook: " + mtmd.mtmd_default_marker() + b" What is it?<end_of_turn>\n"
        text = mtmd.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), True, True
        assert mtmd.mtmd_tokenize(context, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        shape: list[tuple[int, int]] = []
        vectors: npt.NDArray[np.float32] = np.zeros((0, 640), dtype=np.float32)
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind, n = mtmd.mtmd_input_chunk_get_type(chunk), mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            shape.append((kind, n))
            if kind == _IMAGE_CHUNK:
                assert mtmd.mtmd_encode_chunk(context, chunk) == 0
                out = mtmd.mtmd_get_output_embd(context)
                vectors = np.ctypeslib.as_array(out, shape=(n * 640,)).reshape(n, 640).copy()
        return shape, vectors
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)


def test_an_image_becomes_image_tokens_of_the_models_width(vision: tuple[LlamaModel, mtmd.mtmd_context_p]) -> None:
    model, context = vision
    assert model.n_embd == 640 and mtmd.mtmd_support_vision(context)
    shape, first = image_embeddings(context, png(60, 40, seed=1))
    assert [kind for kind, _ in shape] == [0, _IMAGE_CHUNK, 0]
    assert shape[1][1] == IMAGE_TOKENS and first.shape == (IMAGE_TOKENS, 640) and float(first.std()) > 0
    _, again = image_embeddings(context, png(60, 40, seed=1))
    _, other = image_embeddings(context, png(60, 40, seed=2))
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)
