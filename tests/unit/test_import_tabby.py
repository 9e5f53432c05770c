"""`somner config import-tabby`: a TabbyAPI config.yml (every section and option set, tests/fixtures/tabbyapi)
becomes a configuration Somner accepts, every option accounted for; and the files it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from somner.cli import app
from somner.settings import Settings, load_settings
from somner.settings.tabby_import import SECTIONS, TabbyConfigError, convert

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tabbyapi" / "config.yml"
MODEL = "Qwen2.5-14B-Instruct-exl2-6.0bpw"

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SOMNER_"):
            monkeypatch.delenv(key)


def options_of(path: Path) -> set[str]:
    """Every non-null option the file sets, as section.key."""
    data = yaml.safe_load(path.read_text())
    return {f"{name}.{key}" for name, section in data.items() for key, value in section.items() if value is not None}


def test_the_sample_becomes_a_valid_configuration(tmp_path: Path) -> None:
    output = tmp_path / "somner.yaml"
    result = runner.invoke(app, ["config", "import-tabby", str(FIXTURE), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    settings = load_settings(output)  # the file as written, comments and all, is a Somner configuration
    assert (settings.host, settings.port, settings.stream_keepalive) == ("0.0.0.0", 5001, 20.0)
    assert settings.api_servers == ["openai", "kobold", "tabby"]
    assert settings.auth.enabled is True
    assert settings.log_requests is True  # from log_prompt
    assert str(settings.models_dir) == "/srv/tabby/models"
    assert settings.model == MODEL
    assert settings.dummy_models == ["gpt-3.5-turbo", "gpt-4o"]
    assert (settings.engine.ctx, settings.engine.parallel, settings.engine.batch) == (16384, 4, 2048)
    assert settings.sampler_preset == "safe_defaults"
    assert str(settings.loras_dir) == "/srv/tabby/loras"
    [entry] = settings.models
    assert entry.id == MODEL
    assert entry.cache_type == "q8_0"
    assert entry.tensor_split == [20.5, 23.5]
    assert entry.template == "chatml"
    assert str(entry.draft_model) == "/srv/tabby/models/Qwen2.5-0.5B-Instruct-exl2-4.0bpw.gguf"
    assert entry.draft_tokens == 5
    assert [(str(lora.path), lora.scale) for lora in entry.loras] == [("/srv/tabby/loras/qwen-support-tone.gguf", 0.8)]


def test_every_option_of_the_sample_is_accounted_for() -> None:
    result = runner.invoke(app, ["config", "import-tabby", str(FIXTURE)])
    assert result.exit_code == 0, result.output
    header = [line for line in result.stdout.splitlines() if line.startswith("#")]
    not_mapped = [
        line.removeprefix("not mapped: ") for line in result.stderr.splitlines() if line.startswith("not mapped: ")
    ]
    mapped_in_header = {line.split()[1] for line in header if line.startswith("#   ") and " -> " in line}
    skipped = {line.split(":")[0] for line in not_mapped}
    assert mapped_in_header | skipped == options_of(FIXTURE)
    assert not mapped_in_header & skipped
    assert all(line.split(": ", 1)[1] for line in not_mapped), "each line gives its reason"
    assert "model.vision" in skipped and "developer.seqlog" in skipped and "model.rope_scale" in skipped
    assert "imported" in result.stderr.splitlines()[-1]
    body = yaml.safe_load(result.stdout)
    Settings(**body)
    assert body["models"][0]["id"] == MODEL


def test_the_gguf_difference_is_said() -> None:
    conversion = convert(yaml.safe_load(FIXTURE.read_text()))
    reasons = {o.option: o.reason for o in conversion.outcomes}
    assert "GGUF" in reasons["model.model_dir"] and "EXL2" in reasons["model.model_dir"]
    assert "GGUF" in reasons["model.model_name"]
    assert "convert_lora_to_gguf" in reasons["lora.loras"]


def tabby(**sections: Any) -> dict[str, Any]:
    return {name: dict(options) for name, options in sections.items()}


@pytest.mark.parametrize(
    ("mode", "expected"), [("FP16", "f16"), ("Q8", "q8_0"), ("Q4", "q4_0"), ("8,8", "q8_0"), ("4, 4", "q4_0")]
)
def test_cache_modes(mode: str, expected: str) -> None:
    config = convert(tabby(model={"model_name": "m", "cache_mode": mode})).config
    assert config["models"] == [{"id": "m", "cache_type": expected}]


@pytest.mark.parametrize("mode", ["Q6", "6,5"])
def test_cache_modes_llama_cpp_lacks_are_reported(mode: str) -> None:
    conversion = convert(tabby(model={"model_name": "m", "cache_mode": mode}))
    assert "models" not in conversion.config
    [outcome] = [o for o in conversion.not_mapped if o.option == "model.cache_mode"]
    assert mode in outcome.reason


def test_defaults_of_tabbyapi_apply_when_absent() -> None:
    config = convert({}).config
    assert config == {"port": 5000, "api_servers": ["openai", "tabby"]}
    Settings(**config)
    assert convert(None).config == config
    assert convert(tabby(network={"api_servers": []})).config["api_servers"] == ["openai", "tabby"]
    assert convert(tabby(network={"api_servers": ["kobold", "oai"]})).config["api_servers"] == [
        "kobold",
        "openai",
        "tabby",
    ]


def test_context_batch_and_cache() -> None:
    engine = convert(tabby(model={"max_seq_len": 8192, "max_batch_size": 300, "cache_size": 65536})).config["engine"]
    assert engine == {"ctx": 8192, "parallel": 256}  # capped; cache_size then has nothing to set
    assert convert(tabby(model={"cache_size": 8192})).config["engine"] == {"ctx": 8192}
    small = convert(tabby(model={"max_seq_len": 100, "chunk_size": 16}))
    assert "engine" not in small.config
    assert {o.option for o in small.not_mapped} == {"model.max_seq_len", "model.chunk_size"}
    assert "engine" not in convert(tabby(model={"max_seq_len": -1})).config


def test_per_model_options_need_a_model_name() -> None:
    conversion = convert(
        tabby(
            model={"cache_mode": "Q4", "rope_scale": 2.0, "prompt_template": "llama3", "gpu_split": [1, 1]},
            draft_model={"draft_model_name": "tiny"},
            lora={"loras": [{"name": "style"}]},
        )
    )
    assert "models" not in conversion.config and "model" not in conversion.config
    reasons = {o.option: o.reason for o in conversion.not_mapped}
    for option in ("model.cache_mode", "model.rope_scale", "model.prompt_template", "model.gpu_split"):
        assert "model_name" in reasons[option]
    assert "model_name" in reasons["draft_model.draft_model_name"] and "model_name" in reasons["lora.loras"]
    Settings(**conversion.config)


def test_rope_scale_is_inverted_and_dummies_need_use_dummy_models() -> None:
    config = convert(tabby(model={"model_name": "m", "rope_scale": 4.0, "dummy_model_names": ["gpt-4"]})).config
    assert config["models"] == [{"id": "m", "rope_scale": 0.25}]  # compress_pos_emb 4 = llama.cpp's 1/4
    assert "dummy_models" not in config


def test_draft_modes_and_embeddings() -> None:
    ngram = convert(tabby(model={"model_name": "m"}, draft_model={"draft_mode": "ngram", "draft_model_name": "d"}))
    assert "models" not in ngram.config
    assert {o.option for o in ngram.not_mapped} >= {"draft_model.draft_mode", "draft_model.draft_model_name"}
    config = convert(tabby(embeddings={"embedding_model_name": "bge-small", "embedding_model_dir": "/srv/e"})).config
    assert config["models"] == [{"id": "bge-small", "embeddings": True, "path": "/srv/e/bge-small.gguf"}]
    Settings(**config)


def test_legacy_layouts_are_migrated_as_tabbyapi_does() -> None:
    conversion = convert(
        {"model": {"model_name": "m", "draft": {"draft_model_name": "d"}}, "logging": {"prompt": True}}
    )
    assert conversion.config["models"] == [{"id": "m", "draft_model": "models/d.gguf"}]
    assert conversion.config["log_requests"] is True
    relative = {o.option: o.reason for o in convert(tabby(model={"model_dir": "models"})).outcomes}
    assert "absolute" in relative["model.model_dir"]


def test_disable_auth_and_unknown_keys_warn() -> None:
    conversion = convert(tabby(network={"disable_auth": True, "colour": "blue"}, model={"fasttensors": True}))
    assert conversion.config["auth"] == {"enabled": False}
    assert len(conversion.warnings) == 2
    assert all("not a TabbyAPI option" in w for w in conversion.warnings)
    assert not [o for o in conversion.outcomes if "colour" in o.option or "fasttensors" in o.option]


def test_sections_list_matches_the_fixture() -> None:
    assert set(yaml.safe_load(FIXTURE.read_text())) == set(SECTIONS) - {"config"}


# -- bad inputs ------------------------------------------------------------------------------------------------


def run(tmp_path: Path, text: str | None, *extra: str) -> Any:
    path = tmp_path / "config.yml"
    if text is not None:
        path.write_text(text)
    return runner.invoke(app, ["config", "import-tabby", str(path), *extra])


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read"),
        ("network: [\n", "not valid YAML"),
        ("- network\n- model\n", "mapping"),
        ("just words\n", "mapping"),
        ("server:\n  port: 5000\nnetwork:\n  port: 5000\n", "unknown top-level section(s): server"),
        ("network: 5000\n", "section 'network' must be a mapping"),
        ("network:\n  port: high\n", "network.port: expected an integer, got 'high'"),
        ("network:\n  port: true\n", "network.port: expected an integer"),
        ("network:\n  api_servers: OAI\n", "network.api_servers: expected a list of strings"),
        ("network:\n  api_servers: [OAI, Horde]\n", "unknown server(s) Horde"),
        ("model:\n  max_seq_len: 4k\n", "model.max_seq_len: expected an integer"),
        ("model:\n  gpu_split: [a, b]\n", "model.gpu_split: expected a list of numbers"),
        ("model:\n  use_dummy_models: yes please\n", "model.use_dummy_models: expected true or false"),
        ("lora:\n  loras: [style]\n", "lora.loras[0]: expected {name, scaling}"),
        ("lora:\n  loras: [{name: s, scaling: -1}]\n", "lora.loras[0].scaling"),
    ],
)
def test_bad_files_exit_1_saying_why(tmp_path: Path, text: str | None, said: str) -> None:
    result = run(tmp_path, text)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert said in result.stderr, result.stderr
    assert result.stderr.startswith("error: ")


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(TabbyConfigError) as caught:
        convert({"network": {"port": "x", "host": 5}, "model": {"cache_mode": 8}})
    assert len(caught.value.problems) == 3


def test_a_valid_tabbyapi_value_somner_cannot_take_is_reported_not_fatal(tmp_path: Path) -> None:
    result = run(tmp_path, "network:\n  port: 70000\nmodel:\n  model_name: has spaces in it\n  cache_mode: Q4\n")
    assert result.exit_code == 0, result.output
    assert "not mapped: network.port: 70000 is not a TCP port" in result.stderr
    assert "not mapped: model.cache_mode" in result.stderr and "not a valid Somner model id" in result.stderr
    assert yaml.safe_load(result.stdout)["model"] == "has spaces in it"


def test_output_file_that_cannot_be_written(tmp_path: Path) -> None:
    result = run(tmp_path, "network:\n  port: 5000\n", "--output", str(tmp_path / "missing" / "out.yaml"))
    assert result.exit_code == 1
    assert "cannot write" in result.stderr
