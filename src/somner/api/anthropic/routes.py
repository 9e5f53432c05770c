"""Anthropic-compatible routes: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

Keys come in `x-api-key` (the guard accepts it, and Bearer); `anthropic-version` is accepted and not required.
A message is a chat like any other: `serving` admits it, leases the model and records usage as for every dialect,
and the engine's chunks are encoded into Anthropic's message or its stream of events. A token count renders the
messages through the model's chat template exactly as a generation would, so it equals the prompt's size in the
usage of a request with the same messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.anthropic.render import render
from somner.api.errors import guarded
from somner.api.handlers import json_response, read_request, services_of
from somner.api.keep_alive import keep_alive
from somner.models import defaults
from somner.models.backends.base import Tokenizes
from somner.wire.anthropic import decode, encode, schemas

anthropic_endpoint = guarded(render)


@anthropic_endpoint
async def create_message(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.MessageCreateRequest, raw)
    core = decode.chat_request(wire)
    admission = serving.Admission(
        dialect="anthropic",
        route="messages",
        bytes_in=len(raw),
        keep=keep_alive(request, None),  # Anthropic's body has no keep_alive: only Somner's header sets it
        prompt_text=orjson.dumps([{"role": m.role, "content": m.content} for m in core.messages]).decode(),
    )
    call, stream = await serving.start_chat(request, services, core, admission)
    if core.stream:
        encoder = encode.MessageStream(wire.model)

        async def events() -> AsyncIterator[bytes]:
            yield encoder.start(call.ticket.usage.prompt_tokens)  # known up front when the engine reports it
            async for chunk in serving.observed(call, stream):
                data = encoder.chunk(chunk)
                if data:
                    yield data
            yield encoder.finish()

        return serving.streamed(
            request, call, events(), stream, error_event=encode.error_event, trailer=encode.MESSAGE_STOP
        )
    reply = await serving.collected(request, call, stream)
    body = encode.message(wire.model, reply.text, reply.tool_calls.calls(), reply.last, reply.reasoning)
    return json_response(body, call.ticket.headers)


@anthropic_endpoint
async def count_tokens(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.CountTokensRequest, raw)
    core = decode.count_request(wire)
    call = await serving.tokenizing(request, services, wire.model, "anthropic", len(raw))

    async def count(tokenizer: Tokenizes) -> int:
        defaults.apply_to_chat(core, call.spec.entry.defaults)  # (a default system prompt counts, as it would)
        defaults.apply_reasoning(core, call.spec.entry)  # (and so does the empty thought of thinking turned off)
        return len(await tokenizer.tokenize(await tokenizer.apply_template(core), add_special=True))

    tokens = await serving.tokenized(request, call, count)
    return json_response({"input_tokens": tokens}, call.ticket.headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/messages", create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
