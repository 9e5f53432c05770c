"""TabbyAPI's load options as a model entry's keys, for llama.cpp and ExLlamaV3 models, and bad cache modes."""

from __future__ import annotations

import pytest

from somner.errors import BadRequest
from somner.wire.tabby import decode, schemas


def options(backend: str, **body: object) -> dict[str, object]:
    request = schemas.ModelLoadRequest.model_validate({"model_name": "m", **body})
    return decode.load_options(request, None, backend)


def test_llama_cpp_models_get_slots_shares_and_row_split() -> None:
    got = options(
        "worker", max_seq_len=4096, cache_size=16384, cache_mode="q8", gpu_split=[20, 60], tensor_parallel=True
    )
    assert got == {"ctx": 4096, "parallel": 4, "cache_type": "q8_0", "tensor_split": [20, 60], "split_mode": "row"}
    assert options("worker", max_seq_len=2048, cache_size=16384, max_batch_size=2)["parallel"] == 2


def test_exllamav3_models_take_tabbys_own_meaning() -> None:
    got = options(
        "exllamav3", max_seq_len=4096, cache_size=16384, cache_mode="Q6", gpu_split=[20, 60], tensor_parallel=True
    )
    assert got == {"ctx": 4096, "cache_size": 16384, "cache_type": "q6", "gpu_split": [20, 60], "tensor_parallel": True}


@pytest.mark.parametrize("mode", ["Q5", "8,8", "", "fp32"])
def test_unknown_cache_modes_are_refused(mode: str) -> None:
    with pytest.raises(BadRequest, match="cache_mode"):
        options("worker", cache_mode=mode)
