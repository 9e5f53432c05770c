"""gpt-oss's harmony format: channels split into thinking and answer, calls to functions, markers cut anywhere."""

from __future__ import annotations

import random

import pytest

from somner.core.harmony import CLOSE_ANALYSIS, SKIP_ANALYSIS, HarmonySplitter, opened_channel
from somner.core.reasoning import ReasoningFormat, Thought, closed_thought, resolve_format
from somner.engine.thinking import ThinkingBudget
from somner.engine.tools import parse_calls

# As llama.cpp renders gpt-oss's output: `<|end|>` is not rendered, `<|return|>` / `<|call|>` end the generation.
LLAMA_CPP = "<|channel|>analysis<|message|>User greets. Reply.<|start|>assistant<|channel|>final<|message|>Hello!"
# With every marker rendered.
RENDERED = "<|channel|>analysis<|message|>User greets. Reply.<|end|><|start|>assistant<|channel|>final<|message|>Hello!"
CALL = (
    "<|channel|>analysis<|message|>Need the time.<|end|>"
    '<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{"tz": "UTC"}'
)


def split(text: str, pieces: list[int] | None = None, *, opened: str | None = None) -> tuple[str, str]:
    """Feed `text` cut at `pieces` (every character when None) and collect (reasoning, content)."""
    splitter = HarmonySplitter(opened=opened)
    cuts = pieces if pieces is not None else list(range(1, len(text)))
    reasoning, content = [], []
    start = 0
    for end in [*cuts, len(text)]:
        r, c = splitter.feed(text[start:end])
        reasoning.append(r)
        content.append(c)
        start = end
    r, c = splitter.finish()
    return "".join(reasoning) + r, "".join(content) + c


@pytest.mark.parametrize("text", [LLAMA_CPP, RENDERED])
def test_analysis_is_thinking_and_final_is_the_answer_wherever_the_text_is_cut(text: str) -> None:
    assert split(text, []) == ("User greets. Reply.", "Hello!")
    assert split(text) == ("User greets. Reply.", "Hello!")  # (one character at a time)
    rng = random.Random(20)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        assert split(text, cuts) == ("User greets. Reply.", "Hello!"), cuts


def test_a_message_to_a_function_becomes_a_tool_call() -> None:
    reasoning, content = split(CALL)
    assert reasoning == "Need the time."
    calls = parse_calls(content, {"get_time"})
    assert calls is not None and [(c.name, c.arguments) for c in calls] == [("get_time", '{"tz": "UTC"}')]
    # The recipient may stand in the role's header, before the channel; `<|call|>` may be rendered.
    before = '<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{"tz": "UTC"}<|call|>'
    _, content = split("<|channel|>analysis<|message|>Hm." + before)
    calls = parse_calls(content, {"get_time"})
    assert calls is not None and calls[0].name == "get_time"


def test_arguments_that_are_not_json_stay_text() -> None:
    _, content = split("<|channel|>commentary to=functions.get_time<|message|>{broken")
    assert parse_calls(content, {"get_time"}) is None
    assert "{broken" in content  # (nothing lost)


def test_a_thought_never_closed_is_all_thinking() -> None:
    assert split("<|channel|>analysis<|message|>Still thinking about <|") == ("Still thinking about <|", "")


def test_output_that_is_not_harmony_is_content_as_written() -> None:
    assert split("Hello <|channel|> there") == ("", "Hello <|channel|> there")
    assert split("<") == ("", "<")  # (too short to tell)
    assert split("<|channel|>ana") == ("", "")  # (a header cut by the end of the output: markup, not text)


def test_a_commentary_preamble_and_other_channels_are_content() -> None:
    text = "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>final<|message|>Done."
    assert split(text) == ("", "Checking.Done.")


def test_a_prompt_that_opened_the_analysis() -> None:
    text = "Thinking.<|end|><|start|>assistant<|channel|>final<|message|>Answer."
    assert split(text, opened="analysis") == ("Thinking.", "Answer.")
    assert opened_channel("<|start|>assistant<|channel|>analysis<|message|>") == "analysis"
    assert opened_channel("<|start|>assistant<|channel|>final<|message|>") == "final"
    assert opened_channel("<|start|>assistant") is None


def test_thinking_turned_off_and_the_format_found_from_the_template() -> None:
    prompt = "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    off = closed_thought(prompt, ReasoningFormat.HARMONY)
    assert off == prompt + SKIP_ANALYSIS and opened_channel(off) == "final"
    assert split("Hi there.", opened="final") == ("", "Hi there.")
    opened = prompt + "<|channel|>analysis<|message|>"
    assert closed_thought(opened, ReasoningFormat.HARMONY) == opened + CLOSE_ANALYSIS
    assert closed_thought(off, ReasoningFormat.HARMONY) == off  # (already answering)
    assert resolve_format(None, "{{ '<|channel|>analysis' }}") is ReasoningFormat.HARMONY
    assert resolve_format(ReasoningFormat.AUTO, "<think></think>") is ReasoningFormat.DEEPSEEK
    assert Thought.of(ReasoningFormat.HARMONY, prompt) == Thought(ReasoningFormat.HARMONY, opened=False)
    assert Thought.of(ReasoningFormat.HARMONY, prompt + "<|channel|>analysis<|message|>").opened


def test_the_budget_switches_to_the_final_channel() -> None:
    budget = ThinkingBudget(3, [7, 8], Thought(ReasoningFormat.HARMONY, opened=False))
    for piece in ("<|channel|>", "analysis", "<|message|>"):  # (the header: not thinking yet)
        budget.feed(piece)
        assert budget.forced() is None
    for piece in ("Hmm", ", let", " me"):  # (three tokens of thought)
        assert budget.forced() is None
        budget.feed(piece)
    assert [budget.forced(), budget.forced(), budget.forced()] == [7, 8, None]
    for piece in ("<|end|>", "<|start|>", "assistant<|channel|>final<|message|>", "Yes"):
        budget.feed(piece)
        assert budget.forced() is None  # (closed once)
    assert CLOSE_ANALYSIS.endswith("<|channel|>final<|message|>")
