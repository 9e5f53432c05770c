"""Hostile model files (tests/fakes/hostile_gguf.py) offered every way a model reaches Somner: dropped into the
models folder, named in the configuration, loaded with `somner models load`, pulled over HTTP (the API and the
CLI). Each is refused with a reason naming the problem, no engine process is ever started for it (the gateway's
own reader refuses it before llama.cpp could see it), and the gateway keeps serving the real model. Model names
and pull destinations cannot leave the models folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from somner.cli import app
from somner.settings import ModelEntry, Settings
from tests.conftest import link_model
from tests.fakes.hostile_gguf import Hostile, corpus
from tests.fakes.http_files import FileServer, serving
from tests.inprocess import NO_AUTH, ThreadedGateway

pytestmark = pytest.mark.integration

CORPUS = corpus()
GOOD = "gemma-3-270m-q4_k_m"
PWNED = Path("/tmp/somner-pwned")  # what the template escapes in the corpus try to create
runner = CliRunner()


@dataclass
class Served:
    gateway: ThreadedGateway
    data_dir: Path
    outside: Path  # a hostile file outside the models folder, named in the configuration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("hostile")
    models = base / "data" / "models"
    link_model(model_path, models)
    for hostile in CORPUS:
        (models / f"{hostile.name}.gguf").write_bytes(hostile.content)
    outside = base / "elsewhere" / "configured.gguf"
    outside.parent.mkdir()
    outside.write_bytes(next(h for h in CORPUS if h.name == "template-escape-globals").content)
    for_process = base / "elsewhere" / "for-llama-server.gguf"
    for_process.write_bytes(next(h for h in CORPUS if h.name == "tensor-offset-out-of-range").content)
    ran = base / "engine-ran"  # what the process backend's command would create, had it been started
    engine = [sys.executable, "-c", f"open({str(ran)!r}, 'w')", "{model_path}", "{port}"]
    PWNED.unlink(missing_ok=True)
    settings = Settings(
        data_dir=base / "data",
        auth=NO_AUTH,  # type: ignore[arg-type]
        engine={"ctx": 1024, "parallel": 1, "threads": 2},  # type: ignore[arg-type]
        models=[
            ModelEntry.model_validate({"id": "configured-hostile", "path": outside}),
            ModelEntry.model_validate({"id": "process-hostile", "path": for_process, "command": engine}),
        ],
    )
    with ThreadedGateway(settings) as gateway:
        yield Served(gateway, base / "data", outside)
    assert not PWNED.exists()
    assert not ran.exists()


def engine_logs(data_dir: Path) -> list[str]:
    logs = data_dir / "logs"
    return sorted(p.name for p in logs.iterdir() if "worker-" in p.name) if logs.exists() else []


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_each_file_in_the_models_folder_is_refused_before_an_engine_starts(served: Served, hostile: Hostile) -> None:
    body = {"model": hostile.name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"{served.gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "model_load_failed"
    assert hostile.refusal in error["message"] and hostile.name in error["message"], error
    assert not any(hostile.name in name for name in engine_logs(served.data_dir))  # no process was started


def test_every_dialect_refuses_in_its_own_shape(served: Served) -> None:
    name = "deeply-nested-arrays"
    url = served.gateway.url
    ollama = httpx.post(f"{url}/api/chat", json={"model": name, "messages": [{"role": "user", "content": "Hi"}]})
    assert ollama.status_code == 503 and "nested arrays" in ollama.json()["error"], ollama.text
    anthropic = httpx.post(
        f"{url}/v1/messages", json={"model": name, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert anthropic.status_code == 503 and anthropic.json()["type"] == "error", anthropic.text
    assert "nested arrays" in anthropic.json()["error"]["message"]
    kobold_load = httpx.post(f"{url}/admin/models/{name}/load")
    assert kobold_load.status_code == 503 and "nested arrays" in kobold_load.text


def test_a_configured_file_outside_the_models_folder_is_refused_too(served: Served) -> None:
    body = {"model": "configured-hostile", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"{served.gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 503 and "private attribute" in reply.json()["error"]["message"], reply.text
    assert not any("configured-hostile" in name for name in engine_logs(served.data_dir))


def test_a_process_backend_never_hands_a_hostile_file_to_its_engine(served: Served) -> None:
    body = {"model": "process-hostile", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"{served.gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 503 and "out of range" in reply.json()["error"]["message"], reply.text
    # (the fixture checks at the end that the engine's command never ran)


def test_somner_models_load_reports_the_refusal(served: Served) -> None:
    result = runner.invoke(app, ["models", "load", "bad-alignment", "--url", served.gateway.url, "--quiet"])
    assert result.exit_code == 1
    assert "not a power of two" in result.output, result.output


@pytest.mark.parametrize("name", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "a/../../b"])
def test_model_names_cannot_leave_the_models_folder(served: Served, name: str) -> None:
    url = served.gateway.url
    chat = httpx.post(
        f"{url}/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "x"}]}
    )
    assert chat.status_code in (400, 404), chat.text
    assert "error" in chat.json()
    show = httpx.post(f"{url}/api/show", json={"model": name})
    assert show.status_code in (400, 404), show.text
    loaded = runner.invoke(app, ["models", "load", name, "--url", url, "--quiet"])
    assert loaded.exit_code != 0
    removed = runner.invoke(app, ["models", "rm", name, "--data-dir", str(served.data_dir)])
    assert removed.exit_code == 1 and "not a model id" in removed.output


def test_configured_ids_cannot_be_paths() -> None:
    for bad in ("../evil", "a/b", ".."):
        with pytest.raises(ValidationError, match="invalid model name"):
            Settings(models=[{"id": bad, "path": "/tmp/x.gguf"}])  # type: ignore[list-item]


def test_the_gateway_still_serves_the_real_model(served: Served) -> None:
    url = served.gateway.url
    for hostile in CORPUS[:3]:  # refused again, no worse the second time
        body = {"model": hostile.name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 503
    body = {"model": GOOD, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert httpx.get(f"{url}/health").status_code == 200


# -- pull: over the API, the CLI and the library ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hub() -> Iterator[FileServer]:
    files = {f"/files/{h.name}.gguf": h.content for h in CORPUS}
    files |= {f"/files/p-{h.name}.gguf": h.content for h in CORPUS}  # (names not yet in the gateway's folder)
    with serving(FileServer(files=files)) as state:
        yield state


def test_the_pull_api_refuses_a_hostile_file_and_keeps_serving(served: Served, hub: FileServer) -> None:
    url = served.gateway.url
    body = {"model": f"{hub.url}/files/p-template-include.gguf", "stream": False}
    reply = httpx.post(f"{url}/api/pull", json=body, timeout=60)
    assert 400 <= reply.status_code < 500 and "load another template" in reply.json()["error"], reply.text
    assert not list((served.data_dir / "models").glob("*p-template-include*"))
    escape = httpx.post(f"{url}/api/pull", json={"model": f"{hub.url}/files/..%2F..%2Fescape.gguf", "stream": False})
    assert 400 <= escape.status_code < 500, escape.text
    assert not (served.data_dir / "escape.gguf").exists() and not (served.data_dir.parent / "escape.gguf").exists()
    assert httpx.get(f"{url}/health").status_code == 200
