"""Scheduling under load: a long prompt is prefilled in chunks between the decode steps of running streams."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from somner.core import CompletionRequest, FinishReason, SamplingParams
from somner.engine.jobs import GenerationJob
from tests.integration.conftest import CONFIDENT, EngineHarness

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


def _start(h: EngineHarness, prompt: str, tokens: int, **sampling: object) -> tuple[GenerationJob, int]:
    """Submit a greedy request, wait for its first output; with the slot it took."""
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True, **sampling)  # type: ignore[arg-type]
    job = h.submit(h.engine.prepare_completion(CompletionRequest(model="gemma", prompt=prompt, sampling=params)))
    h.next_chunk(job)
    return job, next(slot.seq for slot in h.engine.scheduler.slots if slot.job is job)


def _busy(h: EngineHarness) -> list[int]:
    return [slot.seq for slot in h.engine.scheduler.slots if slot.job is not None]


def test_a_request_without_a_worthwhile_cached_prefix_keeps_the_busy_slots_together(roomy: EngineHarness) -> None:
    question = "Delta, a question asked twice"
    (first, one), (middle, two), (last, three) = (
        _start(roomy, p, n) for p, n in (("Alpha", 150), ("Beta", 40), ("Gamma", 150))
    )
    (other, _), (earlier, away) = _start(roomy, "Epsilon story", 40), _start(roomy, question, 40)
    for job in (middle, other, earlier):
        roomy.chunks(job)
    assert sorted([one, two, three]) == [0, 1, 2] and away > 2
    newcomer, taken = _start(roomy, question, 150)
    try:
        # Slot `away` holds this very prompt, but a few tokens are not worth spreading the busy slots apart for.
        assert taken != away
        assert _busy(roomy) == [0, 1, 2]
    finally:
        for job in (first, last, newcomer):
            roomy.chunks(job)


@pytest.fixture
def fresh(model_path: Path) -> Iterator[EngineHarness]:
    """An engine whose slots are all empty, so that requests take them in order."""
    h = EngineHarness(model_path, ctx=2048, parallel=5, threads=2, batch=256)
    yield h
    h.close()


def test_a_sequence_left_apart_by_an_ended_request_moves_next_to_the_others_and_keeps_its_text(
    fresh: EngineHarness,
) -> None:
    alone = fresh.chunks(_start(fresh, CONFIDENT, 24)[0])
    moves = fresh.engine.scheduler.stats.snapshot()["slot_moves"]
    (long, low), (short, middle), (moved, high) = (
        _start(fresh, p, n) for p, n in (("Alpha story", 200), ("Beta", 4), (CONFIDENT, 24))
    )
    assert [low, middle, high] == [0, 1, 2]
    fresh.chunks(short)
    together = fresh.chunks(moved)
    try:
        assert fresh.engine.scheduler.stats.snapshot()["slot_moves"] == moves + 1
        # (both without their first token, which _start took)
        assert "".join(c.text for c in together) == "".join(c.text for c in alone)
        assert together[-1].usage is not None and together[-1].usage.completion_tokens == 24
    finally:
        fresh.chunks(long)


def test_a_free_slot_cache_worth_keeping_survives_a_move_into_its_place(fresh: EngineHarness) -> None:
    engine = fresh.engine
    document = "Manual. " + " ".join(f"Step {n}: turn valve {n * 7 % 11} twice." for n in range(40))
    (left, low), (reader, middle), (right, high) = (
        _start(fresh, p, n) for p, n in (("Left story", 200), (document, 24), ("Right story", 200))
    )
    assert [low, middle, high] == [0, 1, 2]
    fresh.chunks(reader)
    try:
        deadline = time.monotonic() + 30
        while _busy(fresh) != [0, 1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _busy(fresh) == [0, 1], "the right stream moved into the middle slot"
        cached = engine.scheduler.stats.snapshot()["cached_tokens"]
        again, _ = _start(fresh, document, 2)
        fresh.chunks(again)
        # The document's cache moved aside instead of being overwritten: only the recomputed tail is read again.
        assert engine.scheduler.stats.snapshot()["cached_tokens"] - cached >= len(again.prompt) - 16
    finally:
        fresh.chunks(left)
        fresh.chunks(right)
