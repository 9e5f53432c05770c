from __future__ import annotations

import os
from pathlib import Path

import pytest

from somner.errors import ModelNotFound
from somner.models.registry import ModelRegistry
from somner.settings import ModelEntry, Settings


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_scans_the_models_directory(tmp_path: Path) -> None:
    models = tmp_path / "models"
    touch(models / "gemma-3-270m-q4_k_m.gguf")
    touch(models / "other.gguf")
    touch(models / ".partial.gguf")
    touch(models / "bad name.gguf")
    touch(models / "notes.txt")
    registry = ModelRegistry(Settings(), models)
    assert registry.ids() == ["gemma-3-270m-q4_k_m", "other"]
    spec = registry.get("other")
    assert spec.path == (models / "other.gguf").resolve()
    assert spec.parallel == 4
    assert spec.source == "directory"


def test_symlinks_out_of_the_directory_are_skipped(tmp_path: Path) -> None:
    outside = touch(tmp_path / "elsewhere" / "secret.gguf")
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(outside, models / "secret.gguf")
    os.symlink(touch(models / "real.gguf"), models / "alias.gguf")
    registry = ModelRegistry(Settings(), models)
    assert registry.ids() == ["alias", "real"]


def test_unknown_names_never_touch_the_filesystem(tmp_path: Path) -> None:
    touch(tmp_path / "secret.gguf")
    models = tmp_path / "models"
    models.mkdir()
    registry = ModelRegistry(Settings(), models)
    for name in ("../secret", "../secret.gguf", "/etc/passwd", "secret"):
        with pytest.raises(ModelNotFound) as info:
            registry.get(name)
        assert info.value.param == "model"
        assert "Available models: none" in info.value.message


def test_new_files_are_found_on_demand(tmp_path: Path) -> None:
    registry = ModelRegistry(Settings(), tmp_path)
    assert registry.ids() == []
    touch(tmp_path / "late.gguf")
    assert registry.get("late").id == "late"


def test_config_entries_and_overrides(tmp_path: Path) -> None:
    path = touch(tmp_path / "anywhere" / "weights.gguf")
    settings = Settings(
        engine={"parallel": 2, "ctx": 2048},  # type: ignore[arg-type]
        models=[ModelEntry(id="mine", path=path, parallel=8, template="chatml")],
    )
    registry = ModelRegistry(settings, tmp_path / "models")
    spec = registry.get("mine")
    assert (spec.path, spec.parallel, spec.ctx, spec.template, spec.source) == (path, 8, 2048, "chatml", "config")


def test_cli_model_path_and_id(tmp_path: Path) -> None:
    path = touch(tmp_path / "x" / "cli-model.gguf")
    registry = ModelRegistry(Settings(model=str(path)), tmp_path / "models")
    assert registry.default_id == "cli-model"
    assert registry.get("cli-model").source == "cli"
    touch(tmp_path / "models" / "known.gguf")
    assert ModelRegistry(Settings(model="known"), tmp_path / "models").default_id == "known"
    with pytest.raises(ModelNotFound):
        ModelRegistry(Settings(model="missing"), tmp_path / "models")
    with pytest.raises(ModelNotFound):
        ModelRegistry(Settings(model=str(tmp_path / "nope" / "file.gguf")), tmp_path / "models")
