"""Reasoning models: a request's reasoning options, and splitting a model's thinking from its answer.

Reasoning models write their thinking first, between tags (`<think>` ... `</think>`, as DeepSeek-R1, Qwen3 and
their distills do), or start inside the thinking when their chat template ends the prompt with the opening tag;
gpt-oss writes it on its own channel (harmony.py has that format's splitter, with the same interface).
`ReasoningSplitter` reads the output as it streams and hands back each piece as (reasoning, content): a tag cut
across pieces is held until it is whole, a thinking block the model never closes (max_tokens reached) is all
reasoning, and once the answer has begun every piece is content at once (the splitter then costs one comparison).
`with_reasoning` applies it to a stream of chunks, counting the reasoning tokens. Engines use both; dialects only
map their fields onto `Reasoning` and `Chunk.reasoning`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from somner.core import harmony

if TYPE_CHECKING:  # (types.py holds a request's `Reasoning`: imported from here)
    from somner.core.types import Chunk

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class ReasoningFormat(enum.StrEnum):
    """How a model's thinking is found in its output."""

    NONE = "none"  # not split: any thinking stays in the content
    AUTO = "auto"  # DEEPSEEK when the model's chat template knows the think tags, else NONE
    DEEPSEEK = "deepseek"  # `<think>` ... `</think>` at the start of the answer (or opened by the prompt)
    HARMONY = "harmony"  # gpt-oss: the analysis channel is the thinking, the final channel the answer


# Token budgets for the named efforts (OpenAI's `reasoning_effort`, Ollama's `think` levels); None: no limit.
EFFORT_BUDGETS: dict[str, int | None] = {"minimal": 256, "low": 1024, "medium": 4096, "high": None}


@dataclass(slots=True)
class Reasoning:
    """A request's reasoning options; None leaves the choice to the model's configuration."""

    format: ReasoningFormat | None = None
    enabled: bool | None = None  # False: the model answers without thinking (an empty thought in the prompt)
    budget_tokens: int | None = None  # most thinking tokens before the engine closes the thought (None: no limit)
    effort: str | None = None  # a named effort, passed to templates that read it (gpt-oss's `reasoning_effort`)


def template_format(template_source: str | None) -> ReasoningFormat:
    """The format a chat template's model writes: harmony for a template that knows channels, deepseek for one
    that writes or strips `<think>` blocks, else none."""
    source = template_source or ""
    if harmony.CHANNEL in source:
        return ReasoningFormat.HARMONY
    return ReasoningFormat.DEEPSEEK if CLOSE_TAG in source else ReasoningFormat.NONE


def resolve_format(configured: ReasoningFormat | None, template_source: str | None) -> ReasoningFormat:
    """The format in effect: `auto` (or unset) becomes the template's (`template_format`)."""
    if configured is None or configured is ReasoningFormat.AUTO:
        return template_format(template_source)
    return configured


def supports_reasoning(configured: ReasoningFormat | None, template_source: str | None) -> bool:
    """Whether a model reasons (its output is split into thinking and answer): for capability listings."""
    return resolve_format(configured, template_source) is not ReasoningFormat.NONE


def opens_thinking(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an open thinking block (the template starts the thought)."""
    return prompt.rstrip().endswith(OPEN_TAG)


def closed_thought(prompt: str, format: ReasoningFormat = ReasoningFormat.DEEPSEEK) -> str:
    """`prompt` ending with an empty, closed thought, so the model answers at once (thinking disabled)."""
    if format is ReasoningFormat.HARMONY:
        if prompt.endswith(harmony.ASSISTANT_TURN):
            return prompt + harmony.SKIP_ANALYSIS
        if harmony.opened_channel(prompt) == harmony.ANALYSIS:
            return prompt + harmony.CLOSE_ANALYSIS
        return prompt  # (the template ended the prompt otherwise: its choice)
    stripped = prompt.rstrip()
    if stripped.endswith(CLOSE_TAG):
        return prompt  # (the template already closed it: e.g. Qwen3's enable_thinking=false)
    if stripped.endswith(OPEN_TAG):
        return f"{prompt}\n{CLOSE_TAG}\n\n" if prompt.endswith("\n") else f"{prompt}\n\n{CLOSE_TAG}\n\n"
    return f"{prompt}{OPEN_TAG}\n\n{CLOSE_TAG}\n\n"


class Splitter(Protocol):
    """Splits one generation's text into (reasoning, content) as it streams."""

    @property
    def thinking(self) -> bool:
        """Inside the thought."""

    @property
    def answering(self) -> bool:
        """All further text is content (the caller may skip `feed`)."""

    def feed(self, text: str) -> tuple[str, str]: ...

    def finish(self) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class Thought:
    """How a job's output is split: the model's format, and whether the prompt left the thought open."""

    format: ReasoningFormat
    opened: bool

    @classmethod
    def of(cls, format: ReasoningFormat, prompt: str) -> Thought:
        if format is ReasoningFormat.HARMONY:
            return cls(format, harmony.opened_channel(prompt) == harmony.ANALYSIS)
        return cls(format, opens_thinking(prompt))

    def splitter(self) -> Splitter:
        if self.format is ReasoningFormat.HARMONY:
            return harmony.HarmonySplitter(opened=harmony.ANALYSIS if self.opened else None)
        return ReasoningSplitter(opened=self.opened)

    @property
    def close_text(self) -> str:
        """What the engine writes to close a thought that reached its budget."""
        return harmony.CLOSE_ANALYSIS if self.format is ReasoningFormat.HARMONY else f"\n{CLOSE_TAG}\n\n"


_START, _THINKING, _CONTENT = 0, 1, 2


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a proper beginning of `tag`."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningSplitter:
    """Splits one generation's text into reasoning and content, incrementally (see the module's note).

    `opened`: the prompt already opened the thought (the output starts inside it). Otherwise a thought counts only
    at the very start of the output (after whitespace); later tags are content.
    """

    __slots__ = ("_held", "_state", "_trim")

    def __init__(self, *, opened: bool = False) -> None:
        self._state = _THINKING if opened else _START
        self._held = ""  # text that may still be (part of) a tag
        self._trim = True  # whitespace at the start of the reasoning or of the answer is dropped

    @property
    def thinking(self) -> bool:
        """Inside the thought (or possibly about to open one at the start)."""
        return self._state == _THINKING

    @property
    def answering(self) -> bool:
        """The answer has begun: all further text is content."""
        return self._state == _CONTENT and not self._trim

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) shown now for the next piece of output."""
        if self._state == _CONTENT and not self._trim:
            return "", text
        text = self._held + text
        self._held = ""
        if self._state == _START:
            stripped = text.lstrip()
            if stripped.startswith(OPEN_TAG):
                self._state = _THINKING
                return self._think(stripped[len(OPEN_TAG) :])
            if not stripped or OPEN_TAG.startswith(stripped):
                self._held = text
                return "", ""
            self._state = _CONTENT
            self._trim = False
            return "", text
        if self._state == _THINKING:
            return self._think(text)
        return "", self._answer(text)

    def _think(self, text: str) -> tuple[str, str]:
        if self._trim:
            text = text.lstrip()
            if not text:
                return "", ""
            self._trim = False
        end = text.find(CLOSE_TAG)
        if end != -1:
            self._state = _CONTENT
            self._trim = True
            return text[:end].rstrip(), self._answer(text[end + len(CLOSE_TAG) :])
        # Held: what may begin the closing tag, and the whitespace before it (dropped if the tag follows).
        body = text[: len(text) - _partial_suffix(text, CLOSE_TAG)]
        shown = body.rstrip()
        if len(shown) < len(text):
            self._held = text[len(shown) :]
        return shown, ""

    def _answer(self, text: str) -> str:
        if self._trim:
            text = text.lstrip()
            if text:
                self._trim = False
        return text

    def finish(self) -> tuple[str, str]:
        """(reasoning, content) still held at the end: a thought never closed is reasoning, anything else content."""
        held, self._held = self._held, ""
        if self._state == _THINKING:
            return held, ""
        return "", held


async def with_reasoning(chunks: AsyncIterator[Chunk], splitter: Splitter) -> AsyncIterator[Chunk]:
    """The chunks of one generation with their text split into `reasoning` and `text`; the final chunk's usage
    counts the reasoning tokens (each chunk of output read inside the thought, its tags included, counts one).
    Chunks left with nothing to say are dropped; tool calls, logprobs and the final chunk always go on."""
    reasoning_tokens = 0
    async for chunk in chunks:
        if chunk.text:
            if splitter.answering and chunk.finish_reason is None:
                yield chunk  # (the answer has begun: nothing to split)
                continue
            was_thinking = splitter.thinking
            chunk.reasoning, chunk.text = splitter.feed(chunk.text)
            if was_thinking or splitter.thinking or chunk.reasoning:
                reasoning_tokens += 1
        if chunk.finish_reason is not None:
            reasoning, content = splitter.finish()
            chunk.reasoning += reasoning
            chunk.text += content
            if chunk.usage is not None:
                chunk.usage.reasoning_tokens = reasoning_tokens
            yield chunk
        elif chunk.text or chunk.reasoning or chunk.tool_calls or chunk.logprobs:
            yield chunk
