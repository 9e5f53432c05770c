"""Each sampler's effect on what the real engine (Gemma 3 270M) draws, in process.

Truncation samplers are checked exactly: a recording sampler keeps the logits each token was drawn from, and every
drawn token must be one the sampler's rule keeps (computed here, independently, from those logits), while the same
request without the sampler draws tokens the rule would have cut. Penalties are checked exactly at temperature 0
(the drawn token is the argmax of the penalized logits). The rest compare statistics with and without the sampler.
Jobs run together (four slots) to keep the file fast; the model is small and a base model: no test looks at wit.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from somner.core import ChatRequest, Chunk, CompletionRequest, FinishReason, Message, SamplingParams
from somner.engine.banned import fold
from somner.engine.jobs import GenerationJob
from somner.engine.llama import LlamaContext
from somner.engine.sampling import Sampler
from somner.errors import BadRequest
from tests.integration.conftest import EngineHarness, text_of

pytestmark = pytest.mark.integration

Logits = npt.NDArray[np.float64]

OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
"""llama-server's default truncation (top-k 40, top-p 0.95, min-p 0.05) turned off, to see one sampler alone."""

STORY = "Once upon a time, in a small village by the sea, there lived"
REPEAT = "one two three four five, one two three four five, one two three four five, one two"


@pytest.fixture(scope="module")
def h(model_path: Path) -> Iterator[EngineHarness]:
    harness = EngineHarness(model_path, ctx=1024, parallel=4, threads=2, batch=256)
    yield harness
    harness.close()


class RecordingSampler(Sampler):
    """A sampler that keeps the logits of every position it sampled (the model's own, before any sampler)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Logits] = []

    def sample(self, ctx: LlamaContext, index: int, *, generated: int = 0, banned: Collection[int] = ()) -> int:
        self.seen.append(ctx.logits(index).astype(np.float64))
        return super().sample(ctx, index, generated=generated, banned=banned)


@dataclass
class Run:
    prompt: list[int]
    tokens: list[int]  # every drawn token, in order (from the logprobs)
    logits: list[Logits]  # what each was drawn from
    chunks: list[Chunk]

    @property
    def text(self) -> str:
        return text_of(self.chunks)

    def steps(self) -> Iterator[tuple[Logits, int]]:
        assert len(self.tokens) == len(self.logits)
        return zip(self.logits, self.tokens, strict=True)


def recorded(h: EngineHarness, prompt: str, **sampling: Any) -> tuple[GenerationJob, RecordingSampler]:
    params = SamplingParams(logprobs=0, **sampling)
    tokens = h.engine.tokenize_prompt(prompt)
    sampler = RecordingSampler(h.engine.model, params, prompt_tokens=tokens, context_size=h.engine.n_ctx)
    assert params.max_tokens is not None
    job = GenerationJob(
        prompt=tokens, sampler=sampler, max_tokens=params.max_tokens, logprobs=0, banned=params.banned_strings
    )
    return job, sampler


def run_all(h: EngineHarness, specs: list[tuple[str, dict[str, Any]]]) -> list[Run]:
    """Run (prompt, sampling) jobs side by side, recording each."""
    jobs = [recorded(h, prompt, **sampling) for prompt, sampling in specs]
    for job, _ in jobs:
        h.submit(job)
    runs = []
    for job, sampler in jobs:
        chunks = h.chunks(job)
        tokens = [lp.id for c in chunks for lp in c.logprobs or [] if lp.id is not None]
        runs.append(Run(job.prompt, tokens, sampler.seen, chunks))
    return runs


def first_tokens(h: EngineHarness, prompt: str, seeds: range, **sampling: Any) -> list[int]:
    """The first token drawn with each seed (jobs side by side)."""
    jobs = [
        h.submit(
            h.engine.prepare_completion(
                CompletionRequest(
                    model="gemma", prompt=prompt, sampling=SamplingParams(max_tokens=1, logprobs=0, seed=s, **sampling)
                )
            )
        )
        for s in seeds
    ]
    out = []
    for job in jobs:
        (item,) = [lp for c in h.chunks(job) for lp in c.logprobs or []]
        assert item.id is not None
        out.append(item.id)
    return out


def probs(logits: Logits) -> Logits:
    shifted = np.exp(logits - logits.max())
    result: Logits = shifted / shifted.sum()
    return result


# -- the rules, computed here from the logits a token was drawn from ---------------------------------------------

Rule = Callable[[Logits, int], bool]  # (logits, drawn token) -> the sampler keeps it


def min_p_rule(p: float, temperature: float = 1.0) -> Rule:
    return lambda logits, token: (logits[token] - logits.max()) / temperature >= math.log(p) - 1e-4


def top_a_rule(a: float) -> Rule:
    def keeps(logits: Logits, token: int) -> bool:
        q = probs(logits)
        return bool(q[token] >= a * q.max() ** 2 * (1 - 1e-4)) or token == int(logits.argmax())

    return keeps


def sigma_rule(n: float) -> Rule:
    return lambda logits, token: bool(logits[token] >= logits.max() - n * logits.std() - 0.05)


def typical_rule(p: float) -> Rule:
    def keeps(logits: Logits, token: int) -> bool:
        q = probs(logits)
        entropy = -float(np.sum(q[q > 0] * np.log(q[q > 0])))
        with np.errstate(divide="ignore"):
            scores = np.abs(-np.log(q) - entropy)
        order = np.argsort(scores, kind="stable")
        cut = int(np.argmax(np.cumsum(q[order]) > p + 1e-3)) + 2  # (one more: float rounding at the edge)
        return token in set(order[:cut].tolist())

    return keeps


def tfs_rule(z: float) -> Rule:
    def keeps(logits: Logits, token: int) -> bool:
        top = np.sort(logits)[::-1][:3000]
        q = np.exp(top - top[0])
        q /= q.sum()
        second = np.abs(np.diff(q, n=2))
        weights = second / second.sum()
        over = np.flatnonzero(np.cumsum(weights) > z)
        size = max(1, int(over[0])) if over.size else len(top)
        return bool(logits[token] >= top[min(size, len(top) - 1)] - 1e-4)  # (at most one token of slack)

    return keeps


def xtc_rule(threshold: float) -> Rule:
    """XTC at probability 1: of the tokens at least `threshold` likely, all but the least likely are removed."""

    def keeps(logits: Logits, token: int) -> bool:
        q = probs(logits)
        above = np.flatnonzero(q >= threshold)
        if len(above) < 2 or abs(q[token] - threshold) < 1e-4:
            return True
        removed = set(above.tolist()) - {int(above[np.argmin(q[above])])}
        return token not in removed

    return keeps


def violations(run: Run, rule: Rule) -> int:
    return sum(not rule(logits, token) for logits, token in run.steps())


HOT = {**OFF, "temperature": 1.5, "max_tokens": 32}

TRUNCATION: dict[str, tuple[dict[str, Any], Rule]] = {
    "min_p": ({"min_p": 0.2}, min_p_rule(0.2)),
    "top_a": ({"top_a": 0.3}, top_a_rule(0.3)),
    "top_n_sigma": ({"top_n_sigma": 1.0}, sigma_rule(1.0)),
    "typical_p": ({"typical_p": 0.3}, typical_rule(0.3)),
    "tfs": ({"tfs": 0.5}, tfs_rule(0.5)),
    "xtc": ({"xtc_probability": 1.0, "xtc_threshold": 0.1}, xtc_rule(0.1)),
}


@pytest.fixture(scope="module")
def truncation_runs(h: EngineHarness) -> dict[str, tuple[Run, Run]]:
    """Per sampler: a run with it and one without, the same seed and prompt (all run side by side)."""
    specs = []
    for number, (extra, _) in enumerate(TRUNCATION.values()):
        specs.append((STORY, {**HOT, "seed": 100 + number, **extra}))
        specs.append((STORY, {**HOT, "seed": 100 + number}))
    runs = run_all(h, specs)
    return {name: (runs[2 * i], runs[2 * i + 1]) for i, name in enumerate(TRUNCATION)}


@pytest.mark.parametrize("name", list(TRUNCATION))
def test_truncation_samplers_only_draw_what_they_keep(name: str, truncation_runs: dict[str, tuple[Run, Run]]) -> None:
    with_it, without = truncation_runs[name]
    _, rule = TRUNCATION[name]
    assert len(with_it.tokens) >= 8
    assert violations(with_it, rule) == 0, with_it.text
    assert violations(without, rule) > 0, "the rule cuts nothing here: the test would prove nothing"


def test_xtc_makes_the_most_likely_token_rarer(truncation_runs: dict[str, tuple[Run, Run]]) -> None:
    with_it, without = truncation_runs["xtc"]

    def top_share(run: Run) -> float:
        return sum(token == int(logits.argmax()) for logits, token in run.steps()) / len(run.tokens)

    assert top_share(with_it) < top_share(without)


def test_temperature_last_decides_what_min_p_sees(h: EngineHarness) -> None:
    """min-p 0.1 at temperature 3: last (llama.cpp's order) it cuts on the model's distribution; first, on the
    flattened one, which keeps far more."""
    base = {**OFF, "temperature": 3.0, "min_p": 0.1, "max_tokens": 32}
    last, first, explicit = run_all(
        h,
        [(STORY, {**base, "seed": 5}), (STORY, {**base, "seed": 5, "temperature_last": False}),
         (STORY, {**base, "seed": 5, "temperature_last": True})],
    )  # fmt: skip
    assert violations(last, min_p_rule(0.1)) == 0
    assert violations(first, min_p_rule(0.1)) > 0
    assert violations(first, min_p_rule(0.1, temperature=3.0)) == 0
    assert explicit.tokens == last.tokens


# -- penalties, exactly --------------------------------------------------------------------------------------


def penalized(logits: Logits, history: list[int], repeat: float, frequency: float, presence: float) -> Logits:
    """llama.cpp's penalties: for a token seen c > 0 times, logit / repeat (or * repeat when <= 0), minus
    c * frequency + presence."""
    out = logits.astype(np.float32).copy()
    for token, count in Counter(history).items():
        value = out[token]
        value = value * repeat if value <= 0 else value / repeat
        out[token] = value - count * frequency - presence
    return out.astype(np.float64)


PENALTIES: dict[str, tuple[str, dict[str, Any]]] = {
    "repeat_penalty": (REPEAT, {"repeat_penalty": 1.5, "repeat_last_n": -1}),
    "repeat_penalty in the last 6 tokens": (REPEAT, {"repeat_penalty": 1.5, "repeat_last_n": 6}),
    "frequency_penalty": (REPEAT, {"frequency_penalty": 1.0}),
    "presence_penalty": (STORY, {"presence_penalty": 2.0, "repeat_last_n": 16}),
}


@pytest.fixture(scope="module")
def penalty_runs(h: EngineHarness) -> dict[str, Run]:
    names = list(PENALTIES)
    runs = run_all(h, [(PENALTIES[n][0], {"temperature": 0, "max_tokens": 24, **PENALTIES[n][1]}) for n in names])
    return dict(zip(names, runs, strict=True))


@pytest.mark.parametrize("name", list(PENALTIES))
def test_penalties_change_the_choice_exactly_as_defined(name: str, penalty_runs: dict[str, Run]) -> None:
    _, config = PENALTIES[name]
    run = penalty_runs[name]
    window = config.get("repeat_last_n", 64)
    changed = 0
    for i, (logits, token) in enumerate(run.steps()):
        history = [*run.prompt, *run.tokens[:i]]
        history = history if window < 0 else history[-window:]
        expected = penalized(
            logits,
            history,
            config.get("repeat_penalty", 1.0),
            config.get("frequency_penalty", 0.0),
            config.get("presence_penalty", 0.0),
        )
        assert token == int(expected.argmax()), (i, run.text)
        changed += token != int(logits.argmax())
    assert changed > 0, "the penalty never changed a choice: the test would prove nothing"


def test_penalties_with_an_empty_window_change_nothing(h: EngineHarness) -> None:
    plain, windowless = run_all(
        h, [(REPEAT, {"temperature": 0, "max_tokens": 16}), (REPEAT, {"temperature": 0, "max_tokens": 16,
            "repeat_penalty": 1.5, "repeat_last_n": 0})],
    )  # fmt: skip
    assert windowless.tokens == plain.tokens


def test_dry_breaks_the_repetition_the_prompt_invites(h: EngineHarness) -> None:
    greedy = {"temperature": 0, "max_tokens": 24}
    plain, dry, tolerant = run_all(
        h,
        [(REPEAT, greedy), (REPEAT, {**greedy, "dry_multiplier": 1.0}),
         (REPEAT, {**greedy, "dry_multiplier": 1.0, "dry_allowed_length": 1000})],
    )  # fmt: skip
    assert plain.text.count("three four") >= 3
    assert dry.text.count("three four") < plain.text.count("three four")
    assert tolerant.tokens == plain.tokens  # repeats shorter than the allowed length are not penalized


# -- mirostat, dynamic temperature ----------------------------------------------------------------------------


def surprise(run: Run) -> float:
    """Mean surprise (bits) of the drawn tokens under the model's distribution."""
    return float(np.mean([-math.log2(probs(logits)[token]) for logits, token in run.steps()]))


def test_mirostat_keeps_the_surprise_near_its_target(h: EngineHarness) -> None:
    specs = [
        (STORY, {"temperature": 1.0, "max_tokens": 32, "mirostat": version, "mirostat_tau": tau, "seed": seed})
        for version in (1, 2)
        for tau in (1.0, 8.0)
        for seed in (1, 2)
    ]
    runs = run_all(h, specs)
    for version in range(2):
        low = np.mean([surprise(r) for r in runs[4 * version : 4 * version + 2]])
        high = np.mean([surprise(r) for r in runs[4 * version + 2 : 4 * version + 4]])
        assert low < 2.5, f"mirostat {version + 1} at tau 1: {low:.2f} bits"
        assert high > low + 1.0, f"mirostat {version + 1}: {low:.2f} bits at tau 1, {high:.2f} at tau 8"


def most_common_share(tokens: list[int]) -> float:
    return Counter(tokens).most_common(1)[0][1] / len(tokens)


def test_dynamic_temperature_follows_the_entropy(h: EngineHarness) -> None:
    """llama.cpp's dynamic temperature is min + (max - min) * (H / H_max) ** exponent, H_max over the whole
    vocabulary: a model that is fairly sure of its next token gets less than the middle temperature (exponent 1),
    and a small exponent pushes it towards the top of the range."""
    seeds = range(40)
    plain = first_tokens(h, STORY, seeds, temperature=1.0, **OFF)
    narrow = first_tokens(h, STORY, seeds, temperature=1.0, dynatemp_range=1.0, **OFF)
    wide = first_tokens(h, STORY, seeds, temperature=1.0, dynatemp_range=1.0, dynatemp_exponent=0.05, **OFF)
    assert most_common_share(narrow) > most_common_share(plain) >= most_common_share(wide)
    assert len(set(wide)) > len(set(narrow))


# -- token lists, min_tokens, seeds --------------------------------------------------------------------------


def test_banned_tokens_never_appear(h: EngineHarness) -> None:
    (greedy,) = run_all(h, [(STORY, {"temperature": 0, "max_tokens": 16})])
    banned = sorted(set(greedy.tokens[:4]))
    greedy_banned, sampled_banned = run_all(
        h,
        [(STORY, {"temperature": 0, "max_tokens": 16, "banned_tokens": banned}),
         (STORY, {**HOT, "seed": 3, "banned_tokens": banned})],
    )  # fmt: skip
    for run in (greedy_banned, sampled_banned):
        assert not set(run.tokens) & set(banned)
        assert len(run.tokens) >= 8


def test_allowed_tokens_are_the_only_ones_drawn(h: EngineHarness) -> None:
    model = h.engine.model
    allowed = sorted(set(model.tokenize(" the sea and the sky and the little fish", add_special=False,
                                        parse_special=False)))  # fmt: skip
    (run,) = run_all(h, [(STORY, {**HOT, "seed": 1, "allowed_tokens": allowed})])
    assert set(run.tokens) <= set(allowed)
    assert len(run.tokens) == 32


def test_min_tokens_holds_the_end_back(h: EngineHarness) -> None:
    eos = h.engine.model.eos
    eager = {"temperature": 0, "max_tokens": 20, "logit_bias": {eos: 100.0}}
    ended, held = run_all(h, [(STORY, eager), (STORY, {**eager, "min_tokens": 5})])
    assert ended.tokens == [eos]
    assert len(held.tokens) == 6 and held.tokens[-1] == eos and eos not in held.tokens[:5]
    assert held.chunks[-1].finish_reason is FinishReason.STOP


EVERYTHING = {
    "temperature": 1.2,
    "top_k": 60,
    "top_p": 0.97,
    "min_p": 0.02,
    "top_a": 0.05,
    "tfs": 0.98,
    "typical_p": 0.99,
    "top_n_sigma": 3.0,
    "xtc_probability": 0.5,
    "xtc_threshold": 0.2,
    "dynatemp_range": 0.3,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.2,
    "frequency_penalty": 0.2,
    "dry_multiplier": 0.8,
    "max_tokens": 24,
}


def test_seeds_make_every_sampler_reproducible(h: EngineHarness) -> None:
    a, b, c = run_all(
        h,
        [(STORY, {**EVERYTHING, "seed": 42}), (STORY, {**EVERYTHING, "seed": 42}), (STORY, {**EVERYTHING, "seed": 43})],
    )
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


# -- banned strings ------------------------------------------------------------------------------------------


def greedy_text(h: EngineHarness, prompt: str, **sampling: Any) -> tuple[str, list[Chunk]]:
    request = CompletionRequest(
        model="gemma", prompt=prompt, sampling=SamplingParams(temperature=0, max_tokens=32, logprobs=0, **sampling)
    )
    chunks = h.chunks(h.submit(h.engine.prepare_completion(request)))
    return text_of(chunks), chunks


def spanning(chunks: list[Chunk]) -> str:
    """A piece of the text that starts inside one token and ends inside the next (both at least 3 characters)."""
    tokens = [lp.token for c in chunks for lp in c.logprobs or []]
    for left, right in itertools.pairwise(tokens[2:]):
        if len(left.strip()) >= 3 and len(right.strip()) >= 3 and not left.endswith(" "):
            return left[-2:] + right[:3]
    pytest.skip(f"no suitable token pair in {tokens!r}")


def test_a_banned_string_never_appears_and_generation_goes_on(h: EngineHarness) -> None:
    text, chunks = greedy_text(h, STORY)
    ban = spanning(chunks)
    assert ban in text
    rewinds = h.engine.scheduler.stats.snapshot()["rewinds"]
    for variant in (ban, ban.upper()):  # case-insensitive
        banned_text, banned_chunks = greedy_text(h, STORY, banned_strings=[variant])
        assert fold(ban) not in fold(banned_text)
        assert all(fold(ban) not in fold(c.text) for c in banned_chunks)
        usage = banned_chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 32  # it went on to the limit
        assert banned_text.startswith(text[: text.find(ban) - 16])  # what came before the ban is unchanged
    assert h.engine.scheduler.stats.snapshot()["rewinds"] > rewinds


def test_a_banned_first_word_is_replaced(h: EngineHarness) -> None:
    text, _ = greedy_text(h, STORY)
    first = text.split()[0]
    other, _ = greedy_text(h, STORY, banned_strings=[first])
    assert first.lower() not in other.lower()
    assert other.strip()


def test_banned_strings_in_chat_with_logprobs_keep_tokens_and_text_together(h: EngineHarness) -> None:
    chat = ChatRequest(
        model="gemma",
        messages=[Message("user", "Write one sentence about the sea.")],
        sampling=SamplingParams(temperature=0, max_tokens=24, logprobs=2),
    )
    plain = text_of(h.chunks(h.submit(h.engine.prepare_chat(chat))))
    word = max(plain.split(), key=len).strip(".,!?")
    chat.sampling.banned_strings = [word]
    chunks = h.chunks(h.submit(h.engine.prepare_chat(chat)))
    text = text_of(chunks)
    assert word.lower() not in text.lower()
    pieces = "".join(lp.token for c in chunks for lp in c.logprobs or [])
    assert pieces.startswith(text) or text.startswith(pieces.rstrip())


def test_a_sequence_that_keeps_meeting_its_bans_ends(h: EngineHarness) -> None:
    """Banning every vowel: each word needs many rewinds; the sequence goes back at most 128 times, then ends,
    and what it sent never contains a banned string."""
    vowels = list("aeiou")
    text, chunks = greedy_text(h, STORY, banned_strings=vowels)
    assert not set(text.lower()) & set(vowels)
    assert chunks[-1].finish_reason is not None


def test_a_position_with_no_token_left_ends_the_sequence(h: EngineHarness) -> None:
    model = h.engine.model
    allowed = model.tokenize(" sea", add_special=False, parse_special=False)
    text, chunks = greedy_text(h, STORY, allowed_tokens=allowed, banned_strings=["sea"])
    assert "sea" not in text
    assert chunks[-1].finish_reason is FinishReason.STOP


# -- n choices ---------------------------------------------------------------------------------------------


def choices(h: EngineHarness, n: int, **sampling: Any) -> list[list[Chunk]]:
    request = CompletionRequest(model="gemma", prompt=STORY, n=n, sampling=SamplingParams(max_tokens=16, **sampling))
    jobs = [h.submit(job) for job in h.engine.completion_jobs(request)]
    return [h.chunks(job) for job in jobs]


def test_n_choices_run_together_differ_and_repeat_with_their_seed(h: EngineHarness) -> None:
    stats = h.engine.scheduler.stats
    before = stats.snapshot()
    first = choices(h, 4, temperature=1.0, seed=7, **OFF)
    after = stats.snapshot()
    assert after["steps"] - before["steps"] <= 16 + 2  # one decode per token for all four, not four
    prompt = len(h.engine.tokenize_prompt(STORY))
    assert after["prompt_tokens"] - before["prompt_tokens"] == prompt  # the prompt was prefilled once, for all
    texts = [text_of(c) for c in first]
    assert len(set(texts)) == 4
    assert [text_of(c) for c in choices(h, 4, temperature=1.0, seed=7, **OFF)] == texts
    (alone,) = choices(h, 1, temperature=1.0, seed=9, **OFF)
    assert text_of(alone) == texts[2]  # choice i draws with seed + i


# -- bad values the engine finds ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["banned_tokens", "allowed_tokens"])
def test_token_ids_outside_the_vocabulary_are_refused(h: EngineHarness, field: str) -> None:
    params = SamplingParams()
    setattr(params, field, [1, h.engine.model.n_vocab])
    request = CompletionRequest(model="gemma", prompt="x", sampling=params)
    with pytest.raises(BadRequest) as info:
        h.engine.prepare_completion(request)
    assert info.value.param == field and info.value.code == "invalid_value"


def test_allowed_tokens_that_are_all_banned_are_refused(h: EngineHarness) -> None:
    request = CompletionRequest(
        model="gemma", prompt="x", sampling=SamplingParams(allowed_tokens=[5, 6], banned_tokens=[5, 6])
    )
    with pytest.raises(BadRequest, match="allowed_tokens"):
        h.engine.prepare_completion(request)


def test_choices_waiting_for_a_cancelled_choice_prefill_themselves(h: EngineHarness) -> None:
    """The choice prefilling the shared prompt is cancelled midway: the others go on, prefilling it themselves."""
    prompt = "The history of the sea, told in many words. " * 60  # several prefill steps (batch 256)
    request = CompletionRequest(model="gemma", prompt=prompt, n=3, sampling=SamplingParams(max_tokens=4, temperature=0))
    jobs = h.engine.completion_jobs(request)
    stats = h.engine.scheduler.stats
    before = stats.snapshot()
    steps = before["steps"]
    for job in jobs:
        h.submit(job)
    deadline = time.monotonic() + 60
    while stats.snapshot()["steps"] == steps and time.monotonic() < deadline:
        time.sleep(0.001)
    h.engine.scheduler.cancel(jobs[0].id)
    for job in jobs[1:]:
        chunks = h.chunks(job)
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 4
    prefilled = stats.snapshot()["prompt_tokens"] - before["prompt_tokens"]
    size = len(jobs[0].prompt)
    assert size < prefilled < 2 * size  # part of it by the cancelled choice, then once more for the other two
