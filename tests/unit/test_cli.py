"""The command line, in process (typer's runner): version, config check/show/example, worker argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from somner import __version__
from somner.cli import app
from somner.config_example import render

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SOMNER_"):
            monkeypatch.delenv(key)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"somner {__version__}"


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("port: 9000\nengine:\n  parallel: 2\n")
    result = runner.invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_config_check_names_a_misspelt_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("prot: 9000\nengine:\n  paralel: 2\n  ctx: -5\n")
    result = runner.invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 1
    assert "unknown key 'prot' (did you mean 'port'?)" in result.output
    assert "unknown key 'engine.paralel' (did you mean 'engine.parallel'?)" in result.output
    assert "engine.ctx" in result.output


def test_config_check_reports_unreadable_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_config_check_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMNER_PORT", "not-a-port")
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 1
    assert "port" in result.output


def test_config_show_prints_effective_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 9000\n")
    monkeypatch.setenv("SOMNER_ENGINE__PARALLEL", "3")
    monkeypatch.setenv("SOMNER_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["port"] == 9000
    assert shown["engine"]["parallel"] == 3
    assert shown["data_dir"] == str(tmp_path / "data")
    assert shown["models_dir"] == str(tmp_path / "data" / "models")


def test_config_example_matches_the_generator() -> None:
    result = runner.invoke(app, ["config", "example"])
    assert result.exit_code == 0
    assert result.output == render()


def test_serve_refuses_bad_configuration(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("hots: 0.0.0.0\n")
    result = runner.invoke(app, ["serve", "--config", str(path), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown key 'hots' (did you mean 'host'?)" in result.output


def test_serve_refuses_an_unknown_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), "--model", "nothing-here"])
    assert result.exit_code == 1
    assert "nothing-here" in result.output


def test_worker_needs_exactly_one_address(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    result = runner.invoke(app, ["worker", "--model", str(model)])
    assert result.exit_code == 2
    result = runner.invoke(app, ["worker", "--model", str(model), "--port", "1", "--socket", "/tmp/x"])
    assert result.exit_code == 2


def test_serve_without_any_model_explains_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from somner.models import default_model

    def missing() -> object:
        raise default_model.DefaultModelUnavailable("the default model package is not installed; pip install ...")

    monkeypatch.setattr(default_model, "_package", missing)
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "pip install" in result.output


def test_serve_refuses_auth_off_beyond_loopback(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("auth:\n  enabled: false\n")
    result = runner.invoke(app, ["serve", "--config", str(config), "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "--i-know-auth-is-off" in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["frob"], "error: No such command 'frob'. (see 'somner --help')"),
        (["keys", "lsx"], "error: No such command 'lsx'. (see 'somner keys --help')"),
        (["run"], "error: Missing argument 'model'. (see 'somner run --help')"),
        (["serve", "--nope"], "error: No such option: --nope"),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_line_and_status_2(args: list[str], line: str) -> None:
    """As users run it (the console script's `main`, in a process): one line on stderr, no framed box."""
    import subprocess
    import sys

    somner = str(Path(sys.executable).parent / "somner")  # (the console script)
    done = subprocess.run([somner, *args], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(line), done.stderr
    help_text = subprocess.run([somner, "keys", "--help"], check=False, capture_output=True, timeout=60)
    assert help_text.returncode == 0 and b"Usage: somner keys" in help_text.stdout
