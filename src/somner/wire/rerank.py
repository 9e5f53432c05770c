"""Reranking's JSON (`POST /v1/rerank`, `/rerank`): the Jina / Cohere shape, which llama-server also speaks.

Request: `model`, `query`, `documents` (strings, or objects with `text`), `top_n`, `return_documents`. Answer:
`results` sorted by `relevance_score` (highest first; ties keep the documents' order), each with its document's
`index` and, when asked, the `document` as `{"text": ...}`; `usage` counts the tokens the model read. Engines are
asked for every document's score (no `top_n`): sorting and cutting happen once, in `results`.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import Field

from somner.core import RerankRequest as CoreRerankRequest
from somner.core import RerankResult
from somner.errors import BadRequest
from somner.wire.body import RequestBody, WireObject

MAX_DOCUMENTS = 1000  # per request (Cohere's limit too): each one is a pass of the model


class RerankDocument(WireObject):
    text: str


class RerankRequest(RequestBody):
    model: str | None = Field(default=None, min_length=1)  # (default: the server's model, as llama-server)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    user: str | None = None
    keep_alive: float | str | None = None  # Ollama's keep_alive, honoured here too


def documents_of(wire: RerankRequest) -> list[str]:
    """The documents' texts; BadRequest when there are more than one request may hold."""
    if len(wire.documents) > MAX_DOCUMENTS:
        raise BadRequest(
            f"Too many documents: {len(wire.documents)}; one request may hold at most {MAX_DOCUMENTS}.",
            param="documents",
        )
    return [item if isinstance(item, str) else item.text for item in wire.documents]


def rerank_request(wire: RerankRequest, model: str) -> CoreRerankRequest:
    return CoreRerankRequest(model=model, query=wire.query, documents=documents_of(wire), user=wire.user)


def engine_request(request: CoreRerankRequest) -> dict[str, Any]:
    """What the gateway asks an engine: every document's score."""
    return {"model": request.model, "query": request.query, "documents": request.documents}


def results(
    model: str,
    result: RerankResult,
    documents: list[str],
    *,
    top_n: int | None = None,
    return_documents: bool = False,
) -> dict[str, Any]:
    order = sorted(range(len(result.scores)), key=lambda i: (-result.scores[i], i))
    if top_n is not None:
        order = order[:top_n]
    items: list[dict[str, Any]] = []
    for index in order:
        item: dict[str, Any] = {"index": index, "relevance_score": result.scores[index]}
        if return_documents:
            item["document"] = {"text": documents[index]}
        items.append(item)
    return {
        "id": f"rerank-{secrets.token_hex(12)}",
        "object": "list",
        "model": model,
        "results": items,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def scores_of(body: Any, count: int) -> list[float]:
    """Each document's score from an engine's answer (any order of `results`); ValueError when it is malformed
    or leaves a document out."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ValueError("no results")
    scores: list[float | None] = [None] * count
    for item in body["results"]:
        if not isinstance(item, dict):
            raise ValueError("a malformed result")
        index, score = item.get("index"), item.get("relevance_score")
        if not isinstance(index, int) or not 0 <= index < count or not isinstance(score, int | float):
            raise ValueError("a malformed result")
        scores[index] = float(score)
    if any(score is None for score in scores):
        raise ValueError("a document without a score")
    return [score for score in scores if score is not None]
