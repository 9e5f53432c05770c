"""The official openai, anthropic and ollama clients, given the model names `GET /api/tags` lists, get answers on
every route of a running `somner serve`; a client that sends its key only as `x-api-key` is let in."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.servers import ADMIN_KEY, ServeProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def listed(serve: ServeProcess) -> list[str]:
    tags = httpx.get(f"{serve.url}/api/tags", headers=serve.headers, timeout=30).json()
    names = [model["name"] for model in tags["models"]]
    assert names and all(name.endswith(":latest") for name in names)
    return names


def test_openai_client_with_ollama_names(serve: ServeProcess, listed: list[str]) -> None:
    with openai.OpenAI(base_url=f"{serve.url}/v1", api_key=ADMIN_KEY, max_retries=0) as client:
        for name in (listed[0], listed[0].upper()):
            ask_openai(client, name, listed[0])


def ask_openai(client: openai.OpenAI, name: str, listed: str) -> None:
    """Every OpenAI route answers for `name` (as `GET /api/tags` lists it, or otherwise written)."""
    chat = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0
    )
    assert chat.choices[0].message.content is not None and chat.model == name
    completion = client.completions.create(model=name, prompt="Once upon", max_tokens=3, temperature=0)
    assert completion.choices[0].text is not None
    response = client.responses.create(model=name, input="Hi", max_output_tokens=16)
    assert response.status in ("completed", "incomplete")
    embedding = client.embeddings.create(model=name, input="Hi")
    assert len(embedding.data[0].embedding) > 0
    assert client.models.retrieve(name).id == listed.removesuffix(":latest")


def test_anthropic_client_with_ollama_names(serve: ServeProcess, listed: list[str]) -> None:
    with anthropic.Anthropic(base_url=serve.url, api_key=ADMIN_KEY, max_retries=0) as client:  # x-api-key only
        reply = client.messages.create(model=listed[0], max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
        assert reply.usage.output_tokens > 0
        counted = client.messages.count_tokens(model=listed[0], messages=[{"role": "user", "content": "Hi"}])
        assert counted.input_tokens > 0


@pytest.fixture
def ollama_client(serve: ServeProcess) -> Iterator[ollama.Client]:
    client = ollama.Client(host=serve.url, headers=serve.headers)
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def test_ollama_client_with_its_own_names(ollama_client: ollama.Client, listed: list[str]) -> None:
    client = ollama_client
    reply = client.chat(model=listed[0], messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 3})
    assert reply.message.content is not None and reply.eval_count == 3
    assert client.generate(model=listed[0], prompt="Once upon", options={"num_predict": 2}).eval_count == 2
    assert client.show(listed[0]).details is not None


def test_unknown_names_stay_404_for_each_client(serve: ServeProcess, ollama_client: ollama.Client) -> None:
    with (
        openai.OpenAI(base_url=f"{serve.url}/v1", api_key=ADMIN_KEY, max_retries=0) as client,
        pytest.raises(openai.NotFoundError),
    ):
        client.chat.completions.create(model="no-such-model:latest", messages=[{"role": "user", "content": "Hi"}])
    with (
        anthropic.Anthropic(base_url=serve.url, api_key=ADMIN_KEY, max_retries=0) as sdk,
        pytest.raises(anthropic.NotFoundError),
    ):
        sdk.messages.create(model="no-such-model", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.chat(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 404
