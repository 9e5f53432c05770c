"""OpenAI's Responses API: `POST /v1/responses`, stateless.

The request becomes a core chat request and is served like a chat completion (same admission, limits, queue,
lease and usage record, route "responses"). Somner keeps no responses: the reply says `"store": false`, and the
routes that read, delete or cancel a stored response answer 404 saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.handlers import json_response, read_request, services_of
from somner.api.keep_alive import keep_alive
from somner.api.openai.routes import openai_endpoint
from somner.errors import NotFound
from somner.wire.openai.responses import decode, encode


@openai_endpoint
async def create_response(request: Request) -> Response:
    raw = await read_request(request)
    wire = decode.parse(raw)
    core = decode.chat_request(wire)
    admission = serving.Admission(
        dialect="openai",
        route="responses",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
        prompt_text=orjson.dumps([{"role": m.role, "content": m.content} for m in core.messages]).decode(),
    )
    call, stream = await serving.start_chat(request, services_of(request), core, admission)
    echo = decode.echo(wire, core)  # after admission: the model's defaults are part of what was asked
    if core.stream:
        encoder = encode.ResponseStream(echo)

        async def events() -> AsyncIterator[bytes]:
            yield encoder.start()
            async for chunk in serving.observed(call, stream):
                data = encoder.chunk(chunk)
                if data:
                    yield data
            yield encoder.end()

        return serving.streamed(request, call, events(), stream, error_event=encoder.failed)
    reply = await serving.collected(request, call, stream)
    return json_response(encode.response(echo, reply), call.ticket.headers)


@openai_endpoint
async def stored_response(request: Request) -> Response:
    """Reading, deleting or cancelling a stored response: there are none."""
    raise NotFound(
        f"Response with id '{request.path_params['response_id']}' not found. {decode.NOT_KEPT}",
        param="response_id",
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", stored_response, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/input_items", stored_response, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", stored_response, methods=["POST"]),
    ]
