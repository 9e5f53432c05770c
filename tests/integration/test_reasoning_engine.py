"""Reasoning in the real engine, in process: which jobs are split (none for a model that does not reason: the
splitter then costs nothing), the prompt of a request that turns thinking off, and the thinking budget closing
a thought in the model's own output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from somner.core import ChatRequest, Message, Reasoning, ReasoningFormat, SamplingParams
from somner.core.reasoning import ReasoningSplitter, Thought
from tests.integration.conftest import EngineHarness

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).parents[1] / "fixtures" / "reasoning" / "think.jinja"


def chat(reasoning: Reasoning | None = None, **sampling: object) -> ChatRequest:
    return ChatRequest(
        model="gemma",
        messages=[Message(role="user", content="What is two plus two?")],
        sampling=SamplingParams(temperature=0.0, **sampling),  # type: ignore[arg-type]
        reasoning=reasoning or Reasoning(),
    )


def templated(model_path: Path, template: Path) -> Iterator[EngineHarness]:
    """The default model behind a test chat template."""
    h = EngineHarness(model_path, ctx=512, parallel=1, threads=2, batch=128, template=str(template))
    yield h
    h.close()


@pytest.fixture(scope="module")
def thinker(model_path: Path) -> Iterator[EngineHarness]:
    yield from templated(model_path, TEMPLATE)


def test_a_model_that_does_not_reason_is_never_split(harness: EngineHarness) -> None:
    """The default model's template knows no think tags: `auto` means no splitter and no budget on its jobs."""
    for options in (Reasoning(), Reasoning(enabled=True, budget_tokens=4)):
        (job,) = harness.engine.chat_jobs(chat(options))
        try:
            assert job.thought is None and job.thinking is None
            assert "<think>" not in harness.engine.render_chat(chat(options))
        finally:
            job.discard()


def test_the_template_decides_auto_and_a_request_can_turn_thinking_off(thinker: EngineHarness) -> None:
    engine = thinker.engine
    assert engine.reasoning_format(chat()) is ReasoningFormat.DEEPSEEK  # (the template closes think tags)
    (job,) = engine.chat_jobs(chat(Reasoning(budget_tokens=3)))
    assert job.thought == Thought(ReasoningFormat.DEEPSEEK, opened=True) and job.thinking is not None
    job.discard()
    off = engine.render_chat(chat(Reasoning(enabled=False)))
    assert off.endswith("<think>\n\n</think>\n\n")  # (the template's own switch: an empty thought)
    (job,) = engine.chat_jobs(chat(Reasoning(enabled=False)))
    assert job.thought is None and job.thinking is None
    job.discard()
    (job,) = engine.chat_jobs(chat(Reasoning(budget_tokens=3), json_mode=True))
    assert job.thought is None  # (JSON from the first token: no thought)
    job.discard()
    (job,) = engine.chat_jobs(chat(Reasoning(format=ReasoningFormat.NONE)))
    assert job.thought is None
    job.discard()


def test_the_budget_closes_the_thought_in_the_models_output(thinker: EngineHarness) -> None:
    (job,) = thinker.engine.chat_jobs(chat(Reasoning(budget_tokens=3), max_tokens=12))
    text = "".join(c.text for c in thinker.chunks(thinker.submit(job)))
    assert "</think>" in text  # (the model never writes it itself: the engine did, after 3 tokens)
    splitter = ReasoningSplitter(opened=True)
    reasoning, content = splitter.feed(text)
    rest = splitter.finish()
    assert reasoning + rest[0] and content + rest[1]
    (free,) = thinker.engine.chat_jobs(chat(max_tokens=12))
    unbounded = "".join(c.text for c in thinker.chunks(thinker.submit(free)))
    assert "</think>" not in unbounded and unbounded.startswith(text[: len(reasoning) // 2])


HARMONY = Path(__file__).parents[1] / "fixtures" / "reasoning" / "harmony.jinja"


@pytest.fixture(scope="module")
def channels(model_path: Path) -> Iterator[EngineHarness]:
    yield from templated(model_path, HARMONY)


def test_a_harmony_template_reads_the_effort_and_thinking_off_skips_the_analysis(channels: EngineHarness) -> None:
    engine = channels.engine
    assert engine.reasoning_format(chat()) is ReasoningFormat.HARMONY  # (auto: the template knows channels)
    assert "Reasoning: low" in engine.render_chat(chat(Reasoning(enabled=True, effort="low")))
    assert "Reasoning: medium" in engine.render_chat(chat())  # (the template's own default)
    off = engine.render_chat(chat(Reasoning(enabled=False)))
    assert off.endswith("<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>final<|message|>")
    (job,) = engine.chat_jobs(chat(Reasoning(budget_tokens=2)))
    assert job.thought == Thought(ReasoningFormat.HARMONY, opened=True) and job.thinking is not None
    job.discard()
    (job,) = engine.chat_jobs(chat(Reasoning(budget_tokens=2), max_tokens=24))
    text = "".join(c.text for c in channels.chunks(channels.submit(job)))
    assert "<|end|><|start|>assistant<|channel|>final<|message|>" in text  # (the engine switched channels)
