"""`POST /tokenize` and `POST /detokenize`, with llama-server's names and bodies, plus `model` to pick the engine
(default: the server's model). They need a key like every other route and count against its rate limit."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.handlers import json_response, read_request, services_of
from somner.api.openai.routes import openai_endpoint
from somner.wire.openai import decode, schemas


@openai_endpoint
async def tokenize(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.TokenizeRequest, raw)
    call = await serving.tokenizing(request, services, wire.model, "openai", len(raw))
    tokens = await serving.tokenized(
        request,
        call,
        lambda tokenizer: tokenizer.tokenize(wire.content, add_special=wire.add_special, with_pieces=wire.with_pieces),
    )
    return json_response({"tokens": tokens}, call.ticket.headers)


@openai_endpoint
async def detokenize(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.DetokenizeRequest, raw)
    call = await serving.tokenizing(request, services, wire.model, "openai", len(raw))
    content = await serving.tokenized(request, call, lambda tokenizer: tokenizer.detokenize(wire.tokens))
    return json_response({"content": content}, call.ticket.headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
    ]
