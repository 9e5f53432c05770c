"""`POST /api/tokenize` and `POST /api/detokenize`: a model's tokenizer in the Ollama dialect (the shape of the
tokenizer endpoints proposed for Ollama: `{"model", "text"}` → `{"model", "tokens"}` and back). Any model whose
engine tokenizes answers them, rerankers and embedding models too; they count against rate limits like any call."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.handlers import json_response, read_request, services_of
from somner.api.ollama import lookup
from somner.api.ollama.generation import ollama_endpoint
from somner.wire.ollama import decode, schemas


@ollama_endpoint
async def tokenize(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.TokenizeRequest, raw)
    model = lookup.model_name(services.registry, wire.model)
    call = await serving.tokenizing(request, services, model, "ollama", len(raw))
    tokens = await serving.tokenized(request, call, lambda tokenizer: tokenizer.tokenize(wire.text))
    return json_response({"model": wire.model, "tokens": tokens}, call.ticket.headers)


@ollama_endpoint
async def detokenize(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(schemas.DetokenizeRequest, raw)
    model = lookup.model_name(services.registry, wire.model)
    call = await serving.tokenizing(request, services, model, "ollama", len(raw))
    text = await serving.tokenized(request, call, lambda tokenizer: tokenizer.detokenize(wire.tokens))
    return json_response({"model": wire.model, "text": text}, call.ticket.headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/tokenize", tokenize, methods=["POST"]),
        Route("/api/detokenize", detokenize, methods=["POST"]),
    ]
