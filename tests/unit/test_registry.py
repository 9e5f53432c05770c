from __future__ import annotations

import os
from pathlib import Path

import pytest

from somner.errors import AmbiguousModelName, ModelNotFound
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
    assert (spec.path, spec.parallel, spec.ctx, spec.entry.template, spec.source) == (path, 8, 2048, "chatml", "config")


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


def test_per_model_files_tune_models_and_add_remote_ones(tmp_path: Path) -> None:
    touch(tmp_path / "local.gguf")
    (tmp_path / "local.yaml").write_text("ctx: 1024\naliases: [loc]\ndefaults:\n  temperature: 0.2\n")
    (tmp_path / "remote.yaml").write_text("urls: ['http://127.0.0.1:9/']\nupstream_model: big\n")
    settings = Settings(models=[ModelEntry(id="local", ctx=512, parallel=2)])  # the file wins over the config
    registry = ModelRegistry(settings, tmp_path)
    local = registry.get("loc")
    assert (local.id, local.ctx, local.parallel, local.source) == ("local", 1024, 2, "file")
    assert local.entry.defaults is not None and local.entry.defaults.temperature == 0.2
    remote = registry.get("remote")
    assert (remote.kind, remote.entry.urls, remote.entry.upstream_model) == ("upstream", ["http://127.0.0.1:9"], "big")


def test_bad_model_files_are_errors_at_start_and_ignored_later(tmp_path: Path) -> None:
    from somner.models.registry import ModelConfigError

    touch(tmp_path / "ok.gguf")
    (tmp_path / "broken.yaml").write_text("ctx: lots\n")
    with pytest.raises(ModelConfigError, match="broken"):
        ModelRegistry(Settings(), tmp_path)
    (tmp_path / "broken.yaml").unlink()
    registry = ModelRegistry(Settings(), tmp_path)
    (tmp_path / "broken.yaml").write_text("ctx: lots\n")
    registry.refresh()  # a typo saved while serving: logged, that model's file ignored
    assert registry.ids() == ["ok"]
    (tmp_path / "clash.yaml").write_text("urls: ['http://x']\naliases: [ok]\n")
    registry.refresh()
    assert registry.get("ok").id == "ok"


@pytest.mark.parametrize(
    ("entry", "message"),
    [({"id": "u", "urls": ["ftp://x"]}, "http"), ({"id": "c", "path": "/m.gguf", "cache_type": "q2"}, "cache_type")],
)
def test_model_entries_are_checked(entry: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        ModelEntry.model_validate(entry)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "w"}, "needs `path`"),
        ({"id": "p", "backend": "process"}, "needs `command`"),
        ({"id": "u", "backend": "upstream"}, "needs `urls`"),
        ({"id": "d", "urls": ["http://x"], "draft_model": "/d.gguf"}, "`draft_model` is for worker models"),
        ({"id": "e", "command": "llama-server", "draft_model": "/d.gguf"}, "--model-draft"),
    ],
)
def test_incomplete_backends_are_refused_at_start(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    from somner.models.registry import ModelConfigError

    with pytest.raises(ModelConfigError, match=message):
        ModelRegistry(Settings(models=[ModelEntry.model_validate(entry)]), tmp_path)


def test_cache_type_accepts_tabbyapi_names() -> None:
    assert ModelEntry.model_validate({"id": "m", "path": "/m.gguf", "cache_type": "Q8"}).cache_type == "q8_0"
    assert ModelEntry.model_validate({"id": "m", "path": "/m.gguf", "cache_type": "FP16"}).cache_type == "f16"


def test_duplicate_names_and_unknown_groups_are_config_errors() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="appears twice"):
        Settings(models=[ModelEntry(id="a", path=Path("/a")), ModelEntry(id="b", path=Path("/b"), aliases=["a"])])
    with pytest.raises(ValidationError, match="groups"):
        Settings(models=[ModelEntry(id="a", path=Path("/a"), group="gpu")])


def test_a_draft_model_reaches_the_worker_command(tmp_path: Path) -> None:
    from somner.models.backends.worker_command import worker_command

    entry = ModelEntry.model_validate({"id": "m", "path": "/m.gguf", "draft_model": "/d.gguf", "draft_tokens": 6})
    registry = ModelRegistry(Settings(models=[entry]), tmp_path)
    command = worker_command(registry.get("m"), tmp_path / "m.sock")
    assert command[command.index("--draft-model") + 1] == "/d.gguf"
    assert command[command.index("--draft-tokens") + 1] == "6"
    plain = worker_command(
        ModelRegistry(Settings(models=[ModelEntry(id="p", path=Path("/p.gguf"))]), tmp_path).get("p"),
        tmp_path / "p.sock",
    )
    assert "--draft-model" not in plain


def test_names_as_clients_write_them(tmp_path: Path) -> None:
    touch(tmp_path / "gemma-3-270m-q4_k_m.gguf")
    touch(tmp_path / "qwen:7b.gguf")
    entries = [ModelEntry.model_validate({"id": "qwen:7b", "aliases": ["Chat"]})]
    registry = ModelRegistry(Settings(models=entries), tmp_path)
    for name in (
        "gemma-3-270m-q4_k_m",
        "gemma-3-270m-q4_k_m:latest",
        "Gemma-3-270M-Q4_K_M",
        "GEMMA-3-270M-Q4_K_M:Latest",
    ):
        assert registry.get(name).id == "gemma-3-270m-q4_k_m", name
    assert registry.registered_name("Gemma-3-270M-Q4_K_M:latest") == "gemma-3-270m-q4_k_m"
    for name in ("qwen:7b", "QWEN:7B", "chat", "chat:latest", "CHAT"):
        assert registry.get(name).id == "qwen:7b", name
    assert registry.registered_name("chat:latest") == "Chat"
    for name in ("qwen", "qwen:latest", "gemma-3", "gemma-3-270m-q4_k_m:270m"):
        with pytest.raises(ModelNotFound):
            registry.get(name)


def test_a_name_that_only_letter_case_tells_apart_is_ambiguous(tmp_path: Path) -> None:
    touch(tmp_path / "Model.gguf")
    touch(tmp_path / "model.gguf")
    registry = ModelRegistry(Settings(), tmp_path)
    assert registry.get("Model").id == "Model" and registry.get("model:latest").id == "model"  # exact names win
    with pytest.raises(AmbiguousModelName) as info:
        registry.get("MODEL")
    assert info.value.status == 400 and info.value.param == "model"
    assert "'Model', 'model'" in info.value.message
