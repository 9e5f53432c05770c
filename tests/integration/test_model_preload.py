"""The worker's model as it loads: begun in a thread before the engine is imported (preload.py), and its ends of
generation asked token by token instead of scanned at every load."""

from __future__ import annotations

from pathlib import Path

import pytest

from somner.engine.config import EngineConfig
from somner.engine.llama import EngineError
from somner.engine.preload import ModelPreload

pytestmark = pytest.mark.integration


def test_a_preloaded_model_is_taken_once_and_its_ends_of_generation_are_the_full_scans(model_path: Path) -> None:
    shown: list[float] = []
    preload = ModelPreload(EngineConfig(model_path=model_path, model_id="m", gpu_layers=0), shown.append)
    model = preload.result()
    try:
        assert shown and shown[-1] == 1.0  # (progress reported from the loading thread)
        with pytest.raises(RuntimeError, match="already taken"):
            preload.result()
        everything = model.eog_tokens
        assert model.eos in everything
        for token in [*everything, *range(0, model.n_vocab, 997)]:
            assert model.is_eog(token) == (token in everything)
    finally:
        model.close()


def test_a_failed_preload_raises_where_the_model_is_taken(tmp_path: Path) -> None:
    hollow = tmp_path / "hollow.gguf"
    hollow.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    preload = ModelPreload(EngineConfig(model_path=hollow, model_id="h", gpu_layers=0), lambda _: None)
    with pytest.raises(EngineError, match=r"could not load hollow\.gguf"):
        preload.result()
