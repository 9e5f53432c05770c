"""Where a model's memory goes (RAM, each GPU), on recorded GPU readings: offloaded layers, tensor_split, split
mode none, CPU-only llama.cpp builds, and machines without GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from somner.models.placement import GPU_OVERHEAD, PROCESS_OVERHEAD, RAM, Device, place, total
from somner.models.registry import ModelSpec
from somner.observability.gpu import parse_nvidia_smi
from somner.settings import EngineSettings, ModelEntry
from tests.fakes.gguf_files import make_gguf

GIB = 1024**3
# `nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv,noheader,nounits` on 2 x H100 80GB
RECORDED = "0, NVIDIA H100 80GB HBM3, 1, 81559\n1, NVIDIA H100 80GB HBM3, 1, 81559\n"
ESTIMATE = 10 * GIB + PROCESS_OVERHEAD  # 10 GiB of weights and KV cache, plus the engine process


@pytest.fixture
def h100s() -> list[Device]:
    return [Device(index=g.index, total_bytes=g.total_bytes) for g in parse_nvidia_smi(RECORDED)]


def spec_of(tmp_path: Path, **entry: Any) -> ModelSpec:
    path = tmp_path / "m.gguf"
    path.write_bytes(make_gguf([4], ints={"llama.block_count": 32}))
    return ModelSpec(entry=ModelEntry(id="m", path=path, **entry), engine=EngineSettings(), source="config")


def test_all_layers_on_one_gpu(tmp_path: Path, h100s: list[Device]) -> None:
    footprint = place(spec_of(tmp_path, tensor_split=[1]), ESTIMATE, h100s)
    assert footprint == {RAM: PROCESS_OVERHEAD, "gpu0": 10 * GIB + GPU_OVERHEAD}


def test_part_of_the_layers_offloaded(tmp_path: Path, h100s: list[Device]) -> None:
    footprint = place(spec_of(tmp_path, gpu_layers=8, tensor_split=[1]), ESTIMATE, h100s)
    assert footprint == {RAM: PROCESS_OVERHEAD + int(7.5 * GIB), "gpu0": int(2.5 * GIB) + GPU_OVERHEAD}


def test_tensor_split_and_the_default_split(tmp_path: Path, h100s: list[Device]) -> None:
    split = place(spec_of(tmp_path, tensor_split=[3, 1]), ESTIMATE, h100s)
    assert split["gpu0"] - GPU_OVERHEAD == 3 * (split["gpu1"] - GPU_OVERHEAD)
    even = place(spec_of(tmp_path), ESTIMATE, h100s)  # in proportion to memory: equal GPUs, equal halves
    assert even["gpu0"] == even["gpu1"] == 5 * GIB + GPU_OVERHEAD and total(even) == ESTIMATE + 2 * GPU_OVERHEAD


def test_split_mode_none_uses_the_main_gpu(tmp_path: Path, h100s: list[Device]) -> None:
    footprint = place(spec_of(tmp_path, split_mode="none", main_gpu=1), ESTIMATE, h100s)
    assert set(footprint) == {RAM, "gpu1"}


def test_cpu_only(tmp_path: Path, h100s: list[Device]) -> None:
    spec = spec_of(tmp_path)
    assert place(spec, ESTIMATE, []) == {RAM: ESTIMATE}  # no GPU
    assert place(spec, ESTIMATE, h100s, llama_gpu=False) == {RAM: ESTIMATE}  # a llama.cpp without GPU support
    assert place(spec_of(tmp_path, gpu_layers=0), ESTIMATE, h100s) == {RAM: ESTIMATE}
    assert place(spec, 0, h100s) == {}  # (remote engines hold nothing here)


def test_an_exllamav3_model_lives_on_the_gpus_by_its_gpu_split(tmp_path: Path, h100s: list[Device]) -> None:
    folder = tmp_path / "exl3"
    folder.mkdir()
    spec = ModelSpec(
        entry=ModelEntry(id="x", backend="exllamav3", path=folder, gpu_split=[20, 60]),
        engine=EngineSettings(),
        source="config",
    )
    footprint = place(spec, ESTIMATE, h100s, llama_gpu=False)  # (llama.cpp's build does not matter to it)
    assert footprint[RAM] == PROCESS_OVERHEAD
    assert footprint["gpu1"] - GPU_OVERHEAD == 3 * (footprint["gpu0"] - GPU_OVERHEAD)
