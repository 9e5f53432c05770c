"""Aliases and deletions in the models directory (what Ollama's copy and delete do)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from somner.models import library
from somner.models.registry import ModelRegistry
from somner.settings import Settings


def test_add_alias_creates_and_merges(tmp_path: Path) -> None:
    assert library.add_alias(tmp_path, "m", "a1", []) == ["a1"]
    (tmp_path / "m.yaml").write_text("ctx: 2048\naliases: [a1]\n")
    assert library.add_alias(tmp_path, "m", "a2", ["from-config"]) == ["from-config", "a1", "a2"]
    assert yaml.safe_load((tmp_path / "m.yaml").read_text()) == {"ctx": 2048, "aliases": ["from-config", "a1", "a2"]}
    assert library.add_alias(tmp_path, "m", "a2", []) == ["from-config", "a1", "a2"]  # idempotent
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("alias", ["../x", "a/b", "", ".hidden", "m"])
def test_bad_aliases_are_refused(tmp_path: Path, alias: str) -> None:
    with pytest.raises(library.LibraryError):
        library.add_alias(tmp_path, "m", alias, [])
    assert not (tmp_path / "m.yaml").exists()


def test_unreadable_model_file_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("- a list\n")
    with pytest.raises(library.LibraryError, match="mapping"):
        library.add_alias(tmp_path, "m", "a", [])
    assert (tmp_path / "m.yaml").read_text() == "- a list\n"


def test_remove_alias_keeps_the_rest(tmp_path: Path) -> None:
    library.add_alias(tmp_path, "m", "a1", ["c"])
    library.add_alias(tmp_path, "m", "a2", ["c", "a1"])
    assert library.remove_alias(tmp_path, "m", "a1", ["c", "a1", "a2"]) == ["c", "a2"]


def test_concurrent_aliases_are_all_kept(tmp_path: Path) -> None:
    threads = [threading.Thread(target=library.add_alias, args=(tmp_path, "m", f"a{i}", [])) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    aliases = yaml.safe_load((tmp_path / "m.yaml").read_text())["aliases"]
    assert sorted(aliases) == sorted(f"a{i}" for i in range(8))


def test_the_registry_sees_the_aliases(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    registry = ModelRegistry(Settings(data_dir=tmp_path), tmp_path)
    library.add_alias(tmp_path, "m", "other:v1", [])
    registry.refresh()
    spec = registry.find("other:v1")
    assert spec is not None and spec.id == "m"


def test_delete_model(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    library.add_alias(tmp_path, "m", "a", [])
    assert library.delete_model(tmp_path, "m", gguf) == [gguf.resolve(), tmp_path / "m.yaml"]
    assert not gguf.exists() and not (tmp_path / "m.yaml").exists()
    assert library.delete_model(tmp_path, "gone", None) == []


def test_delete_refuses_files_elsewhere(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    outside = tmp_path / "keep.gguf"
    outside.write_bytes(b"GGUF")
    with pytest.raises(library.LibraryError, match="outside"):
        library.delete_model(models, "keep", outside)
    assert outside.exists()
