from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from somner.config_example import render
from somner.settings import (
    ConfigFileError,
    Settings,
    load_settings,
    resolve_data_dir,
    resolve_models_dir,
    unknown_environment_keys,
)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "somner.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_secure() -> None:
    settings = load_settings(environ={})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = write(tmp_path, {"port": 9000, "host": "127.0.0.2", "engine": {"parallel": 2, "ctx": 1024}})
    env = {"SOMNER_PORT": "9100", "SOMNER_ENGINE__PARALLEL": "6"}
    settings = load_settings(config, {"port": 9200}, environ=env)
    assert settings.port == 9200  # flag beats environment
    assert settings.host == "127.0.0.2"  # file value survives
    assert settings.engine.parallel == 6  # nested environment beats the file
    assert settings.engine.ctx == 1024  # and leaves the file's siblings alone


def test_unknown_keys_are_errors_naming_the_key(tmp_path: Path) -> None:
    config = write(tmp_path, {"prot": 1, "engine": {"paralel": 2}})
    with pytest.raises(ValidationError) as info:
        load_settings(config, environ={})
    locs = {tuple(e["loc"]) for e in info.value.errors()}
    assert ("prot",) in locs
    assert ("engine", "paralel") in locs


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"port": 0}, "port"),
        ({"port": "high"}, "port"),
        ({"engine": {"ready_timeout": "soon"}}, "engine"),
        ({"engine": {"parallel": 0}}, "engine"),
        ({"models": [{"id": "../x", "path": "/m.gguf"}]}, "models"),
        ({"models": [{"id": "a", "path": "/a.gguf"}, {"id": "a", "path": "/b.gguf"}]}, "models"),
        ({"log_level": "loud"}, "log_level"),
    ],
)
def test_bad_values_are_errors(tmp_path: Path, data: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(write(tmp_path, data), environ={})
    assert info.value.errors()[0]["loc"][0] == where


def test_durations_in_config(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"engine": {"ready_timeout": "2m", "stop_timeout": 3}}), environ={})
    assert settings.engine.ready_timeout == 120.0
    assert settings.engine.stop_timeout == 3.0


@pytest.mark.parametrize("content", ["- a list\n", "key: [unclosed\n"])
def test_unreadable_files_are_reported(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigFileError):
        load_settings(path, environ={})


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_data_dir_resolution_order(tmp_path: Path) -> None:
    explicit = Settings(data_dir=tmp_path / "explicit")
    assert resolve_data_dir(explicit, is_mounted=lambda p: True, environ={}) == tmp_path / "explicit"
    plain = Settings()
    mounted = {Path("/workspace")}
    assert resolve_data_dir(plain, is_mounted=mounted.__contains__, environ={}) == Path("/workspace/somner")
    mounted.add(Path("/runpod-volume"))
    assert resolve_data_dir(plain, is_mounted=mounted.__contains__, environ={}) == Path("/runpod-volume/somner")
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert resolve_data_dir(plain, is_mounted=lambda p: False, environ=env) == tmp_path / "xdg" / "somner"
    env = {"HOME": str(tmp_path / "home")}
    expected = tmp_path / "home" / ".local" / "share" / "somner"
    assert resolve_data_dir(plain, is_mounted=lambda p: False, environ=env) == expected


def test_data_dir_from_environment(tmp_path: Path) -> None:
    settings = load_settings(environ={"SOMNER_DATA_DIR": str(tmp_path)})
    assert resolve_data_dir(settings) == tmp_path
    assert resolve_models_dir(settings, tmp_path) == tmp_path / "models"


def test_unknown_environment_keys_are_found() -> None:
    env = {"SOMNER_PORT": "1", "SOMNER_PROT": "1", "SOMNER_ENGINE__CTX": "1", "OTHER": "x"}
    assert unknown_environment_keys(env) == ["SOMNER_PROT"]


def test_example_config_is_generated_and_loads() -> None:
    path = ROOT / "config.example.yaml"
    assert path.read_text() == render(), (
        "config.example.yaml is stale: run `somner config example > config.example.yaml`"
    )
    settings = load_settings(path, environ={})
    assert settings == Settings()


def test_example_documents_every_key() -> None:
    text = render()
    for name in Settings.model_fields:
        assert f"\n{name}:" in text
    for name in Settings.model_fields["engine"].annotation.model_fields:  # type: ignore[union-attr]
        assert f"\n  {name}:" in text
