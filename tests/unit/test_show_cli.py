"""`somner show`: from the files (no server), from a scripted server, and its renderings."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from somner.cli import app, remote, show_cmd
from somner.settings import Settings
from tests.fakes.gguf_files import make_gguf

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with one small GGUF model (architecture gemma3) and its per-model settings file; no
    server answers on the configured port."""
    monkeypatch.setenv("SOMNER_PORT", "9")
    models = tmp_path / "models"
    models.mkdir()
    gguf = make_gguf(
        [64],
        architecture="gemma3",
        strings={"general.size_label": "270M", "general.license": "gemma"},
        ints={"gemma3.context_length": 32768, "gemma3.embedding_length": 640, "general.file_type": 15},
    )
    (models / "tiny.gguf").write_bytes(gguf)
    (models / "tiny.yaml").write_text(
        "aliases: [t]\nparallel: 2\ndefaults: {temperature: 0.5, max_tokens: 64, stop: ['<end>'], system: Be brief.}\n"
    )
    return tmp_path


def test_show_from_the_files(data_dir: Path) -> None:
    result = runner.invoke(app, ["show", "tiny", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("(no server is running: read from the files)\n")
    for expected in (
        "architecture        gemma3",
        "parameters          270M",
        "context length      32768",
        "embedding length    640",
        "quantization        Q4_K_M",
        "completion",
        "state               not running",
        "context             4096 tokens per generation, 2 at once",
        'stop            "<end>"',
        "num_predict     64",
        "Be brief.",
        "(built-in gemma: the model has none)",
        "--template prints it all",
        "aliases:\n    - t",
        "License\n    gemma",
    ):
        assert expected in out, expected


def test_show_for_scripts(data_dir: Path) -> None:
    shown = runner.invoke(app, ["show", "t", "--data-dir", str(data_dir), "--offline", "--json"])
    assert shown.exit_code == 0, shown.output
    facts = json.loads(shown.stdout)
    assert facts["model"] == "tiny" and facts["source"] == "files"
    assert (facts["architecture"], facts["parameter_size"], facts["quantization"]) == ("gemma3", "270M", "Q4_K_M")
    assert facts["context_length"] == 32768 and facts["serving"]["context_length"] == 4096
    assert facts["defaults"] == {"temperature": 0.5, "num_predict": 64, "stop": ["<end>"]}
    assert facts["capabilities"] == ["completion", "tools"]
    assert facts["entry"]["defaults"]["max_tokens"] == 64 and facts["entry"]["parallel"] == 2
    assert "<start_of_turn>" in facts["template"]
    template = runner.invoke(app, ["show", "tiny", "--data-dir", str(data_dir), "--offline", "--template"])
    assert template.stdout.startswith("{#- Gemma turn format.")
    parameters = runner.invoke(app, ["show", "tiny", "--data-dir", str(data_dir), "--offline", "--parameters"])
    assert parameters.stdout.split() == ["temperature", "0.5", "num_predict", "64", "stop", '"<end>"']
    both = runner.invoke(app, ["show", "tiny", "--data-dir", str(data_dir), "--json", "--template"])
    assert both.exit_code == 2


def test_an_unknown_model_is_one_line(data_dir: Path) -> None:
    result = runner.invoke(app, ["show", "nope", "--data-dir", str(data_dir), "--offline"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "nope" in result.output
    assert result.output.count("\n") == 1


def test_template_in_use() -> None:
    info = {"model_info": {"general.architecture": "gemma3"}}
    assert show_cmd.template_in_use({"template": "{{ x }}"}, None) == ("{{ x }}", "the model's own, or configured")
    text, origin = show_cmd.template_in_use({"template": "chatml"}, None)
    assert "<|im_start|>" in text and origin == "built-in chatml, configured"
    card = {"prompt_template": "gemma", "prompt_template_content": "T"}
    assert show_cmd.template_in_use({"template": ""}, card) == ("T", "built-in gemma: the model has none")
    assert show_cmd.template_in_use({"template": "", **info}, None)[1] == "built-in gemma: the model has none"
    unknown = {"template": "", "model_info": {"general.architecture": "llama"}}
    assert show_cmd.template_in_use(unknown, None)[0] == ""


def test_parameters_text() -> None:
    text = 'temperature                    0.7\nstop                           "a b"\nstop     "c"\nmirostat 2'
    assert show_cmd.parse_parameters(text) == {"temperature": 0.7, "stop": ["a b", "c"], "mirostat": 2}


SHOWN = {
    "parameters": "temperature                    0.7",
    "template": "{{ messages }}",
    "details": {"format": "gguf", "family": "gemma3", "parameter_size": "270M", "quantization_level": "Q4_K_M"},
    "model_info": {"general.architecture": "gemma3", "gemma3.context_length": 32768},
    "capabilities": ["completion", "tools"],
    "license": "gemma",
}


def test_show_from_a_server_without_an_admin_key() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            assert json.loads(request.content) == {"model": "m"}
            return httpx.Response(200, json=SHOWN)
        assert request.url.path == "/admin/models/m"
        return httpx.Response(403, json={"error": {"message": "This needs an admin key."}})

    server = remote.Server("http://s", "k", Settings(), Path("/x"), transport=httpx.MockTransport(answer))
    facts = show_cmd.from_server(server, "m")
    assert facts.serving is None and facts.entry is None
    out = show_cmd.render(facts)
    assert "architecture        gemma3" in out and "Serving" not in out and "Config entry" not in out
    assert "(the model's own, or configured)\n    {{ messages }}" in out


def test_show_from_a_server_that_refuses() -> None:
    missing = httpx.MockTransport(lambda _: httpx.Response(404, json={"error": "model 'm' not found"}))
    server = remote.Server("http://s", "k", Settings(), Path("/x"), transport=missing)
    with pytest.raises(remote.ServerError, match="model 'm' not found"):
        show_cmd.from_server(server, "m")
