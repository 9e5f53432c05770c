"""Reranking's JSON (sorting, cutting, engines' answers) and how a reranker reads a (query, document) pair."""

from __future__ import annotations

import json
from typing import Any

import pytest

from somner.core import RerankResult
from somner.engine.rerank import pair_tokens
from somner.errors import BadRequest
from somner.wire import rerank
from somner.wire.body import parse


def test_results_are_sorted_ties_keep_document_order_and_top_n_cuts() -> None:
    result = RerankResult(scores=[0.5, 2.0, 0.5, -1.0], prompt_tokens=40)
    body = rerank.results("m", result, ["a", "b", "c", "d"])
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == [(1, 2.0), (0, 0.5), (2, 0.5), (3, -1.0)]
    assert body["usage"] == {"prompt_tokens": 40, "total_tokens": 40}
    assert body["id"].startswith("rerank-") and body["model"] == "m"
    top = rerank.results("m", result, ["a", "b", "c", "d"], top_n=2, return_documents=True)["results"]
    assert top == [
        {"index": 1, "relevance_score": 2.0, "document": {"text": "b"}},
        {"index": 0, "relevance_score": 0.5, "document": {"text": "a"}},
    ]


def test_documents_may_be_strings_or_objects_with_text() -> None:
    wire = parse(rerank.RerankRequest, '{"query": "q", "documents": ["a", {"text": "b", "title": "t"}]}')
    core = rerank.rerank_request(wire, "m")
    assert core.documents == ["a", "b"] and core.query == "q" and core.model == "m"
    assert rerank.engine_request(core) == {"model": "m", "query": "q", "documents": ["a", "b"]}


def test_too_many_documents_is_a_400_naming_the_limit() -> None:
    wire = parse(rerank.RerankRequest, json.dumps({"query": "q", "documents": ["d"] * (rerank.MAX_DOCUMENTS + 1)}))
    with pytest.raises(BadRequest) as caught:
        rerank.documents_of(wire)
    assert str(rerank.MAX_DOCUMENTS) in caught.value.message and caught.value.param == "documents"


def test_engine_answers_are_read_in_any_order() -> None:
    body = {"results": [{"index": 1, "relevance_score": 0.25}, {"index": 0, "relevance_score": -2}]}
    assert rerank.scores_of(body, 2) == [-2.0, 0.25]


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"results": None},
        {"results": ["x"]},
        {"results": [{"index": 0}]},
        {"results": [{"index": 2, "relevance_score": 1.0}]},
        {"results": [{"index": 0, "relevance_score": "high"}]},
        {"results": [{"index": 0, "relevance_score": 1.0}]},  # (document 1 left out)
    ],
)
def test_malformed_engine_answers_are_refused(body: Any) -> None:
    with pytest.raises(ValueError, match=r"result|score"):
        rerank.scores_of(body, 2)


class Vocab:
    """Each word is a token (its length), `<x>` specials are 100 + length; BOS 1, EOS 2, SEP 3."""

    def __init__(self, *, template: str | None = None, sep: int = 3) -> None:
        self.bos, self.eos, self.sep = 1, 2, sep
        self.rerank_template = template
        self.calls: list[tuple[str, bool, bool]] = []

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        self.calls.append((text, add_special, parse_special))
        words = [100 + len(w) if parse_special and w.startswith("<") else len(w) for w in text.split()]
        return ([self.bos] if add_special else []) + words


def test_a_pair_is_bos_query_eos_sep_document_eos_by_default() -> None:
    assert pair_tokens(Vocab(), "aa bbb", "c") == [1, 2, 3, 2, 3, 1, 2]
    assert pair_tokens(Vocab(sep=-1), "aa", "c") == [1, 2, 2, 1, 2]  # (no SEP in the vocabulary)


def test_a_models_rerank_template_is_filled_without_parsing_the_users_text_as_special_tokens() -> None:
    vocab = Vocab(template="<q> {query} <d> {document} <end>")
    tokens = pair_tokens(vocab, "<sneaky> {document}", "dd")
    assert tokens == [1, 103, 8, 10, 103, 2, 105]
    assert ("<sneaky> {document}", False, False) in vocab.calls  # the query's text: never special, not re-filled
