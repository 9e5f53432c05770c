"""TabbyAPI's own routes over real HTTP against a running `somner serve` on the real default model: a load with its
options and real progress events, the model card from the engine, token calls on the real tokenizer, a template
switch to a Jinja file, and the headers TabbyAPI clients send. (This module starts its own server: it reloads the
model with other settings.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import link_model
from tests.servers import ADMIN_KEY, ServeProcess, start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
PLAIN = (
    "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("tabby-serve")
    link_model(model_path, data_dir / "models", f"{MODEL}.gguf")
    (data_dir / "templates").mkdir()
    (data_dir / "templates" / "plain.jinja").write_text(PLAIN)
    process = start_serve(data_dir)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def admin(server: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-admin-key": ADMIN_KEY}, timeout=120) as client:
        yield client


def events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_load_with_options_streams_real_progress(admin: httpx.Client) -> None:
    body = {"model_name": MODEL, "max_seq_len": 1024, "cache_mode": "Q8", "max_batch_size": 2}
    with admin.stream("POST", "/v1/model/load", json=body) as response:
        assert response.status_code == 200
        progress = events("\n".join(response.iter_lines()))
    modules = progress[-1]["modules"]
    assert modules == 18  # Gemma 3 270M's layers
    assert progress[-1] == {"model_type": "model", "module": modules, "modules": modules, "status": "finished"}
    reported = [e["module"] for e in progress if e["status"] == "processing"]
    assert reported == sorted(reported) and len(reported) > 2 and reported[-1] == modules
    card = admin.get("/v1/model").json()
    assert card["id"] == MODEL
    parameters = card["parameters"]
    assert (parameters["max_seq_len"], parameters["cache_mode"], parameters["max_batch_size"]) == (1024, "Q8", 2)
    assert parameters["cache_size"] == 2048
    assert "<start_of_turn>" in parameters["prompt_template_content"]  # the GGUF's own template, from the engine
    chat = admin.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    )
    assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] == 3


def test_tokens_on_the_real_tokenizer(admin: httpx.Client) -> None:
    with_bos = admin.post("/v1/token/encode", json={"text": "Hello world"}).json()
    without = admin.post("/v1/token/encode", json={"text": "Hello world", "add_bos_token": False}).json()
    assert with_bos["length"] == without["length"] + 1 and with_bos["tokens"][1:] == without["tokens"]
    assert admin.post("/v1/token/decode", json={"tokens": without["tokens"]}).json() == {"text": "Hello world"}
    special = admin.post("/v1/token/decode", json={"tokens": with_bos["tokens"]}).json()["text"]
    plain = admin.post("/v1/token/decode", json={"tokens": with_bos["tokens"], "decode_special_tokens": False}).json()
    assert special == "<bos>Hello world" and plain == {"text": "Hello world"}
    literal = admin.post("/v1/token/encode", json={"text": "<start_of_turn>", "add_bos_token": False}).json()
    split = admin.post(
        "/v1/token/encode", json={"text": "<start_of_turn>", "add_bos_token": False, "encode_special_tokens": False}
    ).json()
    assert literal["length"] == 1 and split["length"] > 1
    chat = admin.post("/v1/token/encode", json={"text": [{"role": "user", "content": "Hello"}]}).json()
    rendered = admin.post("/v1/token/decode", json={"tokens": chat["tokens"]}).json()["text"]
    assert rendered.startswith("<bos><start_of_turn>user") and rendered.count("<bos>") == 1
    assert not rendered.rstrip().endswith("model")  # no opening of the assistant's turn
    bad = admin.post("/v1/token/decode", json={"tokens": [10**9]})
    assert bad.status_code == 400 and set(bad.json()) == {"detail"}


def test_template_switch_to_a_file_and_back(admin: httpx.Client) -> None:
    assert "plain" in admin.get("/v1/template/list").json()["data"]
    assert admin.post("/v1/model/load", json={"model_name": MODEL}).status_code == 200  # (as TabbyAPI needs)
    assert admin.post("/v1/template/switch", json={"prompt_template_name": "plain"}).json() is None
    parameters = admin.get("/v1/model").json()["parameters"]
    assert parameters["prompt_template"] == "plain" and parameters["prompt_template_content"] == PLAIN
    chat = admin.post("/v1/token/encode", json={"text": [{"role": "user", "content": "Hello"}], "add_bos_token": False})
    assert admin.post("/v1/token/decode", json={"tokens": chat.json()["tokens"]}).json() == {"text": "[user] Hello\n"}
    assert admin.post("/v1/template/unload").json() is None
    assert "<start_of_turn>" in admin.get("/v1/model").json()["parameters"]["prompt_template_content"]


def test_tabby_client_headers(server: ServeProcess, admin: httpx.Client) -> None:
    key = admin.post("/admin/keys", json={"user": "tabby-user"}).json()["key"]
    user = {"x-api-key": key}
    assert httpx.get(f"{server.url}/v1/auth/permission", headers=user).json() == {"permission": "api"}
    assert admin.get("/v1/auth/permission").json() == {"permission": "admin"}
    assert httpx.post(f"{server.url}/v1/model/unload", headers=user).status_code == 401
    completion = httpx.post(
        f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2}, headers=user, timeout=60
    )
    assert completion.status_code == 200
    assert httpx.get(f"{server.url}/v1/health").json() == {"status": "healthy", "issues": []}
    assert admin.post("/v1/model/unload").json() is None
    assert admin.get("/v1/model").status_code == 503
