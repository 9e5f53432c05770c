"""What a model can do (completion, chat, embeddings, tools, vision, reasoning, rerank), from its GGUF metadata and
its configuration; and the check that refuses, before anything is loaded, a request that needs what it lacks.

The decision is a pure function of the metadata and the model entry (`capabilities_of`); reading the GGUF header is
the only effect, kept per file version by the server's `CapabilityBook` (a header read walks the whole vocabulary:
too slow for every request, and never on the event loop).
A model whose file Somner cannot read (remote engines, EXL3 folders) lists what its configuration says and is never
refused here: its engine answers for itself.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from somner.core.reasoning import ReasoningFormat, supports_reasoning
from somner.errors import BadRequest
from somner.models.gguf import GGUFError, read_gguf
from somner.models.registry import ModelSpec

_POOLING_NONE = 0
_POOLING_RANK = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK: a classification head scores (query, document) pairs


class Capability(enum.StrEnum):
    COMPLETION = "completion"
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    TOOLS = "tools"
    VISION = "vision"
    REASONING = "reasoning"
    RERANK = "rerank"


@dataclass(frozen=True, slots=True)
class Capabilities:
    names: frozenset[Capability]
    known: bool  # from the model's own file (requests are checked against it), or from its configuration only

    def __contains__(self, capability: object) -> bool:
        return capability in self.names

    def listed(self) -> list[str]:
        """The names in a fixed order, for model listings."""
        return [c.value for c in Capability if c in self.names]


@dataclass(frozen=True, slots=True)
class GGUFFacts:
    """The few header values the decision needs."""

    pooling: int | None  # `{arch}.pooling_type`, when the file declares one
    chat_template: str | None


def capabilities_of(spec: ModelSpec, facts: GGUFFacts | None) -> Capabilities:
    """What `spec` can do, given its GGUF's facts (None: no readable GGUF)."""
    embeddings = spec.entry.embeddings
    if facts is not None and facts.pooling == _POOLING_RANK:
        return Capabilities(frozenset({Capability.RERANK}), known=True)
    # A declared pooling (mean, CLS, last) makes an embedding model: BERT-style encoders, Qwen3-Embedding.
    pooled = facts is not None and facts.pooling is not None and facts.pooling != _POOLING_NONE
    if embeddings is True or (pooled and embeddings is None):
        return Capabilities(frozenset({Capability.EMBEDDINGS}), known=facts is not None)
    # Somner offers tools to every chat model (through the chat template, or its generic tool prompt).
    names = {Capability.COMPLETION, Capability.CHAT, Capability.TOOLS}
    if embeddings is None or embeddings:
        names.add(Capability.EMBEDDINGS)
    if spec.entry.mmproj is not None:
        names.add(Capability.VISION)
    template = _configured_template(spec) or (facts.chat_template if facts is not None else None)
    if supports_reasoning(_reasoning_format(spec), template):
        names.add(Capability.REASONING)
    return Capabilities(frozenset(names), known=facts is not None)


def _reasoning_format(spec: ModelSpec) -> ReasoningFormat | None:
    # (`reasoning_format` is a model setting once reasoning support lands; absent, the template decides.)
    value = getattr(spec.entry, "reasoning_format", None)
    try:
        return ReasoningFormat(value) if value is not None else None
    except ValueError:
        return None


def _configured_template(spec: ModelSpec) -> str | None:
    configured = spec.entry.template
    if configured is None:
        return None
    path = Path(configured).expanduser()
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except OSError:
        return None


def model_capabilities(spec: ModelSpec) -> Capabilities:
    """`capabilities_of` with the facts of the model's GGUF file, read now (one-off uses: `CapabilityBook` keeps
    them for a server)."""
    return capabilities_of(spec, read_facts(spec.path))


def read_facts(path: Path | None) -> GGUFFacts | None:
    """The facts of a GGUF file; None when there is no readable one."""
    if path is None or path.suffix.lower() != ".gguf":
        return None
    try:
        metadata = read_gguf(path).metadata
    except GGUFError:
        return None
    return facts_from(metadata)


FileVersion = tuple[str, int, int]  # path, size, modification time (ns): a changed file is another version


class CapabilityBook:
    """The server's record of what each model file can do, read once per file version. Reading a header walks the
    whole vocabulary (a fifth of a second for Gemma 3's), so it never happens on the event loop: `read_ahead` reads
    what is missing in a thread, then `of` and `require` only look up."""

    def __init__(self, limit: int = 256) -> None:
        self._facts: dict[FileVersion, GGUFFacts | None] = {}
        self._limit = limit

    @staticmethod
    def _version(path: Path | None) -> FileVersion | None:
        if path is None or path.suffix.lower() != ".gguf":
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        return str(path), stat.st_size, stat.st_mtime_ns

    def _read(self, version: FileVersion) -> GGUFFacts | None:
        if version not in self._facts:
            if len(self._facts) >= self._limit:
                self._facts.clear()  # (old versions of files; the current ones are read again as needed)
            self._facts[version] = read_facts(Path(version[0]))
        return self._facts[version]

    def of(self, spec: ModelSpec) -> Capabilities:
        version = self._version(spec.path)
        return capabilities_of(spec, self._read(version) if version is not None else None)

    async def read_ahead(self, specs: Iterable[ModelSpec]) -> None:
        """Read, in a thread, the files of `specs` not read yet."""
        versions = [v for v in map(self._version, (s.path for s in specs)) if v is not None and v not in self._facts]
        if versions:
            await asyncio.to_thread(lambda: [self._read(v) for v in versions])

    async def require(self, spec: ModelSpec, route: str) -> None:
        """Refuse (400) a request on `route` that the model cannot serve, before it is admitted or loaded."""
        need = ROUTE_NEEDS.get(route)
        if need is not None:
            await self.require_capability(spec, need)

    async def require_capability(self, spec: ModelSpec, need: Capability) -> None:
        await self.read_ahead([spec])
        refuse_unless_able(spec, self.of(spec), need)


def facts_from(metadata: Mapping[str, Any]) -> GGUFFacts:
    architecture = metadata.get("general.architecture")
    pooling = metadata.get(f"{architecture}.pooling_type") if isinstance(architecture, str) else None
    template = metadata.get("tokenizer.chat_template")
    return GGUFFacts(
        pooling=pooling if isinstance(pooling, int) and not isinstance(pooling, bool) else None,
        chat_template=template if isinstance(template, str) else None,
    )


# What each admitted route needs (the `route` names of `api.serving.begin`).
ROUTE_NEEDS: dict[str, Capability] = {
    "chat": Capability.CHAT,
    "messages": Capability.CHAT,
    "responses": Capability.CHAT,
    "completions": Capability.COMPLETION,
    "generate": Capability.COMPLETION,
    "embeddings": Capability.EMBEDDINGS,
    "rerank": Capability.RERANK,
}


def require(spec: ModelSpec, route: str) -> None:
    """`CapabilityBook.require` for one-off uses (the file is read now)."""
    need = ROUTE_NEEDS.get(route)
    if need is not None:
        refuse_unless_able(spec, model_capabilities(spec), need)


def refuse_unless_able(spec: ModelSpec, capabilities: Capabilities, need: Capability) -> None:
    if capabilities.known and need not in capabilities:
        raise BadRequest(_refusal(spec.id, capabilities, need), param="model", code="unsupported")


def _refusal(model: str, capabilities: Capabilities, need: Capability) -> str:
    asked = {
        Capability.CHAT: "chat requests",
        Capability.COMPLETION: "text completions",
        Capability.EMBEDDINGS: "embeddings",
    }.get(need, need.value)
    if Capability.RERANK in capabilities:
        return f"'{model}' is a reranker: it scores documents against a query (/v1/rerank) and cannot serve {asked}."
    if need is Capability.VISION:
        return f"'{model}' reads text only: it has no projector (`mmproj`) for images."
    if need is Capability.REASONING:
        return (
            f"'{model}' does not support thinking: it is not a reasoning model (its chat template writes no thought; "
            "a model that does reason says so with `reasoning_format` in its configuration)."
        )
    if need is Capability.RERANK:
        return (
            f"'{model}' has no ranking head: it cannot rerank. Rerank requests need a reranker model (a GGUF with "
            "rank pooling and a classification head, such as bge-reranker)."
        )
    if Capability.CHAT not in capabilities:
        return f"'{model}' is an embedding model: it cannot serve {asked}."
    return f"'{model}' serves no embeddings (its configuration sets `embeddings: false`)."
