"""Kobold wire schemas and codecs: Kobold's field names mapped to the core, strict types, KoboldCpp's events."""

from __future__ import annotations

import orjson
import pytest

from somner.core import FinishReason
from somner.errors import BadRequest, RateLimited
from somner.wire.kobold import decode, encode, schemas


def job_of(body: object, *, stream: bool = False) -> decode.KoboldGeneration:
    return decode.generation(decode.parse(schemas.GenerateRequest, orjson.dumps(body)), "m", stream=stream)


def test_sampler_fields_map_to_core_names() -> None:
    job = job_of(
        {
            "prompt": "Once",
            "max_length": 40,
            "max_context_length": 2048,
            "temperature": 0.7,
            "top_k": 40,
            "top_p": 0.9,
            "min_p": 0.05,
            "typical": 0.8,
            "rep_pen": 1.1,
            "rep_pen_range": 320,
            "presence_penalty": 0.2,
            "stop_sequence": ["\nYou:", ""],
            "sampler_seed": 7,
            "grammar": 'root ::= "a"',
            "ban_eos_token": True,
            "logit_bias": {"13": -100},
            "memory": "[Story] ",
            "genkey": "KCPP1",
            "trim_stop": False,
        }
    )
    s = job.core.sampling
    assert (s.max_tokens, s.temperature, s.top_k, s.top_p, s.min_p, s.typical_p) == (40, 0.7, 40, 0.9, 0.05, 0.8)
    assert (s.repeat_penalty, s.repeat_last_n, s.presence_penalty, s.seed) == (1.1, 320, 0.2, 7)
    assert s.stop == ["\nYou:"]  # KoboldCpp treats empty stop strings as none
    assert s.grammar == 'root ::= "a"' and s.ignore_eos and s.logit_bias == {13: -100.0}
    assert job.core.prompt == "[Story] Once" and (job.memory, job.prompt) == ("[Story] ", "Once")
    assert (job.max_context_length, job.trim_stop, job.genkey) == (2048, False, "KCPP1")
    assert job.core.model == "m" and not job.core.stream


def test_kobold_off_values_mean_unset() -> None:
    s = job_of({"prompt": "x", "sampler_seed": -1, "typical": 0, "grammar": ""}).core.sampling
    assert s.seed is None and s.typical_p is None and s.grammar is None
    bare = job_of({"prompt": "x"}, stream=True)
    assert bare.core.sampling.max_tokens is None and bare.core.stream
    assert bare.trim_stop and bare.genkey == "" and bare.max_context_length is None


def test_front_end_extras_are_ignored() -> None:
    job = job_of({"prompt": "x", "sampler_order": [6, 0, 1], "rep_pen_slope": 0.7, "tfs": 1, "top_a": 0, "n": 1})
    assert job.core.prompt == "x"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_length": 5}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "max_length": "80"}, "max_length"),
        ({"prompt": "x", "temperature": "hot"}, "temperature"),
        ({"prompt": "x", "stop_sequence": "\n"}, "stop_sequence"),
        ({"prompt": "x", "grammar": 3}, "grammar"),
        ({"prompt": "x", "sampler_seed": -2}, "sampler_seed"),
        ({"prompt": "x", "max_length": 0}, "max_length"),
        ({"prompt": "x", "logit_bias": {"abc": 1.0}}, "logit_bias"),
    ],
)
def test_bad_fields_name_the_parameter(body: object, param: str) -> None:
    with pytest.raises(BadRequest) as info:
        job_of(body)
    assert info.value.param == param


def test_abort_and_check_bodies_may_be_empty() -> None:
    assert decode.genkey_request(b"").genkey is None
    assert decode.genkey_request(b'{"genkey": "K"}').genkey == "K"
    with pytest.raises(BadRequest):
        decode.genkey_request(b'{"genkey": 5}')


def test_stream_events_have_koboldcpps_framing() -> None:
    event = encode.token_event('a "b"\n')
    assert event.startswith(b"event: message\ndata: ") and event.endswith(b"\n\n")
    assert orjson.loads(event.split(b"data: ", 1)[1]) == {"token": 'a "b"\n', "finish_reason": None}
    final = orjson.loads(encode.final_event(FinishReason.LENGTH).split(b"data: ", 1)[1])
    assert final == {"token": "", "finish_reason": "length"}
    error = encode.error_event(RateLimited("slow down"))
    assert error.startswith(b"event: error\ndata: ")
    assert orjson.loads(error.split(b"data: ", 1)[1]) == {"detail": {"msg": "slow down", "type": "rate_limit_exceeded"}}


def test_responses() -> None:
    assert encode.finish_reason(FinishReason.STOP) == "stop"
    assert encode.finish_reason(FinishReason.LENGTH) == "length"
    assert encode.finish_reason(None) == encode.ABORTED
    assert encode.generation("hi", FinishReason.STOP) == {"results": [{"text": "hi", "finish_reason": "stop"}]}
    assert encode.partial("so far") == {"results": [{"text": "so far"}]}
    assert encode.model_name("gemma") == {"result": "koboldcpp/gemma"}
    assert encode.extra_version(protected=True)["result"] == "KoboldCpp"
