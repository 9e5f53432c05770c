"""The sampler set at every dialect's edge: names and aliases onto the core, the loose forms, bad values as 400s
naming the field, and the OpenAI hop to the worker carrying every field."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from somner.core import ChatRequest, CompletionRequest, Message, SamplingParams
from somner.errors import BadRequest
from somner.wire import sampling
from somner.wire.kobold import decode as kobold_decode
from somner.wire.kobold import schemas as kobold_schemas
from somner.wire.ollama import decode as ollama_decode
from somner.wire.ollama import schemas as ollama_schemas
from somner.wire.openai import decode, encode, schemas

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def openai_sampling(**fields: Any) -> SamplingParams:
    body = json.dumps({**CHAT, **fields})  # (json: orjson refuses integers beyond 64 bits, which clients send)
    return decode.chat_request(decode.parse(schemas.ChatCompletionRequest, body)).sampling


def openai_error(**fields: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        openai_sampling(**fields)
    return info.value


LLAMA_SERVER = {
    "temperature": 0.7,
    "dynatemp_range": 0.2,
    "dynatemp_exponent": 1.5,
    "top_k": 30,
    "min_p": 0.1,
    "typical_p": 0.9,
    "top_n_sigma": 1.5,
    "xtc_probability": 0.4,
    "xtc_threshold": 0.2,
    "repeat_penalty": 1.2,
    "repeat_last_n": 128,
    "dry_multiplier": 0.8,
    "dry_base": 2.0,
    "dry_allowed_length": 3,
    "dry_penalty_last_n": 256,
    "dry_sequence_breakers": ["\n", "|"],
    "mirostat": 2,
    "mirostat_tau": 4.0,
    "mirostat_eta": 0.2,
    "min_tokens": 5,
    "ignore_eos": True,
}
TABBY = {
    "temperature_last": True,
    "min_temp": 0.5,
    "max_temp": 0.9,
    "temp_exponent": 1.5,
    "top_k": -1,
    "typical": 0.9,
    "top_a": 0.2,
    "tfs": 0.95,
    "rep_pen": 1.2,
    "penalty_range": 128,
    "dry_range": 256,
    "dry_sequence_breakers": '"\\n", "|"',
    "mirostat_mode": 2,
    "banned_strings": "slop",
    "custom_token_bans": "1, 2,3",
    "allowed_token_ids": [4, 5],
    "min_length": 5,
    "ban_eos_token": True,
}


def test_llama_server_names_map_to_the_core() -> None:
    params = openai_sampling(**LLAMA_SERVER)
    assert (params.temperature, params.dynatemp_range, params.dynatemp_exponent) == (0.7, 0.2, 1.5)
    assert (params.top_k, params.min_p, params.typical_p, params.top_n_sigma) == (30, 0.1, 0.9, 1.5)
    assert (params.xtc_probability, params.xtc_threshold) == (0.4, 0.2)
    assert (params.repeat_penalty, params.repeat_last_n) == (1.2, 128)
    assert (params.dry_multiplier, params.dry_base, params.dry_allowed_length, params.dry_range) == (0.8, 2.0, 3, 256)
    assert params.dry_sequence_breakers == ["\n", "|"]
    assert (params.mirostat, params.mirostat_tau, params.mirostat_eta) == (2, 4.0, 0.2)
    assert params.min_tokens == 5 and params.ignore_eos


def test_tabbyapi_names_and_aliases_map_to_the_core() -> None:
    params = openai_sampling(**TABBY)
    assert params.temperature_last is True
    assert params.temperature == pytest.approx(0.7) and params.dynatemp_range == pytest.approx(0.2)
    assert params.dynatemp_exponent == 1.5
    assert params.top_k == 0  # TabbyAPI's -1: off
    assert (params.typical_p, params.top_a, params.tfs) == (0.9, 0.2, 0.95)
    assert (params.repeat_penalty, params.repeat_last_n, params.dry_range) == (1.2, 128, 256)
    assert params.dry_sequence_breakers == ["\n", "|"]
    assert params.mirostat == 2
    assert params.banned_strings == ["slop"]
    assert params.banned_tokens == [1, 2, 3] and params.allowed_tokens == [4, 5]
    assert params.min_tokens == 5 and params.ignore_eos


@pytest.mark.parametrize(
    ("alias", "field", "value"),
    [
        ("repetition_penalty", "repeat_penalty", 1.3),
        ("repetition_range", "repeat_last_n", 32),
        ("repetition_penalty_range", "repeat_last_n", 32),
        ("rep_pen_range", "repeat_last_n", 32),
        ("tfs_z", "tfs", 0.9),
        ("dynatemp_exponent", "dynatemp_exponent", 2.0),
        ("max_length", "max_tokens", 7),
    ],
)
def test_more_aliases(alias: str, field: str, value: Any) -> None:
    assert getattr(openai_sampling(**{alias: value}), field) == value


def test_unset_fields_stay_unset() -> None:
    params = openai_sampling()
    assert params == SamplingParams(stop=[], logit_bias={})
    assert params.temperature_last is None and params.dry_sequence_breakers is None and params.banned_strings == []


def test_equal_dynamic_temperature_bounds_mean_none() -> None:
    params = openai_sampling(temperature=0.6, min_temp=0.8, max_temp=0.8)
    assert (params.temperature, params.dynatemp_range) == (0.6, None)
    only_high = openai_sampling(max_temp=1.5)  # (TabbyAPI: the missing bound is 1.0)
    assert (only_high.temperature, only_high.dynatemp_range) == (1.25, 0.25)


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"top_k": 2**40}, "top_k", "invalid_value"),
        ({"top_k": -2}, "top_k", "invalid_value"),
        ({"max_tokens": 2**70}, "max_tokens", "invalid_value"),
        ({"max_completion_tokens": 2**31}, "max_completion_tokens", "invalid_value"),
        ({"repeat_last_n": -2}, "repeat_last_n", "invalid_value"),
        ({"rep_pen": 0}, "rep_pen", "invalid_value"),
        ({"min_p": 1.01}, "min_p", "invalid_value"),
        ({"top_a": -0.1}, "top_a", "invalid_value"),
        ({"tfs": 2}, "tfs", "invalid_value"),
        ({"typical": 0}, "typical", "invalid_value"),
        ({"top_n_sigma": -5}, "top_n_sigma", "invalid_value"),
        ({"xtc_probability": 1.5}, "xtc_probability", "invalid_value"),
        ({"xtc_threshold": "high"}, "xtc_threshold", "invalid_type"),
        ({"temperature_last": 1}, "temperature_last", "invalid_type"),
        ({"dynatemp_range": -1}, "dynatemp_range", "invalid_value"),
        ({"min_temp": 11}, "min_temp", "invalid_value"),
        ({"min_temp": 1.5, "max_temp": 1.0}, "min_temp", "invalid_value"),
        ({"dynatemp_range": 0.5, "max_temp": 1.5}, "min_temp", "invalid_value"),
        ({"dry_multiplier": -1}, "dry_multiplier", "invalid_value"),
        ({"dry_allowed_length": -1}, "dry_allowed_length", "invalid_value"),
        ({"dry_penalty_last_n": -2}, "dry_penalty_last_n", "invalid_value"),
        ({"dry_sequence_breakers": [""]}, "dry_sequence_breakers", "invalid_value"),
        ({"dry_sequence_breakers": ["x" * 41]}, "dry_sequence_breakers", "invalid_value"),
        ({"dry_sequence_breakers": ["\n"] * 129}, "dry_sequence_breakers", "invalid_value"),
        ({"dry_sequence_breakers": "[1, 2]"}, "dry_sequence_breakers", "invalid_value"),
        ({"dry_sequence_breakers": "["}, "dry_sequence_breakers", "invalid_value"),
        ({"mirostat": 3}, "mirostat", "invalid_value"),
        ({"mirostat_mode": -1}, "mirostat_mode", "invalid_value"),
        ({"mirostat_tau": -1}, "mirostat_tau", "invalid_value"),
        ({"mirostat_eta": 2}, "mirostat_eta", "invalid_value"),
        ({"banned_strings": [""]}, "banned_strings", "invalid_value"),
        ({"banned_strings": ["x"] * 513}, "banned_strings", "invalid_value"),
        ({"banned_strings": [1]}, "banned_strings", "invalid_type"),
        ({"banned_tokens": [-1]}, "banned_tokens", "invalid_value"),
        ({"banned_tokens": "1,b"}, "banned_tokens", "invalid_value"),
        ({"custom_token_bans": "99999999999"}, "banned_tokens", "invalid_value"),
        ({"allowed_tokens": [2**31]}, "allowed_tokens", "invalid_value"),
        ({"min_tokens": -1}, "min_tokens", "invalid_value"),
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 17}, "n", "invalid_value"),
        ({"seed": 2**64}, "seed", "invalid_value"),
    ],
)
def test_bad_values_are_400s_naming_the_field(fields: dict[str, Any], param: str, code: str) -> None:
    error = openai_error(**fields)
    assert error.status == 400
    assert error.param is not None and error.param.startswith(param), (error.param, error.message)
    assert error.code == code, error.message


@pytest.mark.parametrize("raw", [b'{"temperature": Infinity}', b'{"min_p": NaN}', b'{"mirostat_tau": 1e999}'])
def test_numbers_must_be_finite(raw: bytes) -> None:
    body = orjson.dumps(CHAT)[:-1] + b"," + raw[1:]
    with pytest.raises(BadRequest) as info:
        decode.parse(schemas.ChatCompletionRequest, body)
    assert "finite" in info.value.message


def test_n_reaches_chat_and_every_prompt() -> None:
    chat = decode.chat_request(decode.parse(schemas.ChatCompletionRequest, orjson.dumps({**CHAT, "n": 3})))
    assert chat.n == 3
    body = {"model": "m", "prompt": ["a", "b"], "n": 2}
    cores = decode.completion_requests(decode.parse(schemas.CompletionRequest, orjson.dumps(body)))
    assert [c.n for c in cores] == [2, 2]


EVERY_FIELD = SamplingParams(
    max_tokens=12,
    temperature=0.9,
    temperature_last=False,
    dynatemp_range=0.3,
    dynatemp_exponent=1.2,
    top_p=0.8,
    top_k=17,
    min_p=0.03,
    typical_p=0.95,
    top_a=0.1,
    tfs=0.9,
    top_n_sigma=2.0,
    xtc_probability=0.3,
    xtc_threshold=0.15,
    presence_penalty=0.1,
    frequency_penalty=0.2,
    repeat_penalty=1.1,
    repeat_last_n=-1,
    dry_multiplier=0.7,
    dry_base=1.5,
    dry_allowed_length=4,
    dry_range=-1,
    dry_sequence_breakers=["\n", ";"],
    mirostat=1,
    mirostat_tau=3.0,
    mirostat_eta=0.3,
    seed=99,
    stop=["END"],
    logit_bias={7: -2.0},
    banned_strings=["never"],
    banned_tokens=[8, 9],
    allowed_tokens=[10, 11, 12],
    min_tokens=2,
    logprobs=3,
    grammar='root ::= "x"',
    ignore_eos=True,
)


def test_the_worker_hop_carries_every_sampling_field() -> None:
    """What the gateway sends an engine decodes, in the worker, to the very same parameters (chat and completion)."""
    chat = ChatRequest(model="m", messages=[Message("user", "hi")], sampling=EVERY_FIELD, n=4)
    body = orjson.dumps(encode.chat_request(chat))
    again = decode.chat_request(decode.parse(schemas.ChatCompletionRequest, body))
    assert again.sampling == EVERY_FIELD
    assert again.n == 4
    completion = CompletionRequest(model="m", prompt="hi", sampling=EVERY_FIELD, n=2)
    body = orjson.dumps(encode.completion_request(completion))
    (one,) = decode.completion_requests(decode.parse(schemas.CompletionRequest, body))
    assert one.sampling == EVERY_FIELD
    assert one.n == 2


def test_every_sampling_field_is_on_the_hop() -> None:
    """A new SamplingParams field must be carried to engines (or listed here, with why not)."""
    sent = set(encode.sampling_fields(EVERY_FIELD)) | {"logprobs", "top_logprobs"}
    carried_elsewhere = {"json_schema", "json_mode"}  # (as response_format)
    for name in SamplingParams.__dataclass_fields__:
        if name in carried_elsewhere or name == "logprobs":
            continue
        wire_names = {"dry_range": "dry_penalty_last_n"}
        assert wire_names.get(name, name) in sent, name


# -- the loose forms -------------------------------------------------------------------------------------------


def test_token_id_text() -> None:
    assert sampling.token_ids(" 1, 2 ,,3 ", "banned_tokens") == [1, 2, 3]
    assert sampling.token_ids("", "banned_tokens") == []
    with pytest.raises(BadRequest, match="banned_tokens"):
        sampling.token_ids("1;2", "banned_tokens")


def test_breakers_as_json_text() -> None:
    assert sampling.breakers('["\\n", ":"]', "b") == ["\n", ":"]
    assert sampling.breakers('"\\n", ":"', "b") == ["\n", ":"]
    assert sampling.breakers(None, "b") is None
    assert sampling.breakers([], "b") == []
    with pytest.raises(BadRequest):
        sampling.breakers('[""]', "b")


# -- Ollama ------------------------------------------------------------------------------------------------


def ollama_sampling(**options: Any) -> SamplingParams:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "options": options}
    return ollama_decode.chat_request(ollama_decode.parse(ollama_schemas.ChatRequest, json.dumps(body))).sampling


def test_ollama_options() -> None:
    params = ollama_sampling(
        tfs_z=0.9,
        mirostat=1,
        mirostat_tau=4.0,
        mirostat_eta=0.2,
        top_n_sigma=1.0,
        xtc_probability=0.5,
        xtc_threshold=0.1,
        dynatemp_range=0.4,
        dynatemp_exponent=2.0,
        dry_multiplier=0.8,
        dry_base=1.75,
        dry_allowed_length=2,
        dry_penalty_last_n=64,
        dry_sequence_breakers=["\n"],
        repeat_last_n=-1,
    )
    assert (params.tfs, params.mirostat, params.mirostat_tau, params.mirostat_eta) == (0.9, 1, 4.0, 0.2)
    assert (params.top_n_sigma, params.xtc_probability, params.xtc_threshold) == (1.0, 0.5, 0.1)
    assert (params.dynatemp_range, params.dynatemp_exponent) == (0.4, 2.0)
    assert (params.dry_multiplier, params.dry_allowed_length, params.dry_range) == (0.8, 2, 64)
    assert params.dry_sequence_breakers == ["\n"] and params.repeat_last_n == -1


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"mirostat": 3}, "options.mirostat"),
        ({"tfs_z": 1.5}, "options.tfs_z"),
        ({"top_k": 2**31}, "options.top_k"),
        ({"num_predict": -3}, "options.num_predict"),
        ({"num_predict": 2**40}, "options.num_predict"),
        ({"temperature": 1e6}, "options.temperature"),
        ({"xtc_threshold": "x"}, "options.xtc_threshold"),
        ({"dry_sequence_breakers": "nope"}, "options.dry_sequence_breakers"),
        ({"seed": 2**64}, "options.seed"),
    ],
)
def test_bad_ollama_options(options: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        ollama_sampling(**options)
    assert info.value.param == param


# -- Kobold ------------------------------------------------------------------------------------------------


def kobold_job(**fields: Any) -> kobold_decode.KoboldGeneration:
    wire = kobold_decode.parse(kobold_schemas.GenerateRequest, json.dumps({"prompt": "x", **fields}))
    return kobold_decode.generation(wire, "m", stream=False)


def test_kobold_fields() -> None:
    job = kobold_job(
        top_a=0.2,
        tfs=0.9,
        nsigma=1.5,
        mirostat=2,
        mirostat_tau=4.0,
        mirostat_eta=0.3,
        dynatemp_range=0.5,
        dynatemp_exponent=1.5,
        dry_multiplier=0.8,
        dry_base=1.75,
        dry_allowed_length=2,
        dry_penalty_last_n=0,
        dry_sequence_breakers='["\\n", ":", "\\"", "*"]',
        xtc_threshold=0.1,
        xtc_probability=0.5,
        banned_tokens=["shivers down", "ministrations"],
        custom_token_bans="12,13",
        repetition_penalty=1.1,
        use_default_badwordsids=True,
        logprobs=True,
    )
    params = job.core.sampling
    assert (params.top_a, params.tfs, params.top_n_sigma) == (0.2, 0.9, 1.5)
    assert (params.mirostat, params.mirostat_tau, params.mirostat_eta) == (2, 4.0, 0.3)
    assert (params.dynatemp_range, params.dynatemp_exponent) == (0.5, 1.5)
    assert params.dry_range == -1  # KoboldCpp's 0: the whole context
    assert params.dry_sequence_breakers == ["\n", ":", '"', "*"]
    assert (params.xtc_threshold, params.xtc_probability) == (0.1, 0.5)
    assert params.banned_strings == ["shivers down", "ministrations"]
    assert params.banned_tokens == [12, 13]
    assert params.repeat_penalty == 1.1 and params.ignore_eos
    assert job.logprobs and params.logprobs == kobold_decode.KOBOLD_LOGPROBS
    assert kobold_job(banned_strings="one").core.sampling.banned_strings == ["one"]
    assert not kobold_job().logprobs and kobold_job().core.sampling.logprobs is None


@pytest.mark.parametrize(
    ("order", "last"),
    [
        ([6, 0, 1, 3, 4, 2, 5], True),
        ([6, 5, 0, 1, 3, 4, 2], False),
        ([0, 5, 2], False),
        ([6, 0, 1], None),
        (None, None),
    ],
)
def test_kobold_sampler_order_places_the_temperature(order: list[int] | None, last: bool | None) -> None:
    assert kobold_job(sampler_order=order).core.sampling.temperature_last is last


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tfs": 1.5}, "tfs"),
        ({"nsigma": 101}, "nsigma"),
        ({"mirostat": 3}, "mirostat"),
        ({"top_a": "0.1"}, "top_a"),
        ({"sampler_order": [7]}, "sampler_order.0"),
        ({"custom_token_bans": "1,x"}, "custom_token_bans"),
        ({"banned_tokens": [""]}, "banned_tokens"),
        ({"max_length": 2**40}, "max_length"),
        ({"top_k": 2**40}, "top_k"),
        ({"dry_sequence_breakers": "{"}, "dry_sequence_breakers"),
    ],
)
def test_bad_kobold_fields(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        kobold_job(**fields)
    assert info.value.param is not None and info.value.param.startswith(param)
