"""`backend: exllamav3` in the configuration: which keys it takes and refuses, the worker's command line, the
folder checks before a process starts, and the memory and context the gateway expects of an EXL3 folder."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from somner.errors import BadRequest, ModelLoadFailed
from somner.exl3.folder import sizes
from somner.models import exl3
from somner.models.backends.exl3 import Exl3WorkerBackend, exl3_command
from somner.models.backends.worker import WorkerPaths
from somner.models.context import model_context
from somner.models.memory import estimate_bytes
from somner.models.registry import ModelConfigError, ModelRegistry, ModelSpec
from somner.services import Paths, backend_factory
from somner.settings import EngineSettings, ModelEntry, Settings
from tests.fakes.exl3_generator import write_folder


def entry(**keys: Any) -> ModelEntry:
    return ModelEntry.model_validate({"id": "m", "backend": "exllamav3", "path": "/models/m-exl3", **keys})


def spec_of(**keys: Any) -> ModelSpec:
    return ModelSpec(entry=entry(**keys), engine=EngineSettings(), source="config")


@pytest.mark.parametrize(("given", "kept"), [("FP16", "f16"), ("Q8", "q8_0"), ("Q6", "q6"), ("q4", "q4_0")])
def test_tabbyapi_cache_modes_map_onto_cache_types(given: str, kept: str) -> None:
    model = entry(cache_type=given)
    assert model.cache_type == kept
    assert model.missing() is None


def test_an_unknown_cache_mode_is_refused() -> None:
    with pytest.raises(ValidationError):
        entry(cache_type="Q5")


def test_q6_is_refused_for_llama_cpp() -> None:
    gguf = ModelEntry(id="g", path=Path("/models/g.gguf"), cache_type="q6")
    assert gguf.missing() == "model 'g': cache_type q6 (Q6) is ExLlamaV3's; llama.cpp's KV cache is f16, q8_0 or q4_0"


def test_the_registry_refuses_q6_on_a_gguf_model(tmp_path: Path) -> None:
    settings = Settings(models=[{"id": "g", "path": str(tmp_path / "g.gguf"), "cache_type": "Q6"}])  # type: ignore[list-item]
    with pytest.raises(ModelConfigError, match="cache_type q6"):
        ModelRegistry(settings, tmp_path / "models")


def test_run_time_settings_with_q6_on_a_gguf_model_are_a_400(tmp_path: Path) -> None:
    settings = Settings(models=[{"id": "g", "path": str(tmp_path / "g.gguf")}])  # type: ignore[list-item]
    registry = ModelRegistry(settings, tmp_path / "models")
    with pytest.raises(BadRequest, match="cache_type q6"):
        registry.set_runtime("g", {"cache_type": "Q6"})
    assert registry.get("g").entry.cache_type is None


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"path": None}, "the exllamav3 backend needs `path` (an EXL3 model folder)"),
        ({"gpu_layers": 10}, "gpu_layers is for llama.cpp (the worker backend)"),
        ({"tensor_split": [1, 1], "rope_base": 1e6}, "rope_base, tensor_split are for llama.cpp"),
        ({"embeddings": True}, "the exllamav3 backend serves no embeddings"),
        ({"cache_type_k": "q8_0"}, "quantizes both keys and values or neither"),
    ],
)
def test_keys_the_exllamav3_backend_cannot_use(keys: dict[str, Any], problem: str) -> None:
    found = entry(**keys).missing()
    assert found is not None
    assert problem in found


def test_exllamav3_keys_on_a_llama_cpp_model_are_refused() -> None:
    gguf = ModelEntry.model_validate({"id": "g", "path": "/models/g.gguf", "cache_size": 8192, "gpu_split": [20]})
    assert gguf.missing() == "model 'g': cache_size, gpu_split are for the exllamav3 backend"


def test_a_draft_model_and_mixed_bits_are_fine() -> None:
    assert entry(draft_model="/models/small-exl3", cache_type_k="q8_0", cache_type_v="q4").missing() is None


@pytest.mark.parametrize("split", [[], [-1.0, 2.0], [0.0, 0.0]])
def test_gpu_split_is_gigabytes_per_gpu(split: list[float]) -> None:
    with pytest.raises(ValidationError, match="gpu_split"):
        entry(gpu_split=split)


def test_the_worker_command_carries_the_engine_options() -> None:
    spec = spec_of(
        ctx=8192,
        parallel=8,
        cache_size=32768,
        cache_type="Q6",
        template="chatml",
        draft_model="/models/small-exl3",
        draft_tokens=3,
        loras=[{"path": "/loras/style", "scale": 0.5}],
        gpu_split=[20, 24.5],
        tensor_parallel=True,
    )
    command = exl3_command(spec, Path("/run/w0.sock"))
    assert command[:4] == [sys.executable, "-m", "somner", "worker-exl3"]
    flags = command[4:]
    for pair in (
        ["--model", "/models/m-exl3"],
        ["--id", "m"],
        ["--socket", "/run/w0.sock"],
        ["--parallel", "8"],
        ["--ctx", "8192"],
        ["--cache-size", "32768"],
        ["--cache-type-k", "q6"],
        ["--cache-type-v", "q6"],
        ["--template", "chatml"],
        ["--draft-model", "/models/small-exl3"],
        ["--draft-tokens", "3"],
        ["--lora", "/loras/style=0.5"],
        ["--gpu-split", "20.0,24.5"],
    ):
        at = flags.index(pair[0])
        assert flags[at : at + 2] == pair
    assert "--tensor-parallel" in flags and "--exit-with-parent" in flags


def test_a_plain_entry_leaves_the_defaults_to_the_worker() -> None:
    flags = exl3_command(spec_of(), Path("/run/w0.sock"))
    for absent in ("--ctx", "--cache-size", "--draft-model", "--lora", "--gpu-split", "--tensor-parallel"):
        assert absent not in flags


def test_the_backend_factory_makes_an_exllamav3_worker(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    paths = Paths(tmp_path, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path)
    backend = backend_factory(settings, paths)(spec_of())
    assert isinstance(backend, Exl3WorkerBackend)
    assert backend.command()[3] == "worker-exl3"


def _backend(tmp_path: Path, path: Path) -> Exl3WorkerBackend:
    spec = ModelSpec(entry=entry(path=str(path)), engine=EngineSettings(), source="config")
    return Exl3WorkerBackend(spec, WorkerPaths(run_dir=tmp_path, log_dir=tmp_path), EngineSettings(), 0)


def test_a_missing_folder_is_refused_before_a_process_starts(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="The model folder for 'm' is missing"):
        asyncio.run(_backend(tmp_path, tmp_path / "nowhere").check_model())


def test_a_folder_that_is_not_exl3_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "gptq", quant_method="gptq")
    with pytest.raises(ModelLoadFailed, match="is not an EXL3 model \\(quant_method 'gptq'\\)"):
        asyncio.run(_backend(tmp_path, folder).check_model())
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadFailed, match=r"gptq has no config\.json"):
        asyncio.run(_backend(tmp_path, folder).check_model())


def test_a_good_folder_passes(tmp_path: Path) -> None:
    asyncio.run(_backend(tmp_path, write_folder(tmp_path / "good")).check_model())


def test_memory_is_weights_plus_the_kv_cache(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")  # 2 layers, 2 KV heads of 16 dims, 4096 bytes of weights
    spec = ModelSpec(entry=entry(path=str(folder), ctx=1024, parallel=2), engine=EngineSettings(), source="config")
    per_token_f16 = 2 * 2 * 16 * (2 + 2)
    assert exl3.model_bytes(spec) == 4096 + per_token_f16 * 2048
    quantized = ModelSpec(
        entry=entry(path=str(folder), ctx=1024, parallel=2, cache_type="q4"), engine=EngineSettings(), source="config"
    )
    assert exl3.model_bytes(quantized) < exl3.model_bytes(spec)
    assert estimate_bytes(spec) > exl3.model_bytes(spec)  # (plus the engine process)
    drafted = ModelSpec(
        entry=entry(path=str(folder), ctx=1024, parallel=2, draft_model=str(folder)),
        engine=EngineSettings(),
        source="config",
    )
    assert exl3.model_bytes(drafted) == 2 * exl3.model_bytes(spec)


def test_an_unreadable_folder_estimates_nothing(tmp_path: Path) -> None:
    assert estimate_bytes(spec_of(path=str(tmp_path / "nowhere"))) == 0


def test_the_context_is_the_training_context_capped_like_the_worker(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")  # trained on 2048
    assert model_context(ModelSpec(entry=entry(path=str(folder)), engine=EngineSettings(), source="config")) == 2048
    assert model_context(spec_of(path=str(folder), ctx=512)) == 512


@pytest.mark.parametrize(
    ("ctx", "cache_size", "parallel", "trained"),
    [(None, None, 4, 2048), (None, None, 4, 131072), (1000, None, 3, None), (8192, 4096, 4, None), (512, 300, 1, 8)],
)
def test_gateway_and_worker_size_the_cache_alike(
    ctx: int | None, cache_size: int | None, parallel: int, trained: int | None
) -> None:
    max_seq_len, tokens = sizes(ctx, cache_size, parallel, trained)
    gateway_folder = exl3.Exl3Folder(Path("m"), "X", 1, 1, 1, trained, 0)
    assert exl3.context_of(gateway_folder, ctx) == max_seq_len
    assert exl3.cache_tokens(max_seq_len, parallel, cache_size) == tokens
    assert tokens % 256 == 0 and tokens >= max_seq_len
