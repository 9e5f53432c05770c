"""What a model can do, from its GGUF facts and its entry; the up-front refusal; Ollama's names for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from somner.api.ollama.catalog import ollama_capabilities
from somner.errors import BadRequest
from somner.models import capabilities
from somner.models.capabilities import (
    Capability,
    CapabilityBook,
    GGUFFacts,
    capabilities_of,
    facts_from,
    model_capabilities,
    read_facts,
    refuse_unless_able,
    require,
)
from somner.models.registry import ModelSpec
from somner.settings import EngineSettings
from somner.settings.models import ModelEntry
from tests.fakes.gguf_files import make_gguf
from tests.fakes.reranker_files import make_reranker

PLAIN = GGUFFacts(pooling=None, chat_template="{{ messages }}")
THINKING = GGUFFacts(pooling=None, chat_template="{{ '<think>' }}{{ content.split('</think>')[-1] }}")
RANKER = GGUFFacts(pooling=4, chat_template=None)
ENCODER = GGUFFacts(pooling=1, chat_template=None)


def spec(**keys: Any) -> ModelSpec:
    entry = ModelEntry.model_validate({"id": "m", "path": "m.gguf", **keys})
    return ModelSpec(entry=entry, engine=EngineSettings(), source="config")


def names(facts: GGUFFacts | None, **keys: Any) -> list[str]:
    return capabilities_of(spec(**keys), facts).listed()


def test_a_generative_model_completes_chats_embeds_and_calls_tools() -> None:
    assert names(PLAIN) == ["completion", "chat", "embeddings", "tools"]
    assert names(PLAIN, embeddings=False) == ["completion", "chat", "tools"]


def test_a_template_that_knows_think_tags_makes_a_reasoning_model() -> None:
    assert Capability.REASONING in capabilities_of(spec(), THINKING)
    assert Capability.REASONING not in capabilities_of(spec(), PLAIN)


def test_rank_pooling_makes_a_reranker_and_declared_pooling_an_embedding_model() -> None:
    assert names(RANKER) == ["rerank"]
    assert names(RANKER, embeddings=True) == ["rerank"]  # (the file decides: it has a ranking head)
    assert names(ENCODER) == ["embeddings"]
    assert names(PLAIN, embeddings=True) == ["embeddings"]
    assert names(GGUFFacts(pooling=0, chat_template=None)) == ["completion", "chat", "embeddings", "tools"]


def test_without_a_readable_file_the_configuration_speaks_and_nothing_is_refused() -> None:
    unknown = capabilities_of(spec(), None)
    assert not unknown.known
    assert unknown.listed() == ["completion", "chat", "embeddings", "tools"]
    require(spec(path=None, backend="upstream", urls=["http://127.0.0.1:9"]), "rerank")  # its engine answers


def test_facts_come_from_the_architectures_pooling_key() -> None:
    metadata = {"general.architecture": "bert", "bert.pooling_type": 4, "tokenizer.chat_template": "t"}
    assert facts_from(metadata) == GGUFFacts(pooling=4, chat_template="t")
    assert facts_from({"general.architecture": "llama", "bert.pooling_type": 4}) == GGUFFacts(None, None)
    assert facts_from({}) == GGUFFacts(None, None)


def test_model_capabilities_read_the_gguf(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(make_gguf([4]))
    assert model_capabilities(spec(path=str(path))).listed() == ["completion", "chat", "embeddings", "tools"]
    assert read_facts(tmp_path / "missing.gguf") is None
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf")
    assert read_facts(tmp_path / "broken.gguf") is None
    assert not model_capabilities(spec(path=str(tmp_path / "broken.gguf"))).known


@pytest.mark.anyio
async def test_the_book_reads_each_file_version_once_ahead_of_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path | None] = []

    def counted(path: Path | None) -> GGUFFacts | None:
        reads.append(path)
        return read_facts(path)

    monkeypatch.setattr(capabilities, "read_facts", counted)
    path = tmp_path / "m.gguf"
    path.write_bytes(make_gguf([4]))
    book = CapabilityBook()
    await book.read_ahead([spec(path=str(path))])
    await book.read_ahead([spec(path=str(path))])
    assert book.of(spec(path=str(path))).listed() == ["completion", "chat", "embeddings", "tools"]
    assert len(reads) == 1
    make_reranker(path)  # another version of the file: read again
    await book.require(spec(path=str(path)), "rerank")
    assert book.of(spec(path=str(path))).listed() == ["rerank"]
    assert len(reads) == 2
    with pytest.raises(BadRequest, match="is a reranker"):
        await book.require(spec(path=str(path)), "chat")


@pytest.mark.parametrize(
    ("route", "pooling", "message"),
    [
        ("chat", 4, "'m' is a reranker"),
        ("generate", 4, "cannot serve text completions"),
        ("embeddings", 4, "'m' is a reranker"),
        ("rerank", None, "'m' has no ranking head"),
        ("messages", 1, "'m' is an embedding model"),
    ],
)
def test_requests_a_model_cannot_serve_are_400s_that_say_why(
    tmp_path: Path, route: str, pooling: int | None, message: str
) -> None:
    path = tmp_path / "m.gguf"
    if pooling == 4:
        make_reranker(path)
    else:
        ints = {"llama.pooling_type": pooling} if pooling is not None else {}
        path.write_bytes(make_gguf([4], ints=ints))
    with pytest.raises(BadRequest) as caught:
        require(spec(path=str(path)), route)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_requests_a_model_can_serve_pass(tmp_path: Path) -> None:
    path = make_reranker(tmp_path / "m.gguf")
    require(spec(path=str(path)), "rerank")
    require(spec(path=str(path)), "tokenize")  # (no capability needed)


def test_ollama_names() -> None:
    assert ollama_capabilities(capabilities_of(spec(), PLAIN)) == ["completion", "tools"]
    assert ollama_capabilities(capabilities_of(spec(), THINKING)) == ["completion", "tools", "thinking"]
    assert ollama_capabilities(capabilities_of(spec(), ENCODER)) == ["embedding"]
    assert ollama_capabilities(capabilities_of(spec(), RANKER)) == ["rerank"]


def test_a_projector_gives_vision_and_only_worker_models_take_one(tmp_path: Path) -> None:
    assert names(PLAIN, mmproj="mmproj.gguf") == ["completion", "chat", "embeddings", "tools", "vision"]
    assert ollama_capabilities(capabilities_of(spec(mmproj="p.gguf"), PLAIN)) == ["completion", "tools", "vision"]
    path = tmp_path / "m.gguf"
    path.write_bytes(make_gguf([4]))
    with pytest.raises(BadRequest, match="reads text only"):
        refuse_unless_able(spec(path=str(path)), model_capabilities(spec(path=str(path))), Capability.VISION)
    upstream = ModelEntry.model_validate({"id": "u", "backend": "upstream", "urls": ["http://h"], "mmproj": "p.gguf"})
    assert "`mmproj` is for worker models" in (upstream.missing() or "")
