"""Core → KoboldAI wire: KoboldCpp's response bodies and its SSE events.

A streamed generation is a series of `event: message` events whose data is `{"token": "...", "finish_reason":
null}`, then one with the finish reason (and an empty token), as KoboldCpp sends them. Built as small dicts and
serialised with orjson: nothing per token goes through pydantic.
"""

from __future__ import annotations

import orjson

from somner.core import FinishReason
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


def generation(text: str, reason: FinishReason | None) -> dict[str, object]:
    return {"results": [{"text": text, "finish_reason": finish_reason(reason)}]}


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
