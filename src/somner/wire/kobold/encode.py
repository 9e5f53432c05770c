"""Core → KoboldAI wire: KoboldCpp's response bodies and its SSE events.

A streamed generation is a series of `event: message` events whose data is `{"token": "...", "finish_reason":
null}`, then one with the finish reason (and an empty token), as KoboldCpp sends them. Built as small dicts and
serialised with orjson: nothing per token goes through pydantic.
"""

from __future__ import annotations

from typing import Any

import orjson

from somner.core import FinishReason, TokenLogprob, TopLogprob
from somner.errors import SomnerError

MODEL_PREFIX = "koboldcpp/"
"""Front ends tell a KoboldCpp server from a KoboldAI one by this prefix of `/api/v1/model`'s result (and enable
its extra endpoints: streaming, abort, tokencount); the model id follows it."""

KOBOLD_API_VERSION = "1.2.5"
"""The KoboldAI United API version KoboldCpp reports at `/api/v1/info/version`."""

KOBOLDCPP_VERSION = "1.76"
"""The KoboldCpp version whose API this one follows, for `/api/extra/version`: front ends compare it against the
version in which each extra feature appeared (SSE streaming, abort by genkey, tokencount, grammar)."""

ABORTED = "abort"
"""The finish reason of a generation the caller aborted (KoboldCpp has only "stop" and "length")."""


def finish_reason(reason: FinishReason | None) -> str:
    """Kobold's finish reason: "stop" (end of text or a stop sequence), "length", or `ABORTED` (no reason: the
    generation was cut off before the engine ended it)."""
    if reason is None:
        return ABORTED
    return "length" if reason is FinishReason.LENGTH else "stop"


def model_name(model_id: str) -> dict[str, str]:
    return {"result": MODEL_PREFIX + model_id}


def extra_version(*, protected: bool) -> dict[str, object]:
    """`/api/extra/version`; `protected`: requests need a key (KoboldCpp's --password)."""
    return {
        "result": "KoboldCpp",
        "version": KOBOLDCPP_VERSION,
        "protected": protected,
        "txt2img": False,
        "vision": False,
    }


def stop_reason(reason: FinishReason | None, *, on_stop_sequence: bool) -> int:
    """KoboldCpp's numeric stop reason: -1 none (aborted), 0 out of tokens, 1 end of text, 2 a stop sequence."""
    if reason is None:
        return -1
    if reason is FinishReason.LENGTH:
        return 0
    return 2 if on_stop_sequence else 1


def _per_token_ms(seconds: float, tokens: int) -> float:
    return seconds * 1000.0 / tokens if tokens else 0.0


def _speed(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def perf(
    *,
    prompt_tokens: int,
    output_tokens: int,
    prompt_seconds: float,
    output_seconds: float,
    seed: int,
    stop: int,
    total: int,
    queue: int,
    busy: bool,
    uptime: float,
    idle: float,
) -> dict[str, object]:
    """`/api/extra/perf`, with KoboldCpp's fields. `last_process` and `last_eval` are milliseconds per token (as
    KoboldCpp computes them, whatever its docs say); Somner has no image, speech or Horde work, so those are 0."""
    return {
        "last_process": _per_token_ms(prompt_seconds, prompt_tokens),
        "last_eval": _per_token_ms(output_seconds, output_tokens),
        "last_token_count": output_tokens,
        "last_input_count": prompt_tokens,
        "last_process_time": prompt_seconds,
        "last_eval_time": output_seconds,
        "last_process_speed": _speed(prompt_tokens, prompt_seconds),
        "last_eval_speed": _speed(output_tokens, output_seconds),
        "last_seed": seed,
        "last_draft_success": 0,
        "last_draft_failed": 0,
        "total_gens": total,
        "stop_reason": stop,
        "total_img_gens": 0,
        "total_tts_gens": 0,
        "total_transcribe_gens": 0,
        "queue": queue,
        "idle": 0 if busy else 1,
        "hordeexitcounter": 0,
        "uptime": uptime,
        "idletime": idle,
        "quiet": False,
    }


def detokenized(text: str) -> dict[str, object]:
    """`/api/extra/detokenize`."""
    return {"result": text, "success": True}


def generation(text: str, reason: FinishReason | None, logprobs: list[TokenLogprob] | None = None) -> dict[str, object]:
    """The answer of `/api/v1/generate`; `logprobs` when the request asked for them (`logprobs: true`)."""
    result: dict[str, object] = {"text": text, "finish_reason": finish_reason(reason)}
    if logprobs is not None:
        result["logprobs"] = logprobs_body(logprobs)
    return {"results": [result]}


def _entry(item: TokenLogprob | TopLogprob) -> dict[str, Any]:
    return {"token": item.token, "token_id": item.id, "logprob": item.logprob, "bytes": item.bytes}


def logprobs_body(items: list[TokenLogprob]) -> dict[str, Any]:
    """KoboldCpp's logprobs object: OpenAI's chat shape (`content`) and its legacy completion shape side by side,
    with token ids. (KoboldCpp's values come from its last sampler's candidates; Somner's are the model's own
    distribution, as OpenAI's.)"""
    offsets: list[int] = []
    offset = 0
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {
        "content": [{**_entry(item), "top_logprobs": [_entry(t) for t in item.top]} for item in items],
        "tokens": [item.token for item in items],
        "token_ids": [item.id for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [{t.token: t.logprob for t in item.top} for item in items],
        "text_offset": offsets,
    }


def partial(text: str) -> dict[str, object]:
    """`/api/extra/generate/check`: the text of a generation so far."""
    return {"results": [{"text": text}]}


def _message(data: bytes) -> bytes:
    return b"event: message\ndata: " + data + b"\n\n"


def token_event(text: str) -> bytes:
    return _message(orjson.dumps({"token": text, "finish_reason": None}))


def final_event(reason: FinishReason | None) -> bytes:
    return _message(orjson.dumps({"token": "", "finish_reason": finish_reason(reason)}))


def error_body(error: SomnerError) -> dict[str, dict[str, str]]:
    return {"detail": {"msg": error.message, "type": error.code}}


def error_event(error: SomnerError) -> bytes:
    """A generation that failed midway: an `error` event with Kobold's error body (the status cannot change)."""
    return b"event: error\ndata: " + orjson.dumps(error_body(error)) + b"\n\n"
