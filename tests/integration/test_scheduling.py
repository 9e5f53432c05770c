"""Scheduling under load: a long prompt is prefilled in chunks between the decode steps of running streams."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from somner.core import CompletionRequest, FinishReason, SamplingParams
from somner.engine.jobs import GenerationJob
from tests.integration.conftest import EngineHarness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def roomy(model_path: Path) -> Iterator[EngineHarness]:
    h = EngineHarness(model_path, ctx=2048, parallel=5, threads=2, batch=256)
    yield h
    h.close()


def test_a_long_prompt_does_not_stall_running_streams(roomy: EngineHarness) -> None:
    engine = roomy.engine
    streams = [
        roomy.submit(
            engine.prepare_completion(
                CompletionRequest(
                    model="gemma",
                    prompt=f"Story {i}: once upon a time",
                    sampling=SamplingParams(max_tokens=400, temperature=0, ignore_eos=True),
                )
            )
        )
        for i in range(4)
    ]
    for job in streams:  # all four are generating
        roomy.next_chunk(job)
    long_prompt = " ".join(f"item{i}" for i in range(460))  # ~1800 tokens
    big = engine.prepare_completion(
        CompletionRequest(model="gemma", prompt=long_prompt, sampling=SamplingParams(max_tokens=1))
    )
    assert len(big.prompt) > 1500
    submitted = time.perf_counter()
    roomy.submit(big)
    roomy.chunks(big)
    prefill_done = roomy.arrivals[big.id][-1]
    for job in streams:
        chunks = roomy.chunks(job)
        assert chunks[-1].finish_reason is FinishReason.LENGTH
    prefill = prefill_done - submitted
    worst_gap = 0.0
    for job in streams:
        times = [t for t in roomy.arrivals[job.id] if submitted <= t <= prefill_done]
        assert len(times) > 3, "the streams kept producing while the long prompt was prefilled"
        worst_gap = max([worst_gap, *(b - a for a, b in itertools.pairwise(times))])
    # Unchunked, the streams would have waited for the whole prefill. Chunked, they wait for one chunk at most.
    numbers = f"prefill took {prefill:.2f}s, longest gap in the streams {worst_gap:.2f}s"
    assert prefill > 1.5, numbers
    assert worst_gap < min(1.0, prefill / 3), numbers


def test_a_short_prompt_is_not_kept_behind_a_long_prompts_prefill(roomy: EngineHarness) -> None:
    engine = roomy.engine
    stream = roomy.submit(
        engine.prepare_completion(
            CompletionRequest(
                model="gemma",
                prompt="Story: once upon a time",
                sampling=SamplingParams(max_tokens=300, temperature=0, ignore_eos=True),
            )
        )
    )
    roomy.next_chunk(stream)  # generating: the long prompt is read in chunks beside it
    long_prompt = " ".join(f"entry{i}" for i in range(460))  # ~1800 tokens: several steps of prefill
    big = engine.prepare_completion(
        CompletionRequest(model="gemma", prompt=long_prompt, sampling=SamplingParams(max_tokens=1))
    )
    roomy.submit(big)
    seen = len(roomy.arrivals[stream.id])
    while len(roomy.arrivals[stream.id]) < seen + 2:  # (the long prompt's prefill is under way)
        time.sleep(0.01)
    short = roomy.submit(
        engine.prepare_completion(
            CompletionRequest(model="gemma", prompt="Hello there", sampling=SamplingParams(max_tokens=1))
        )
    )
    roomy.chunks(short)
    roomy.chunks(big)
    short_done, big_done = roomy.arrivals[short.id][0], roomy.arrivals[big.id][0]
    # The short request entered the running step order ahead of the long prompt's remaining chunks.
    assert short_done < big_done, "the short request waited for the long prompt's whole prefill"
    roomy.chunks(stream)


def test_a_request_without_a_worthwhile_cached_prefix_fills_the_gap_between_busy_slots(roomy: EngineHarness) -> None:
    engine = roomy.engine
    question = "Delta, a question asked twice"

    def start(prompt: str, tokens: int) -> tuple[GenerationJob, int]:
        sampling = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        request = CompletionRequest(model="gemma", prompt=prompt, sampling=sampling)
        job = roomy.submit(engine.prepare_completion(request))
        roomy.next_chunk(job)
        return job, next(slot.seq for slot in engine.scheduler.slots if slot.job is job)

    (first, one), (middle, gap), (last, three) = start("Alpha", 150), start("Beta", 40), start("Gamma", 150)
    (other, _), (earlier, away) = start("Epsilon story", 40), start(question, 40)
    for job in (middle, other, earlier):
        roomy.chunks(job)
    assert sorted([one, gap, three]) == [0, 1, 2] and away > 2
    newcomer, taken = start(question, 150)
    try:
        # Slot `away` holds this very prompt, but a few tokens are not worth spreading the busy slots apart for
        # (every step's attention spans the slots between the lowest and highest it decodes).
        assert taken == gap
    finally:
        for job in (first, last, newcomer):
            roomy.chunks(job)
