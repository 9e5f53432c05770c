"""The reasoning splitter on its own: tags cut anywhere, thoughts never closed, answers without thinking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from somner.core import Chunk, FinishReason, ReasoningFormat, ReasoningSplitter, ToolCallDelta, Usage
from somner.core.reasoning import (
    Thought,
    closed_thought,
    opens_thinking,
    resolve_format,
    supports_reasoning,
    with_reasoning,
)
from somner.engine.thinking import ThinkingBudget

OUTPUT = "<think>\nLet me add: 2 + 2 = 4.\n</think>\n\nThe answer is 4."


def split(pieces: list[str], *, opened: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(opened=opened)
    reasoning, content = [], []
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning.append(r)
        content.append(c)
    r, c = splitter.finish()
    return "".join(reasoning) + r, "".join(content) + c


def test_whole_output_is_split() -> None:
    assert split([OUTPUT]) == ("Let me add: 2 + 2 = 4.", "The answer is 4.")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_tags_cut_across_pieces(size: int) -> None:
    pieces = [OUTPUT[i : i + size] for i in range(0, len(OUTPUT), size)]
    assert split(pieces) == ("Let me add: 2 + 2 = 4.", "The answer is 4.")


def test_every_cut_point() -> None:
    for at in range(len(OUTPUT) + 1):
        assert split([OUTPUT[:at], OUTPUT[at:]]) == ("Let me add: 2 + 2 = 4.", "The answer is 4."), at


def test_nothing_is_shown_before_it_is_known() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<th") == ("", "")  # may open a thought
    assert splitter.feed("ink>ponder") == ("ponder", "")
    assert splitter.feed("ing </th") == ("ing", "")  # may close it (the space goes if it does)
    assert splitter.feed("inking") == (" </thinking", "")  # it did not
    assert splitter.feed("</think>Yes") == ("", "Yes")
    assert splitter.answering
    assert splitter.feed(" <think>no</think>") == ("", " <think>no</think>")  # later tags are content


def test_a_thought_never_closed_is_all_reasoning() -> None:
    assert split(["<think>", "still thinking when max_tokens", " hit </thi"]) == (
        "still thinking when max_tokens hit </thi",
        "",
    )


def test_opened_by_the_prompt() -> None:
    assert split(["\nhmm", "</think>", "\n\nok"], opened=True) == ("hmm", "ok")


def test_output_without_a_thought_is_content() -> None:
    assert split(["  Hello", " <think>"]) == ("", "  Hello <think>")
    assert split(["<", "b>bold"]) == ("", "<b>bold")
    assert split(["<thi"]) == ("", "<thi")  # (ended before it could be a tag)
    assert split([]) == ("", "")


def test_empty_thought() -> None:
    assert split(["<think>\n\n</think>\n\n", "Hi"]) == ("", "Hi")


def test_formats_and_prompts() -> None:
    template = "{% if '</think>' in m %}{% endif %}"
    assert resolve_format(None, template) is ReasoningFormat.DEEPSEEK
    assert resolve_format(ReasoningFormat.AUTO, "{{ messages }}") is ReasoningFormat.NONE
    assert resolve_format(ReasoningFormat.DEEPSEEK, None) is ReasoningFormat.DEEPSEEK
    assert resolve_format(ReasoningFormat.NONE, template) is ReasoningFormat.NONE
    assert supports_reasoning(None, template) and not supports_reasoning(None, None)
    assert opens_thinking("<start>model\n<think>\n") and not opens_thinking("<start>model\n")
    assert closed_thought("model\n") == "model\n<think>\n\n</think>\n\n"
    assert closed_thought("model\n<think>\n") == "model\n<think>\n\n</think>\n\n"
    assert closed_thought("model\n<think>\n\n</think>\n\n") == "model\n<think>\n\n</think>\n\n"


async def _chunks(items: list[Chunk]) -> AsyncIterator[Chunk]:
    for item in items:
        yield item


def _run(items: list[Chunk], *, opened: bool = False) -> list[Chunk]:
    async def go() -> list[Chunk]:
        return [c async for c in with_reasoning(_chunks(items), ReasoningSplitter(opened=opened))]

    return asyncio.run(go())


def test_chunks_are_split_and_reasoning_tokens_counted() -> None:
    tokens = ["<think>", "\n", "a", "b", "</", "think", ">", "\n\n", "An", "swer"]
    items = [Chunk(text=t) for t in tokens]
    items.append(Chunk(finish_reason=FinishReason.STOP, usage=Usage(prompt_tokens=3, completion_tokens=10)))
    out = _run(items)
    assert "".join(c.reasoning for c in out) == "ab"
    assert "".join(c.text for c in out) == "Answer"
    assert out[-1].usage is not None and out[-1].usage.reasoning_tokens == 7  # "<think>" to "</think>" inclusive
    assert out[-1].finish_reason is FinishReason.STOP
    assert all(c.text or c.reasoning or c.finish_reason for c in out)  # (held pieces made no empty chunks)


def test_never_closed_ends_as_reasoning_at_length() -> None:
    items = [Chunk(text="pondering "), Chunk(text="</th")]
    items.append(Chunk(finish_reason=FinishReason.LENGTH, usage=Usage(completion_tokens=2)))
    out = _run(items, opened=True)
    assert "".join(c.reasoning for c in out) == "pondering </th"
    assert "".join(c.text for c in out) == ""
    assert out[-1].finish_reason is FinishReason.LENGTH
    assert out[-1].usage is not None and out[-1].usage.reasoning_tokens == 2


def test_tool_calls_after_thinking_go_on() -> None:
    call = ToolCallDelta(index=0, id="call_1", name="f", arguments="{}")
    items = [Chunk(text="<think>use f</think>"), Chunk(tool_calls=[call])]
    items.append(Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage()))
    out = _run(items)
    assert [c.reasoning for c in out] == ["use f", "", ""]
    assert out[1].tool_calls == [call]


def test_thinking_budget_forces_the_closing_tag_once() -> None:
    budget = ThinkingBudget(3, [7, 8, 9], Thought(ReasoningFormat.DEEPSEEK, opened=True))
    forced: list[int | None] = []
    for text in ["a", "b", "c", "\n</", "think", ">", "answer", " more"]:
        forced.append(budget.forced())
        budget.feed(text)
    assert forced == [None, None, None, 7, 8, 9, None, None]  # (after 3 tokens of thought; then never again)


def test_thinking_budget_waits_for_a_thought_and_leaves_answers_alone() -> None:
    budget = ThinkingBudget(2, [1], Thought(ReasoningFormat.DEEPSEEK, opened=False))
    for text in ["Hello", " there", " friend"]:
        budget.feed(text)
        assert budget.forced() is None  # (no thought opened: nothing to close)
    closed = ThinkingBudget(2, [1], Thought(ReasoningFormat.DEEPSEEK, opened=False))
    for text in ["<think>", "x</think>", "y", "z"]:
        closed.feed(text)
        assert closed.forced() is None  # (the model closed it within budget)
