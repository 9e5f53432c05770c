"""Speculative decoding on Gemma 3 270M, with the model as its own draft: the output is the plain engine's, in
fewer steps; limits, stops, grammars, cancellation and the end of the context behave as without a draft."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from somner.core import Chunk, CompletionRequest, FinishReason, SamplingParams
from somner.engine.jobs import GenerationJob
from tests.integration.conftest import CONFIDENT, EngineHarness, text_of

pytestmark = pytest.mark.integration

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]


@pytest.fixture(scope="module")
def drafted(model_path: Path) -> Iterator[EngineHarness]:
    h = EngineHarness(model_path, ctx=1024, parallel=2, threads=2, batch=256, draft_model=model_path, draft_tokens=4)
    yield h
    h.close()


def job(h: EngineHarness, prompt: str = PROMPTS[0], **sampling: Any) -> GenerationJob:
    request = CompletionRequest(model="gemma", prompt=prompt, sampling=SamplingParams(**sampling))
    return h.submit(h.engine.prepare_completion(request))


def run(h: EngineHarness, prompt: str = PROMPTS[0], **sampling: Any) -> tuple[str, Any]:
    chunks = h.chunks(job(h, prompt, **sampling))
    return text_of(chunks), chunks[-1]


def test_the_output_is_the_models_own_in_fewer_steps(drafted: EngineHarness, harness: EngineHarness) -> None:
    before = drafted.engine.scheduler.stats.snapshot()
    for prompt in PROMPTS:
        text, last = run(drafted, prompt, max_tokens=48, temperature=0)
        assert text == run(harness, prompt, max_tokens=48, temperature=0)[0]
        assert last.usage.completion_tokens == 48 or last.finish_reason is FinishReason.STOP
    seeded = {"max_tokens": 32, "temperature": 0.8, "seed": 99}
    assert run(drafted, PROMPTS[2], **seeded)[0] == run(harness, PROMPTS[2], **seeded)[0]
    after = drafted.engine.scheduler.stats.snapshot()
    generated = after["generated_tokens"] - before["generated_tokens"]
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    assert after["drafted_tokens"] > before["drafted_tokens"]
    assert accepted > generated // 3  # a model guessing for itself is mostly right
    assert after["steps"] - before["steps"] < generated - accepted // 2  # tokens came several per step


def test_limits_and_stops_hold_when_guesses_run_past_them(drafted: EngineHarness) -> None:
    for n in (1, 2, 5, 7):
        _, last = run(drafted, max_tokens=n, temperature=0, ignore_eos=True)
        assert last.usage.completion_tokens == n and last.finish_reason is FinishReason.LENGTH
    full, _ = run(drafted, max_tokens=40, temperature=0)
    words = full.split()
    stop = words[len(words) // 2]
    stopped, last = run(drafted, max_tokens=40, temperature=0, stop=[stop])
    assert stopped == full[: full.find(stop)]
    assert last.finish_reason is FinishReason.STOP and stop not in stopped


def test_a_grammar_still_constrains_every_token(drafted: EngineHarness) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    text, _ = run(drafted, "A person as JSON:", max_tokens=60, temperature=0, json_schema=schema)
    jsonschema.validate(orjson.loads(text), schema)


def test_the_end_of_the_context_ends_the_generation_cleanly(drafted: EngineHarness) -> None:
    prompt = " ".join(["word"] * 990)
    n_prompt = len(drafted.engine.tokenize_prompt(prompt))
    assert n_prompt < 1024
    _, last = run(drafted, prompt, max_tokens=200, temperature=0, ignore_eos=True)
    assert last.finish_reason is FinishReason.LENGTH
    assert n_prompt + last.usage.completion_tokens <= 1024


def test_cancelling_one_stream_spares_the_other(drafted: EngineHarness) -> None:
    keep = job(drafted, PROMPTS[1], max_tokens=64, temperature=0, ignore_eos=True)
    cut = job(drafted, PROMPTS[0], max_tokens=400, temperature=0, ignore_eos=True)
    drafted.next_chunk(cut)
    drafted.engine.scheduler.cancel(cut.id)
    # (Two sequences guessing together make a batch whose rounding differs from one alone, so the text is not
    # compared with a lone run here; what matters is that the other stream runs to its end.)
    last = drafted.chunks(keep)[-1]
    assert last.finish_reason is FinishReason.LENGTH and last.usage is not None
    assert last.usage.completion_tokens == 64
    deadline = time.monotonic() + 10
    while drafted.engine.scheduler.stats.snapshot()["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert drafted.engine.scheduler.stats.snapshot()["active"] == 0


def test_guesses_keep_coming_past_the_sliding_window(drafted: EngineHarness) -> None:
    """Rolling back rejected guesses on a sequence longer than Gemma 3's sliding window keeps the draft model's
    cache (it is not dropped and caught up again, which would leave no guesses for the steps after)."""
    window = drafted.engine.model.n_swa
    if window == 0 or window > 800:
        pytest.skip(f"the model's sliding window ({window}) does not fit this test's context")
    prompt = " ".join(f"item {i}," for i in range(window // 4 + 40))
    assert len(drafted.engine.tokenize_prompt(prompt)) > window + 16
    before = drafted.engine.scheduler.stats.snapshot()
    _, last = run(drafted, prompt, max_tokens=48, temperature=0, ignore_eos=True)
    after = drafted.engine.scheduler.stats.snapshot()
    assert last.usage.completion_tokens == 48
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    assert accepted > 48 // 3, f"only {accepted} guesses accepted past the window"


def test_banned_strings_go_back_past_the_guesses(drafted: EngineHarness, harness: EngineHarness) -> None:
    """A rewind for a banned string also cuts the draft model's cache: the output is still the plain engine's."""
    text, _ = run(harness, PROMPTS[2], max_tokens=40, temperature=0)
    ban = max(text.split()[3:], key=len)
    expected, _ = run(harness, PROMPTS[2], max_tokens=40, temperature=0, banned_strings=[ban])
    assert ban.lower() not in expected.lower()
    rewinds = drafted.engine.scheduler.stats.snapshot()["rewinds"]
    got, last = run(drafted, PROMPTS[2], max_tokens=40, temperature=0, banned_strings=[ban])
    assert got == expected
    assert last.usage.completion_tokens == 40 or last.finish_reason is FinishReason.STOP
    assert drafted.engine.scheduler.stats.snapshot()["rewinds"] > rewinds


def test_a_sequence_moved_next_to_the_others_keeps_drafting(model_path: Path) -> None:
    """A busy sequence moved into a gap (see the scheduler's "Consecutive slots") keeps its text and keeps getting
    guesses, and the draft model's cache follows the move."""
    h = EngineHarness(model_path, ctx=1024, parallel=3, threads=2, batch=256, draft_model=model_path, draft_tokens=4)
    try:
        alone = text_of(h.chunks(job(h, CONFIDENT, max_tokens=40, temperature=0)))
        jobs = [job(h, p, max_tokens=n, temperature=0, ignore_eos=True) for p, n in (("Story:", 60), ("Hi", 16))]
        for started in jobs:
            h.next_chunk(started)
        moved = job(h, CONFIDENT, max_tokens=40, temperature=0)
        first = h.next_chunk(moved)
        assert isinstance(first, Chunk), first
        assert [s.seq for s in h.engine.scheduler.slots if s.job is moved] == [2]
        stats = h.engine.scheduler.stats
        h.chunks(jobs[1])
        deadline = time.monotonic() + 30
        while stats.snapshot()["slot_moves"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        accepted = stats.snapshot()["accepted_tokens"]
        rest = h.chunks(moved)
        assert stats.snapshot()["slot_moves"] == 1
        assert first.text + text_of(rest) == alone
        assert stats.snapshot()["accepted_tokens"] > accepted
        h.chunks(jobs[0])
        # Idle now: each slot's draft cache holds a prefix of what the slot holds (what the draft model's guesses
        # are computed from; a garbled one guesses from another sequence's text).
        drafter = h.engine.scheduler.drafter
        assert drafter is not None
        for slot in h.engine.scheduler.slots:
            cached = drafter.cached[slot.seq]
            assert cached == slot.tokens[: len(cached)], slot.seq
    finally:
        h.close()
