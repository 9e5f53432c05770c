"""The generated corpus of hostile GGUF files (tests/fakes/hostile_gguf.py) against Somner's own reader and the
pull (the library and `somner models pull`, from a local HTTP server): each refused with its reason, nothing left
behind. tests/integration/test_hostile_models.py offers the same files to a running gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somner.cli import app
from somner.models.gguf import GGUFError
from somner.models.pull import PullError, pull
from somner.models.vetting import template_problem, vet_model_file
from tests.fakes.hostile_gguf import Hostile, build, corpus
from tests.fakes.http_files import FileServer, serving

CORPUS = corpus()
runner = CliRunner()


@pytest.fixture(scope="module")
def hub() -> Iterator[FileServer]:
    with serving(FileServer(files={f"/files/{h.name}.gguf": h.content for h in CORPUS})) as state:
        yield state


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 12
    assert len({h.name for h in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_the_reader_refuses_each_file_saying_why(tmp_path: Path, hostile: Hostile) -> None:
    path = tmp_path / f"{hostile.name}.gguf"
    path.write_bytes(hostile.content)
    with pytest.raises(GGUFError, match=hostile.refusal):  # never another exception (RecursionError, struct.error)
        vet_model_file(path)


def test_the_builder_makes_a_valid_file_when_nothing_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "fine.gguf"
    path.write_bytes(build())
    assert vet_model_file(path).tensor_count == 1  # so each refusal above is about its one defect


@pytest.mark.parametrize(
    "template",
    [
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m.content }}\n{% endfor %}",
        "{% if add_generation_prompt %}{{ '<start_of_turn>model' }}{% endif %}{{ raise_exception('x') if false }}",
        "{{ messages | map(attribute='content') | join(' ') }}",
    ],
)
def test_ordinary_templates_pass(template: str) -> None:
    assert template_problem(template) is None


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_pull_refuses_each_file_and_leaves_nothing(hub: FileServer, tmp_path: Path, hostile: Hostile) -> None:
    models = tmp_path / "models"
    with pytest.raises(PullError, match=hostile.refusal):
        pull(f"{hub.url}/files/{hostile.name}.gguf", models, max_bytes=8 << 20)
    assert list(models.iterdir()) == []


def test_the_pull_command_refuses_a_hostile_file(hub: FileServer, tmp_path: Path) -> None:
    source = f"{hub.url}/files/dimensions-overflow.gguf"
    result = runner.invoke(app, ["models", "pull", source, "--data-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and "overflows" in result.output, result.output
    assert not list((tmp_path / "models").glob("*.gguf"))
