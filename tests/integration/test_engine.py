"""The engine on Gemma 3 270M: determinism, stops, limits, constraints, prefix cache, cancellation, embeddings.

The model is a small base model: these tests assert behaviour (token counts, equality, schemas), not quality.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    FinishReason,
    Message,
    SamplingParams,
    Tool,
    ToolChoice,
    ToolChoiceMode,
    Usage,
)
from somner.engine.jobs import GenerationJob
from somner.engine.tools import ToolCallParser
from somner.errors import BadRequest, ContextLengthExceeded
from tests.integration.conftest import CONFIDENT, EngineHarness, text_of

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"


def complete(h: EngineHarness, prompt: str | list[int] = PROMPT, **sampling: Any) -> tuple[str, list[Chunk]]:
    request = CompletionRequest(model="gemma", prompt=prompt, sampling=SamplingParams(**sampling))
    chunks = h.chunks(h.submit(h.engine.prepare_completion(request)))
    return text_of(chunks), chunks


def usage(chunks: list[Chunk]) -> Usage:
    last = chunks[-1].usage
    assert last is not None
    return last


MARGIN = 1.0  # (CONFIDENT's premise: see conftest)


def test_greedy_is_deterministic_sequentially_and_concurrently(harness: EngineHarness) -> None:
    first, chunks = complete(harness, max_tokens=24, temperature=0)
    second, _ = complete(harness, max_tokens=24, temperature=0)
    assert first == second
    assert usage(chunks).completion_tokens == 24

    alone = harness.chunks(harness.submit(_job(harness, CONFIDENT)))
    margins = [lp.top[0].logprob - lp.top[1].logprob for c in alone for lp in c.logprobs or []]
    assert len(margins) == 24 and min(margins) > MARGIN, margins  # (the premise of the comparison below)
    # Identical and different requests together, more than there are slots (so some wait and join later).
    prompts = [CONFIDENT, PROMPT, CONFIDENT, "Once upon a time", CONFIDENT, CONFIDENT, PROMPT, CONFIDENT]
    jobs = [harness.submit(_job(harness, p)) for p in prompts]
    for prompt, job in zip(prompts, jobs, strict=True):
        together = harness.chunks(job)
        assert usage(together).completion_tokens == 24
        if prompt == CONFIDENT:
            assert text_of(together) == text_of(alone)


def _job(h: EngineHarness, prompt: str) -> GenerationJob:
    sampling = SamplingParams(max_tokens=24, temperature=0, logprobs=2)
    return h.engine.prepare_completion(CompletionRequest(model="gemma", prompt=prompt, sampling=sampling))


def test_seeded_sampling_is_reproducible(harness: EngineHarness) -> None:
    a, _ = complete(harness, max_tokens=24, temperature=0.8, seed=1234)
    b, _ = complete(harness, max_tokens=24, temperature=0.8, seed=1234)
    assert a == b
    others = {complete(harness, max_tokens=24, temperature=1.5, seed=s)[0] for s in (1, 2, 3)}
    assert len(others) > 1  # the seed matters


def test_max_tokens_and_usage(harness: EngineHarness) -> None:
    _, chunks = complete(harness, max_tokens=5, temperature=0)
    last = chunks[-1]
    assert last.finish_reason is FinishReason.LENGTH
    assert usage(chunks).completion_tokens == 5
    assert usage(chunks).prompt_tokens == len(harness.engine.tokenize_prompt(PROMPT))
    assert last.timings is not None and last.timings.predicted_ms >= 0


def test_stop_string_across_tokens_is_honoured_and_never_leaks(harness: EngineHarness) -> None:
    text, chunks = complete(harness, max_tokens=40, temperature=0, logprobs=0)
    tokens = [lp.token for c in chunks for lp in (c.logprobs or [])]
    # A stop string that starts inside one token and ends inside a later one.
    for i in range(2, len(tokens) - 1):
        left, right = tokens[i], tokens[i + 1]
        if len(left) >= 2 and len(right) >= 2:
            stop = left[-2:] + right[:2]
            start = "".join(tokens[:i]) + left[:-2]
            if text.find(stop) == len(start):
                break
    else:
        pytest.skip(f"no suitable token pair in {tokens!r}")
    stopped, chunks = complete(harness, max_tokens=40, temperature=0, stop=["never-appears", stop])
    assert stopped == text[: text.find(stop)]
    assert stop not in stopped
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert all(stop not in c.text for c in chunks)


def test_prompt_longer_than_context_is_refused_before_decoding(harness: EngineHarness) -> None:
    steps = harness.engine.scheduler.stats.snapshot()["steps"]
    long_prompt = "word " * 2000
    with pytest.raises(ContextLengthExceeded) as info:
        harness.engine.prepare_completion(CompletionRequest(model="gemma", prompt=long_prompt))
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert "1024" in info.value.message
    assert harness.engine.scheduler.stats.snapshot()["steps"] == steps


def test_bad_inputs_are_refused(harness: EngineHarness) -> None:
    with pytest.raises(BadRequest, match="grammar"):
        harness.engine.prepare_completion(
            CompletionRequest(model="gemma", prompt="x", sampling=SamplingParams(grammar="root ::= ( unclosed"))
        )
    with pytest.raises(BadRequest, match="vocabulary"):
        harness.engine.prepare_completion(CompletionRequest(model="gemma", prompt=[1, 10**9]))
    with pytest.raises(BadRequest, match="logit_bias"):
        harness.engine.prepare_completion(
            CompletionRequest(model="gemma", prompt="x", sampling=SamplingParams(logit_bias={-5: 1.0}))
        )
    with pytest.raises(BadRequest, match="empty"):
        harness.engine.prepare_chat(ChatRequest(model="gemma", messages=[]))


def test_json_schema_output_validates(harness: EngineHarness) -> None:
    schema = {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "count": {"type": "integer"},
            "ok": {"type": "boolean"},
        },
        "required": ["color", "count", "ok"],
        "additionalProperties": False,
    }
    job = harness.engine.prepare_chat(
        ChatRequest(
            model="gemma",
            messages=[Message("user", "Describe a ball as JSON.")],
            sampling=SamplingParams(temperature=0, max_tokens=60, json_schema=schema, json_mode=True),
        )
    )
    chunks = harness.chunks(harness.submit(job))
    assert chunks[-1].finish_reason is FinishReason.STOP
    jsonschema.validate(orjson.loads(text_of(chunks)), schema)


def test_a_forced_tool_call_always_parses_and_validates(harness: EngineHarness) -> None:
    point = {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
    }
    move = Tool(
        name="move",
        description="Move the robot",
        parameters={
            "type": "object",
            "properties": {"to": {"$ref": "#/$defs/point"}, "speed": {"enum": ["slow", "fast"]}},
            "required": ["to", "speed"],
            "$defs": {"point": point},
        },
    )
    stop = Tool(name="stop", description="Stop the robot", parameters={"type": "object", "properties": {}})
    for choice, parallel in (
        (ToolChoice(ToolChoiceMode.FUNCTION, "move"), False),
        (ToolChoice(ToolChoiceMode.REQUIRED), True),
    ):
        request = ChatRequest(
            model="gemma",
            messages=[Message("user", "Move the robot to 3, 4.")],
            sampling=SamplingParams(temperature=0, max_tokens=80),
            tools=[move, stop],
            tool_choice=choice,
            parallel_tool_calls=parallel,
        )
        text = text_of(harness.chunks(harness.submit(harness.engine.prepare_chat(request))))
        parser = ToolCallParser([move, stop], parallel=parallel)
        assert parser.feed(text) == ""
        rest, calls = parser.finish()
        assert rest == "" and calls, text
        for call in calls:
            if choice.mode is ToolChoiceMode.FUNCTION:
                assert call.name == "move"
            schema = {**move.parameters} if call.name == "move" else stop.parameters
            jsonschema.validate(orjson.loads(call.arguments), schema)


def test_logit_bias_and_logprobs(harness: EngineHarness) -> None:
    _, chunks = complete(harness, max_tokens=3, temperature=0, logprobs=3)
    assert chunks[0].logprobs
    first = chunks[0].logprobs[0]
    assert first.logprob <= 0
    assert len(first.top) == 3
    assert [t.logprob for t in first.top] == sorted((t.logprob for t in first.top), reverse=True)
    assert first.top[0].token == first.token  # greedy picks the most likely token
    banned = harness.engine.model.tokenize(first.token, add_special=False, parse_special=False)[0]
    biased, _ = complete(harness, max_tokens=3, temperature=0, logit_bias={banned: -100.0})
    assert not biased.startswith(first.token)


def test_second_turn_reuses_the_cached_prefix(harness: EngineHarness) -> None:
    history = [Message("user", "Tell me about the moon.")]
    first = harness.chunks(
        harness.submit(
            harness.engine.prepare_chat(
                ChatRequest(model="gemma", messages=history, sampling=SamplingParams(temperature=0, max_tokens=16))
            )
        )
    )
    reply = text_of(first)
    turn2 = [*history, Message("assistant", reply), Message("user", "And the sun?")]
    second = harness.chunks(
        harness.submit(
            harness.engine.prepare_chat(
                ChatRequest(model="gemma", messages=turn2, sampling=SamplingParams(temperature=0, max_tokens=4))
            )
        )
    )
    again = usage(second)
    assert again.cached_tokens >= usage(first).prompt_tokens - 16
    assert 0 < again.cached_tokens < again.prompt_tokens


def test_cancel_frees_the_slot_and_spares_the_others(harness: EngineHarness) -> None:
    stats = harness.engine.scheduler.stats
    before = stats.snapshot()
    jobs = [
        harness.submit(
            harness.engine.prepare_completion(
                CompletionRequest(
                    model="gemma", prompt=f"Story number {i}:", sampling=SamplingParams(max_tokens=64, temperature=0)
                )
            )
        )
        for i in range(4)
    ]
    victim = jobs[1]
    assert not isinstance(harness.next_chunk(victim), Exception)
    harness.engine.scheduler.cancel(victim.id)
    for job in (jobs[0], jobs[2], jobs[3]):
        chunks = harness.chunks(job)
        assert usage(chunks).completion_tokens == 64
    deadline = time.monotonic() + 5
    while stats.snapshot()["cancelled"] == before["cancelled"] and time.monotonic() < deadline:
        time.sleep(0.01)
    after = stats.snapshot()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["active"] == 0
    assert after["generated_tokens"] - before["generated_tokens"] < 4 * 64


def test_embeddings(harness: EngineHarness) -> None:
    result = asyncio.run(harness.engine.embed(["The sea is blue.", "The sea is blue.", "Quantum chromodynamics"]))
    a, b, c = (np.asarray(v) for v in result.embeddings)
    assert a.shape == (harness.engine.model.n_embd,) == (640,)
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-4)
    assert np.allclose(a, b, atol=1e-5)
    assert float(a @ c) < float(a @ b)
    assert result.prompt_tokens > 0
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(harness.engine.embed(["word " * 5000]))
    with pytest.raises(BadRequest):
        asyncio.run(harness.engine.embed([[1, 2], []]))


def test_ignore_eos_runs_to_max_tokens(harness: EngineHarness) -> None:
    eos = harness.engine.model.eos
    _, ended = complete(harness, max_tokens=10, temperature=0, logit_bias={eos: 100.0})
    assert usage(ended).completion_tokens == 1
    assert ended[-1].finish_reason is FinishReason.STOP
    _, forced = complete(harness, max_tokens=10, temperature=0, logit_bias={eos: 100.0}, ignore_eos=True)
    assert usage(forced).completion_tokens == 10
    assert forced[-1].finish_reason is FinishReason.LENGTH


def test_a_busy_slots_prefix_is_shared_with_a_new_prompt(harness: EngineHarness) -> None:
    """A long shared start (a system prompt) held by a busy slot is copied, not computed again, and the answer is
    the one the prompt gets alone."""
    system = " ".join(f"Rule {i}: answer briefly and count carefully." for i in range(12))  # ~130 tokens
    counting = system + "\n" + CONFIDENT
    stats = harness.engine.scheduler.stats
    alone = text_of(harness.chunks(harness.submit(_job(harness, counting))))
    story = harness.engine.prepare_completion(
        CompletionRequest(
            model="gemma", prompt=system + "\nOnce upon a time", sampling=SamplingParams(max_tokens=96, temperature=0)
        )
    )
    busy = harness.submit(story)  # takes the slot that holds `system` (its own prefix cache)
    assert not isinstance(harness.next_chunk(busy), Exception)  # it is generating now
    before = stats.snapshot()["shared_prefixes"]
    again = harness.chunks(harness.submit(_job(harness, counting)))  # another slot: copies the busy one's cache
    assert stats.snapshot()["shared_prefixes"] == before + 1
    # All but the prompt's last run (always computed again, see scheduler._TAIL_TOKENS) came from the copy.
    assert usage(again).cached_tokens == usage(again).prompt_tokens - 16
    assert text_of(again) == alone
    harness.chunks(busy)


def test_a_burst_with_one_system_prompt_computes_it_once(harness: EngineHarness) -> None:
    """Requests arriving together with the same long start: one prefills it, the others wait for it and copy it,
    and each answer is the one its prompt gets alone."""
    system = " ".join(f"Policy {i}: keep answers short and number every list." for i in range(12))  # ~130 tokens
    prompts = [f"{system}\n{tail}" for tail in (CONFIDENT, "Once upon a time", "The capital of France is", "Hi")]
    alone = text_of(harness.chunks(harness.submit(_job(harness, prompts[0]))))
    harness.engine.scheduler.submit(_job(harness, "x " * 200))  # (push the cached system prompt out of the slot)
    stats = harness.engine.scheduler.stats
    for _ in range(3):  # every slot forgets `system`: take them all with other prompts
        jobs = [harness.submit(_job(harness, f"{i} unrelated text " * 30)) for i in range(4)]
        for job in jobs:
            harness.chunks(job)
    before = stats.snapshot()
    jobs = [harness.submit(_job(harness, p)) for p in prompts]  # all at once: one computes `system`
    results = [harness.chunks(job) for job in jobs]
    after = stats.snapshot()
    assert after["shared_prefixes"] - before["shared_prefixes"] == 3
    computed = after["prompt_tokens"] - before["prompt_tokens"]
    total = sum(usage(r).prompt_tokens for r in results)
    assert computed < total - 2 * 100  # the shared start was computed once, not four times
    assert text_of(results[0]) == alone
