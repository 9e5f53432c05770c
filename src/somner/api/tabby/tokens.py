"""TabbyAPI's token calls, its permission check and its health check.

Token calls go through the gateway like any request (admission, rate limits, a lease on the model); text is
tokenized by the model's engine, a chat through its chat template (without the assistant's opening, as TabbyAPI
renders it; a BOS the template writes is left to `add_bos_token`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.handlers import json_response, read_request, services_of
from somner.api.principal import principal_of
from somner.api.tabby.access import current_model
from somner.api.tabby.render import tabby_endpoint
from somner.core import ChatRequest
from somner.models.manager import ModelState
from somner.wire.tabby import decode, schemas


async def _call(request: Request, named: str | None, bytes_in: int) -> serving.Call:
    spec = current_model(request, named)
    return await serving.tokenizing(request, services_of(request), spec.id, "tabby", bytes_in)


async def _encode(call: serving.Call, wire: schemas.TokenEncodeRequest) -> list[Any]:
    tokenizer = serving.tokenizer_of(call)
    text = wire.text
    if not isinstance(text, str):
        chat = ChatRequest(model=call.spec.id, messages=decode.messages(text))
        text = await tokenizer.apply_template(chat, add_generation_prompt=False)
        bos = await tokenizer.tokenize("", add_special=True)
        if bos:  # the template's own BOS text would tokenize to a second BOS
            text = text.removeprefix(await tokenizer.detokenize(bos, special=True))
    return await tokenizer.tokenize(text, add_special=wire.add_bos_token, parse_special=wire.encode_special_tokens)


@tabby_endpoint
async def encode_tokens(request: Request) -> Response:
    raw = await read_request(request)
    wire = decode.parse(schemas.TokenEncodeRequest, raw)
    call = await _call(request, wire.model, len(raw))
    tokens = await serving.finished(request, call, _encode(call, wire))
    return json_response({"tokens": tokens, "length": len(tokens)}, call.ticket.headers)


@tabby_endpoint
async def decode_tokens(request: Request) -> Response:
    raw = await read_request(request)
    wire = decode.parse(schemas.TokenDecodeRequest, raw)
    call = await _call(request, wire.model, len(raw))
    text = await serving.finished(request, call, _decode(call, wire))
    return json_response({"text": text}, call.ticket.headers)


async def _decode(call: serving.Call, wire: schemas.TokenDecodeRequest) -> str:
    return await serving.tokenizer_of(call).detokenize(wire.tokens, special=wire.decode_special_tokens)


@tabby_endpoint
async def permission(request: Request) -> Response:
    return json_response({"permission": "admin" if principal_of(request).rights.admin else "api"})


@tabby_endpoint
async def health(request: Request) -> Response:
    """TabbyAPI's shape: `healthy`, or `unhealthy` (503) with an issue per engine that is not well or failed."""
    now = dt.datetime.now(dt.UTC).isoformat()
    issues = []
    for status in services_of(request).manager.statuses():
        if status.health is not None:
            issues.append({"time": now, "description": f"{status.id}: {status.health}"})
        elif status.state is ModelState.FAILED and status.error:
            issues.append({"time": now, "description": status.error})
    body = {"status": "unhealthy" if issues else "healthy", "issues": issues}
    return Response(orjson.dumps(body), status_code=503 if issues else 200, media_type="application/json")


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/token/encode", encode_tokens, methods=["POST"]),
        Route("/v1/token/decode", decode_tokens, methods=["POST"]),
        Route("/v1/auth/permission", permission, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
    ]
