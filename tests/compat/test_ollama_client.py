"""The official `ollama` client against a running `somner serve` on the real default model.

This module starts its own server (it pulls, copies and deletes models, and unloads them): the data directory
holds the default model, and `HF_ENDPOINT` points at a local file server that plays Hugging Face for the pull.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests.conftest import link_model
from tests.fakes.gguf_files import make_gguf
from tests.fakes.http_files import FileServer, serving
from tests.servers import ServeProcess, start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
TINY = make_gguf([4096])


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    state = FileServer(files={"/org/tiny/tiny-Q8_0.gguf": TINY}, listings={"org/tiny": ["tiny-Q8_0.gguf"]})
    with serving(state):
        yield state


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path, files: FileServer) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("ollama-serve")
    link_model(model_path, data_dir / "models", f"{MODEL}.gguf")
    process = start_serve(data_dir, env={"HF_ENDPOINT": files.url})
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> Iterator[ollama.Client]:
    sdk = ollama.Client(host=server.url, headers=server.headers)
    try:
        yield sdk
    finally:
        sdk.close()  # type: ignore[no-untyped-call]


def loaded(client: ollama.Client) -> list[str]:
    return [m.model or "" for m in client.ps().models]


def test_list_and_show(client: ollama.Client) -> None:
    listed = {m.model: m for m in client.list().models}
    assert f"{MODEL}:latest" in listed
    entry = listed[f"{MODEL}:latest"]
    assert entry.size is not None and entry.size > 100_000_000
    assert entry.details is not None and entry.details.family == "gemma3"
    assert entry.details.quantization_level == "Q4_K_M"
    shown = client.show(MODEL)
    assert isinstance(shown.template, str)  # (the packaged model's GGUF carries no chat template)
    assert shown.details == entry.details
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "gemma3"


def test_chat_plain_and_streamed(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Count to five."}]
    options = {"num_predict": 8, "temperature": 0, "seed": 1}
    whole = client.chat(model=MODEL, messages=messages, options=options)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count is not None and 0 < whole.eval_count <= 8
    assert whole.prompt_eval_count is not None and whole.prompt_eval_count > 0
    assert whole.total_duration is not None and whole.eval_duration is not None
    assert 0 < whole.eval_duration < whole.total_duration
    parts = list(client.chat(model=MODEL, messages=messages, options=options, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content  # temperature 0, same seed
    assert MODEL + ":latest" in loaded(client)


def test_generate(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt="The sky is", options={"num_predict": 8, "temperature": 0})
    assert reply.done and reply.response and reply.eval_count is not None and reply.eval_count <= 8
    raw = client.generate(model=MODEL, prompt="1, 2, 3,", raw=True, options={"num_predict": 4})
    assert raw.done and raw.eval_count is not None and raw.eval_count <= 4


def test_embed(client: ollama.Client) -> None:
    result = client.embed(model=MODEL, input=["hello", "world"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) > 100
    assert abs(sum(v * v for v in result.embeddings[0]) - 1.0) < 1e-3
    assert result.prompt_eval_count is not None and result.prompt_eval_count >= 2


def test_errors_keep_the_ollama_shape(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        client.generate(model=MODEL, prompt="hi", options={"temperature": "hot"})
    assert bad.value.status_code == 400 and "temperature" in bad.value.error


def test_pull_copy_delete(client: ollama.Client, server: ServeProcess) -> None:
    progress = list(client.pull("hf.co/org/tiny:Q8_0", stream=True))
    assert progress[-1].status == "success"
    assert any(p.completed == p.total == len(TINY) for p in progress if p.total)
    assert (server.data_dir / "models" / "tiny-Q8_0.gguf").read_bytes() == TINY
    assert "tiny-Q8_0:latest" in [m.model for m in client.list().models]

    assert client.copy("tiny-Q8_0", "tiny-copy").status == "success"
    assert "tiny-copy:latest" in [m.model for m in client.list().models]
    assert client.show("tiny-copy:latest").details == client.show("tiny-Q8_0").details

    assert client.delete("tiny-copy").status == "success"
    assert client.delete("tiny-Q8_0").status == "success"
    names = [m.model for m in client.list().models]
    assert "tiny-copy:latest" not in names and "tiny-Q8_0:latest" not in names
    assert not (server.data_dir / "models" / "tiny-Q8_0.gguf").exists()
    with pytest.raises(ollama.ResponseError) as library:
        client.pull("llama3")
    assert library.value.status_code == 400


def test_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
    assert f"{MODEL}:latest" in loaded(client)
    parts = list(
        client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            options={"num_predict": 2},
            stream=True,
            keep_alive=0,
        )
    )
    assert parts[-1].done
    deadline = time.monotonic() + 10
    while loaded(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert loaded(client) == []
    client.generate(model=MODEL, keep_alive="5m")  # an empty prompt loads the model
    assert loaded(client) == [f"{MODEL}:latest"]
    unloaded = client.generate(model=MODEL, keep_alive=0)
    assert unloaded.done_reason == "unload" and loaded(client) == []
