"""The exllamav3 backend on a real GPU: a real EXL3 model folder (`SOMNER_TEST_EXL3_MODEL`) loaded by the real
ExLlamaV3, one generation per dialect through the gateway. Skipped, saying why, without an NVIDIA GPU, without
the exllamav3 package (`pip install 'somner[exl3]'` over a CUDA build of PyTorch), or without the model folder.

Run on a GPU machine:
    SOMNER_TEST_EXL3_MODEL=/models/Qwen2.5-0.5B-Instruct-exl3 pytest tests/integration/test_exl3_gpu.py
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from somner.settings import Settings
from tests.inprocess import NO_AUTH, ThreadedGateway


def _skip_reason() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: this machine has no NVIDIA GPU"
    if importlib.util.find_spec("exllamav3") is None or importlib.util.find_spec("torch") is None:
        return "exllamav3 or torch is not installed (pip install 'somner[exl3]' over a CUDA build of PyTorch)"
    if not os.environ.get("SOMNER_TEST_EXL3_MODEL"):
        return "SOMNER_TEST_EXL3_MODEL names no EXL3 model folder"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    folder = Path(os.environ["SOMNER_TEST_EXL3_MODEL"])
    models = [
        {"id": "gpu", "backend": "exllamav3", "path": str(folder), "ctx": 2048, "parallel": 2, "ready_timeout": 600},
        {
            "id": "gpu-q6",
            "backend": "exllamav3",
            "path": str(folder),
            "ctx": 1024,
            "parallel": 1,
            "cache_type": "Q6",
            "ready_timeout": 600,
        },
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("gpu") / "data", auth=NO_AUTH, models=models)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SOMNER_EXL3_GENERATOR", raising=False)
        with ThreadedGateway(settings) as running:
            yield running


@pytest.fixture
def client(gateway: ThreadedGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=600) as c:
        yield c


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpu", "messages": [{"role": "user", "content": text}], "max_tokens": 24, **extra}


def test_openai_chat_and_stream(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json=chat("Say hello.", temperature=0))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["prompt_tokens"] > 0 and 0 < body["usage"]["completion_tokens"] <= 24
    with client.stream("POST", "/v1/chat/completions", json=chat("Count to five.", stream=True)) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 3


def test_completions_stop_and_length(client: httpx.Client) -> None:
    reply = client.post("/v1/completions", json={"model": "gpu", "prompt": "1, 2, 3,", "max_tokens": 8, "stop": ["7"]})
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert "7" not in choice["text"]
    assert choice["finish_reason"] in ("stop", "length")


def test_json_schema(client: httpx.Client) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}}
    body = chat("Plan a trip as JSON.", response_format=response_format, max_tokens=100)
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    jsonschema.validate(orjson.loads(reply.json()["choices"][0]["message"]["content"]), SCHEMA)


def test_ollama_anthropic_kobold(client: httpx.Client) -> None:
    ollama = client.post("/api/chat", json={**chat("Say hi."), "stream": False, "options": {"num_predict": 16}})
    assert ollama.status_code == 200, ollama.text
    assert ollama.json()["done"] is True and ollama.json()["eval_count"] > 0
    anthropic = client.post("/v1/messages", json=chat("Say hi."))
    assert anthropic.status_code == 200, anthropic.text
    assert anthropic.json()["usage"]["output_tokens"] > 0
    kobold = client.post("/api/v1/generate", json={"model": "gpu", "prompt": "Once upon a time", "max_length": 8})
    assert kobold.status_code == 200, kobold.text
    assert kobold.json()["results"][0]["text"]


def test_tokenize_round_trip(client: httpx.Client) -> None:
    tokens = client.post("/tokenize", json={"model": "gpu", "content": "Hello world"}).json()["tokens"]
    assert tokens
    assert client.post("/detokenize", json={"model": "gpu", "tokens": tokens}).json()["content"] == "Hello world"


def test_a_quantized_q6_cache(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json={**chat("Say hello."), "model": "gpu-q6"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].strip()
