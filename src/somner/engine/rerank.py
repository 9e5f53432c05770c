"""How a reranker reads a (query, document) pair: the tokens its classification head scores.

A reranker GGUF may carry its own prompt (`tokenizer.chat_template.rerank`, with `{query}` and `{document}`
placeholders: Qwen3-Reranker's); otherwise the pair is the cross-encoder layout BERT-style rerankers were trained
on: BOS query EOS SEP document EOS (each special token only where the vocabulary has one).
"""

from __future__ import annotations

import re
from typing import Protocol

_PLACEHOLDER = re.compile(r"\{(query|document)\}")


class PairVocabulary(Protocol):
    """What the pair layout needs of a model's vocabulary."""

    @property
    def bos(self) -> int: ...

    @property
    def eos(self) -> int: ...

    @property
    def sep(self) -> int: ...

    @property
    def rerank_template(self) -> str | None: ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...


def pair_tokens(vocab: PairVocabulary, query: str, document: str) -> list[int]:
    """The tokens of one (query, document) pair, ready to be scored."""
    template = vocab.rerank_template
    if template:
        # The template's own text may name special tokens; the query's and the document's text never do.
        values = {"query": query, "document": document}
        tokens: list[int] = []
        for i, part in enumerate(_PLACEHOLDER.split(template)):
            if i % 2:
                tokens += vocab.tokenize(values[part], add_special=False, parse_special=False)
            elif part:
                tokens += vocab.tokenize(part, add_special=i == 0, parse_special=True)
        return tokens
    tokens = [vocab.bos] if vocab.bos >= 0 else []
    tokens += vocab.tokenize(query, add_special=False, parse_special=False)
    tokens += [t for t in (vocab.eos, vocab.sep) if t >= 0]
    tokens += vocab.tokenize(document, add_special=False, parse_special=False)
    if vocab.eos >= 0:
        tokens.append(vocab.eos)
    return tokens
