"""Reranking through the gateway and a real worker, on a tiny rank-pooling reranker built in the test; model
capabilities on every dialect's listing, and requests a model cannot serve refused up front."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.core import ChatRequest, Message
from somner.engine.config import EngineConfig
from somner.engine.runtime import Engine
from somner.errors import BadRequest
from somner.settings import Settings
from tests.conftest import link_model
from tests.fakes.reranker_files import make_reranker
from tests.inprocess import NO_AUTH, ThreadedGateway

pytestmark = pytest.mark.integration

GEMMA = "gemma-3-270m-q4_k_m"
RERANKER = "tiny-reranker"
QUERY = "what is the capital of france"
DOCUMENTS = [
    "paris is the capital of france",
    "the cat and the dog",
    "berlin is a city in germany",
    "blue sky over the sea",
    "python code",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("rerank-data")
    link_model(model_path, data / "models")
    make_reranker(data / "models" / f"{RERANKER}.gguf")
    settings = Settings(data_dir=data, engine={"parallel": 1, "threads": 2}, auth=NO_AUTH)  # type: ignore[arg-type]
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as http:
        yield http


def rerank(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, **body})


def test_rerank_sorts_every_document_by_a_deterministic_score(client: httpx.Client) -> None:
    first = rerank(client)
    assert first.status_code == 200, first.text
    body = first.json()
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)  # the model tells the documents apart
    assert all("document" not in r for r in results)
    assert body["model"] == RERANKER
    assert body["usage"]["prompt_tokens"] > len(DOCUMENTS) * 3
    again = client.post("/rerank", json={"model": RERANKER, "query": QUERY, "documents": DOCUMENTS}).json()
    assert again["results"] == results  # the same pairs, the same scores (and `/rerank` is the same call)
    other = rerank(client, query="blue sea").json()["results"]
    assert {r["index"]: r["relevance_score"] for r in other} != {r["index"]: r["relevance_score"] for r in results}


def test_top_n_and_return_documents_cut_and_describe_the_ranking(client: httpx.Client) -> None:
    full = rerank(client).json()["results"]
    objects = [{"text": text} for text in DOCUMENTS]
    top = rerank(client, documents=objects, top_n=2, return_documents=True).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in full[:2]]
    assert [r["relevance_score"] for r in top] == [r["relevance_score"] for r in full[:2]]
    assert [r["document"] for r in top] == [{"text": DOCUMENTS[r["index"]]} for r in full[:2]]
    assert len(rerank(client, top_n=50).json()["results"]) == len(DOCUMENTS)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"documents": []}, "documents"),
        ({"top_n": 0}, "top_n"),
        ({"top_n": -3}, "top_n"),
        ({"documents": ["x"] * 1001}, "documents"),
        ({"documents": "paris"}, "documents"),
        ({"documents": [1, 2]}, "documents.0"),
        ({"documents": [{"title": "no text"}]}, "documents.0"),
        ({"query": 5}, "query"),
        ({"query": ""}, "query"),
        ({"return_documents": "yes"}, "return_documents"),
    ],
)
def test_bad_rerank_requests_are_openai_400s(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = rerank(client, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_a_query_too_long_for_the_reranker_is_a_400(client: httpx.Client) -> None:
    response = rerank(client, query=" ".join(["cat"] * 200))
    assert response.status_code == 400
    assert "at most" in response.json()["error"]["message"]
    assert rerank(client).status_code == 200  # and the engine still serves


def test_rerank_to_a_model_without_a_ranking_head_is_refused_before_loading(client: httpx.Client) -> None:
    response = client.post("/v1/rerank", json={"model": GEMMA, "query": "q", "documents": ["d"]})
    assert response.status_code == 400
    assert "no ranking head" in response.json()["error"]["message"]
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed[GEMMA]["status"] != "loaded"  # (refused from its capabilities: nothing was loaded for it)


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "openai"),
        ("/v1/completions", {"prompt": "hi"}, "openai"),
        ("/v1/embeddings", {"input": "hi"}, "openai"),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}, "ollama"),
        ("/api/generate", {"prompt": "hi"}, "ollama"),
        ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    ],
)
def test_a_reranker_refuses_other_work_in_each_dialects_shape(
    client: httpx.Client, path: str, body: dict[str, Any], shape: str
) -> None:
    response = client.post(path, json={"model": RERANKER, **body})
    assert response.status_code == 400, response.text
    error = response.json()
    message = {
        "openai": lambda: error["error"]["message"],
        "ollama": lambda: error["error"],
        "anthropic": lambda: error["error"]["message"],
    }[shape]()
    assert "is a reranker" in message


def test_capabilities_are_listed_on_every_dialect(client: httpx.Client) -> None:
    openai_cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert openai_cards[RERANKER]["capabilities"] == ["rerank"]
    assert openai_cards[GEMMA]["capabilities"] == ["completion", "chat", "embeddings", "tools"]
    tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    assert tags[f"{RERANKER}:latest"]["capabilities"] == ["rerank"]
    assert tags[f"{GEMMA}:latest"]["capabilities"] == ["completion", "tools"]
    shown = client.post("/api/show", json={"model": RERANKER}).json()
    assert shown["capabilities"] == ["rerank"]
    tabby = {m["id"]: m for m in client.get("/v1/model/list").json()["data"]}
    assert tabby[RERANKER]["capabilities"] == ["rerank"]
    assert "chat" in tabby[GEMMA]["capabilities"]
    card = client.get("/v1/model", params={"model": RERANKER}).json()
    assert card["capabilities"] == ["rerank"]


@pytest.mark.parametrize("model", [RERANKER, GEMMA])
def test_every_model_tokenizes_in_the_ollama_tabby_and_llama_server_shapes(client: httpx.Client, model: str) -> None:
    text = "the cat and the dog"
    ollama = client.post("/api/tokenize", json={"model": model, "text": text})
    assert ollama.status_code == 200, ollama.text
    tokens = ollama.json()["tokens"]
    assert ollama.json()["model"] == model and tokens and all(isinstance(t, int) for t in tokens)
    server = client.post("/tokenize", json={"model": model, "content": text}).json()["tokens"]
    assert server == tokens
    back = client.post("/api/detokenize", json={"model": model, "tokens": tokens}).json()
    assert back == {
        "model": model,
        "text": client.post("/detokenize", json={"model": model, "tokens": tokens}).json()["content"],
    }
    assert back["text"].strip() == text
    tabby = client.post("/v1/token/encode", json={"model": model, "text": text, "add_bos_token": False}).json()
    assert tabby == {"tokens": tokens, "length": len(tokens)}
    assert client.post("/v1/token/decode", json={"model": model, "tokens": tokens}).json()["text"].strip() == text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/tokenize", {"model": RERANKER}),
        ("/api/tokenize", {"model": RERANKER, "text": 5}),
        ("/api/detokenize", {"model": RERANKER, "tokens": [-1]}),
        ("/api/detokenize", {"model": RERANKER, "tokens": "1 2"}),
        ("/api/detokenize", {"model": RERANKER, "tokens": [10**6]}),
    ],
)
def test_bad_ollama_tokenizer_requests_are_ollama_400s(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)


def test_an_unknown_model_is_an_ollama_404(client: httpx.Client) -> None:
    response = client.post("/api/tokenize", json={"model": "no-such-model", "text": "x"})
    assert response.status_code == 404
    assert "no-such-model" in response.json()["error"]


def test_the_engine_batches_concurrent_reranks_and_keeps_their_scores(tmp_path: Path) -> None:
    """Requests that arrive together share decodes; each still gets its own documents' scores (to within the
    rounding of a different batch shape)."""
    engine = Engine(
        EngineConfig(model_path=make_reranker(tmp_path / "r.gguf"), model_id="r", threads=2), lambda _: None
    )
    engine.start()
    try:
        assert engine.info()["mode"] == "rerank" and engine.template is None
        queries = [QUERY, "blue sea", "python code"]

        async def run() -> tuple[list[list[float]], list[list[float]]]:
            alone = [(await engine.rerank(q, DOCUMENTS)).scores for q in queries]
            together = await asyncio.gather(*(engine.rerank(q, DOCUMENTS) for q in queries))
            return alone, [r.scores for r in together]

        alone, together = asyncio.run(run())
        for solo, shared in zip(alone, together, strict=True):
            assert shared == pytest.approx(solo, abs=0.05)
        assert alone[0] != alone[1]
    finally:
        engine.close()


def test_an_embedding_engine_loads_and_embeds(model_path: Path) -> None:
    engine = Engine(EngineConfig(model_path=model_path, model_id="e", mode="embed", threads=2), lambda _: None)
    engine.start()
    try:
        result = asyncio.run(engine.embed(["hello there"]))
        assert len(result.embeddings[0]) == engine.model.n_embd
        with pytest.raises(BadRequest, match="embedding model"):
            engine.chat_jobs(ChatRequest(model="e", messages=[Message(role="user", content="hi")]))
        with pytest.raises(BadRequest, match="no ranking head"):
            asyncio.run(engine.rerank("q", ["d"]))
    finally:
        engine.close()
