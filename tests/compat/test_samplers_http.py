"""Samplers, `n` and logprobs end to end over HTTP, against a running `somner serve` (its gateway relays to a real
worker): the official `openai` client with extra body fields (llama-server's and TabbyAPI's names), Ollama's
`options` and Kobold's generate fields with plain httpx, and the bad values of each in its dialect's error shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.servers import ADMIN_KEY, ServeProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
STORY = "Once upon a time, in a small village by the sea, there lived"
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a story about a fisherman."}]


@pytest.fixture(scope="module")
def client(serve: ServeProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{serve.url}/v1", api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def http(serve: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve.url, headers=serve.headers, timeout=120) as plain:
        yield plain


# -- n ------------------------------------------------------------------------------------------------------


def test_chat_with_n_choices(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=1.0, seed=11)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=12,
        temperature=1.0,
        seed=11,
        n=3,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) == 3
    assert texts[0] == one.choices[0].message.content  # choice 0 draws with the seed itself
    assert reply.usage is not None and one.usage is not None
    assert reply.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once
    assert 3 <= reply.usage.completion_tokens <= 36


def test_streamed_chat_with_n_choices_says_whose_each_piece_is(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=10,
        temperature=1.0,
        seed=5,
        n=2,
    )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=10,
        temperature=1.0,
        seed=5,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str] = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finishes[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert sorted(texts) == [0, 1] and sorted(finishes) == [0, 1]
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_completions_with_several_prompts_and_n(client: openai.OpenAI) -> None:
    """Prompt p's choice i is choice p * n + i. (Greedy, so that each prompt's choices are known: the same.)"""
    prompts = ["The sea is", "The sky is"]
    alone = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0).choices[0].text for p in prompts
    ]
    assert alone[0] != alone[1]
    reply = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0, n=2)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert [c.text for c in reply.choices] == [alone[0], alone[0], alone[1], alone[1]]
    assert reply.usage is not None and reply.usage.completion_tokens == 4 * 6
    stream = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0, n=2, stream=True)
    texts: dict[int, str] = defaultdict(str)
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert [texts[i] for i in range(4)] == [c.text for c in reply.choices]
    sampled = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=1.0, seed=3, n=2)
    assert len({c.text for c in sampled.choices}) == 4


def test_too_many_choices_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, n=17)
    assert info.value.body is not None and info.value.body["param"] == "n"  # type: ignore[index]


# -- logprobs -----------------------------------------------------------------------------------------------


def check_logprobs(entries: list[Any], top: int) -> None:
    assert entries
    for entry in entries:
        assert entry.logprob <= 0
        alternatives = [t.logprob for t in entry.top_logprobs]
        assert len(alternatives) == top
        assert alternatives == sorted(alternatives, reverse=True)
        assert all(lp <= 0 for lp in alternatives)
        assert entry.top_logprobs[0].token == entry.token  # temperature 0: the most likely token is chosen
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)


def test_chat_logprobs_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    logprobs = whole.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    check_logprobs(logprobs.content, 3)
    assert "".join(e.token for e in logprobs.content).startswith(whole.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    streamed = [e for c in stream for choice in c.choices if choice.logprobs for e in choice.logprobs.content or []]
    check_logprobs(streamed, 3)
    assert [e.token for e in streamed] == [e.token for e in logprobs.content]


def test_completion_logprobs_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt=STORY, max_tokens=6, temperature=0, logprobs=3)
    logprobs = whole.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert len(logprobs.tokens) == 6
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert value <= 0
        assert list(top.values()) == sorted(top.values(), reverse=True) and len(top) <= 3
        assert max(top, key=lambda t: top[t]) == token
    stream = client.completions.create(model=MODEL, prompt=STORY, max_tokens=6, temperature=0, logprobs=3, stream=True)
    tokens = [t for c in stream for choice in c.choices if choice.logprobs for t in choice.logprobs.tokens or []]
    assert tokens == logprobs.tokens


def test_logprobs_out_of_range_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL,
            messages=CHAT,
            max_tokens=2,
            logprobs=True,
            top_logprobs=21,
        )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=STORY, max_tokens=2, logprobs=6)


# -- samplers over the OpenAI dialect ----------------------------------------------------------------------


def test_banned_strings_never_reach_a_stream(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt=STORY, max_tokens=24, temperature=0)
    words = plain.choices[0].text.split()
    ban = words[len(words) // 2]
    stream = client.completions.create(
        model=MODEL,
        prompt=STORY,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"banned_strings": [ban.upper()]},
    )
    pieces, usage = [], None
    for chunk in stream:
        pieces += [c.text for c in chunk.choices]
        usage = chunk.usage or usage
    text = "".join(pieces)
    assert ban.lower() not in text.lower()
    assert usage is not None and usage.completion_tokens == 24


TABBY_NAMES = {
    "temperature_last": True,
    "min_temp": 0.5,
    "max_temp": 1.5,
    "temp_exponent": 1.0,
    "top_a": 0.1,
    "tfs": 0.95,
    "typical": 0.95,
    "rep_pen": 1.1,
    "penalty_range": 64,
    "mirostat_mode": 0,
    "dry_multiplier": 0.5,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_range": 128,
    "dry_sequence_breakers": '"\\n", ":"',
    "xtc_probability": 0.2,
    "xtc_threshold": 0.2,
    "custom_token_bans": "5, 6",
    "allowed_token_ids": None,
    "min_length": 4,
    "ban_eos_token": False,
}
LLAMA_NAMES = {
    "dynatemp_range": 0.3,
    "dynatemp_exponent": 1.5,
    "top_n_sigma": 2.0,
    "repeat_penalty": 1.05,
    "repeat_last_n": -1,
    "dry_penalty_last_n": -1,
    "mirostat": 2,
    "mirostat_tau": 4.0,
    "mirostat_eta": 0.2,
    "min_tokens": 3,
    "banned_tokens": [5, 6],
}


@pytest.mark.parametrize("names", [TABBY_NAMES, LLAMA_NAMES], ids=["tabbyapi", "llama-server"])
def test_sampler_fields_under_every_name_are_honoured(client: openai.OpenAI, names: dict[str, Any]) -> None:
    body = {k: v for k, v in names.items() if v is not None}
    one = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=8,
        seed=9,
        extra_body=body,
    )
    again = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        max_tokens=8,
        seed=9,
        extra_body=body,
    )
    assert one.choices[0].message.content == again.choices[0].message.content
    assert one.usage is not None and one.usage.completion_tokens >= 3


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"min_p": 1.5}, "min_p"),
        ({"top_k": 2**40}, "top_k"),
        ({"max_tokens": 2**70}, "max_tokens"),
        ({"mirostat": 3}, "mirostat"),
        ({"mirostat_mode": "two"}, "mirostat_mode"),
        ({"xtc_threshold": -0.1}, "xtc_threshold"),
        ({"dry_allowed_length": -1}, "dry_allowed_length"),
        ({"dry_sequence_breakers": [""]}, "dry_sequence_breakers.0"),
        ({"dry_sequence_breakers": "not json ["}, "dry_sequence_breakers"),
        ({"banned_strings": ["x" * 300]}, "banned_strings"),
        ({"banned_tokens": [10**9]}, "banned_tokens"),
        ({"allowed_tokens": "1, two"}, "allowed_tokens"),
        ({"min_temp": 2.0, "max_temp": 1.0}, "min_temp"),
        ({"temperature_last": "yes"}, "temperature_last"),
    ],
)
def test_bad_sampler_values_are_openai_400s(http: httpx.Client, extra: dict[str, Any], param: str) -> None:
    response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": CHAT, "max_tokens": 2, **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is not None and error["param"].startswith(param.split(".", maxsplit=1)[0]), error


# -- Ollama -------------------------------------------------------------------------------------------------


def test_ollama_options_and_logprobs(http: httpx.Client) -> None:
    options = {"temperature": 0.9, "seed": 4, "num_predict": 8, "mirostat": 2, "mirostat_tau": 3.0, "tfs_z": 0.9}
    body = {"model": MODEL, "prompt": STORY, "raw": True, "stream": False, "options": options}
    first = http.post("/api/generate", json=body)
    assert first.status_code == 200, first.text
    assert http.post("/api/generate", json=body).json()["response"] == first.json()["response"]
    greedy = {**body, "options": {"temperature": 0, "num_predict": 4}, "logprobs": True, "top_logprobs": 2}
    logprobs = http.post("/api/generate", json=greedy).json()["logprobs"]
    assert len(logprobs) == 4
    for entry in logprobs:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token"] == entry["token"]


@pytest.mark.parametrize(
    "options", [{"mirostat": 5}, {"tfs_z": 2.0}, {"top_k": 2**40}, {"dry_sequence_breakers": 7}, {"temperature": -1}]
)
def test_bad_ollama_options_are_ollama_400s(http: httpx.Client, options: dict[str, Any]) -> None:
    response = http.post("/api/generate", json={"model": MODEL, "prompt": "x", "stream": False, "options": options})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)


# -- Kobold -------------------------------------------------------------------------------------------------


def test_kobold_sampler_fields_and_logprobs(http: httpx.Client) -> None:
    body = {
        "prompt": STORY,
        "max_length": 8,
        "temperature": 0.8,
        "sampler_seed": 12,
        "top_a": 0.1,
        "tfs": 0.95,
        "nsigma": 2.0,
        "mirostat": 0,
        "dry_multiplier": 0.8,
        "dry_sequence_breakers": '["\\n", ":"]',
        "xtc_probability": 0.3,
        "xtc_threshold": 0.15,
        "dynatemp_range": 0.2,
        "sampler_order": [6, 0, 1, 3, 4, 2, 5],
        "banned_tokens": ["dragon"],
        "custom_token_bans": "5,6",
        "logprobs": True,
    }
    response = http.post("/api/v1/generate", json=body)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert "dragon" not in result["text"].lower()
    logprobs = result["logprobs"]
    assert len(logprobs["content"]) == len(logprobs["tokens"]) == len(logprobs["token_ids"]) == 8
    for entry in logprobs["content"]:
        assert entry["logprob"] <= 0 and isinstance(entry["token_id"], int)
        top = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(top) == 5 and top == sorted(top, reverse=True)
    assert logprobs["text_offset"][0] == 0
    assert http.post("/api/v1/generate", json=body).json()["results"][0]["text"] == result["text"]
    assert "logprobs" not in http.post("/api/v1/generate", json={**body, "logprobs": False}).json()["results"][0]


@pytest.mark.parametrize(
    "field", [{"tfs": 1.5}, {"mirostat": 3}, {"top_a": "high"}, {"custom_token_bans": "1,x"}, {"top_k": 2**40}]
)
def test_bad_kobold_fields_are_kobold_400s(http: httpx.Client, field: dict[str, Any]) -> None:
    response = http.post("/api/v1/generate", json={"prompt": "x", "max_length": 2, **field})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert set(detail) == {"msg", "type"}, detail


def test_kobold_stream_never_shows_a_banned_phrase(http: httpx.Client) -> None:
    plain = http.post("/api/v1/generate", json={"prompt": STORY, "max_length": 16, "temperature": 0}).json()
    words = plain["results"][0]["text"].split()
    ban = words[len(words) // 2]
    body = {"prompt": STORY, "max_length": 16, "temperature": 0, "banned_strings": [ban]}
    with http.stream("POST", "/api/extra/generate/stream", json=body) as response:
        tokens = [orjson.loads(line[6:])["token"] for line in response.iter_lines() if line.startswith("data: ")]
    assert ban.lower() not in "".join(tokens).lower()
