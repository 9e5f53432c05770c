"""`POST /v1/rerank` and `POST /rerank`: the documents sorted by their relevance to a query (the Jina / Cohere shape,
which llama-server also answers). Errors come in the OpenAI shape; a model without a ranking head is refused with a
400 before it is loaded (`models.capabilities`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api import serving
from somner.api.handlers import json_response, read_request, services_of
from somner.api.keep_alive import keep_alive
from somner.api.openai.routes import openai_endpoint
from somner.api.streaming import until_disconnected
from somner.core import Usage
from somner.errors import BadRequest
from somner.models.backends.base import Backend, Reranks
from somner.wire import rerank as wire_rerank
from somner.wire.openai import decode


@openai_endpoint
async def rerank(request: Request) -> Response:
    services = services_of(request)
    raw = await read_request(request)
    wire = decode.parse(wire_rerank.RerankRequest, raw)
    model = wire.model or serving.default_model(services)
    core = wire_rerank.rerank_request(wire, model)
    call = await serving.begin(
        request,
        services,
        model=model,
        dialect="openai",
        route="rerank",
        bytes_in=len(raw),
        keep=keep_alive(request, wire.keep_alive),
    )
    try:
        result = await until_disconnected(request, call.on_engine(lambda backend: _reranker(backend).rerank(core)))
    except BaseException as exc:
        serving.fail(call, exc)
        raise
    call.ticket.usage = Usage(prompt_tokens=result.prompt_tokens)
    call.close(200)
    body = wire_rerank.results(model, result, core.documents, top_n=wire.top_n, return_documents=wire.return_documents)
    return json_response(body, call.ticket.headers)


def _reranker(backend: Backend) -> Reranks:
    if not isinstance(backend, Reranks):
        raise BadRequest("The engine serving this model does not offer reranking.", code="unsupported")
    return backend


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/rerank", rerank, methods=["POST"]),
        Route("/rerank", rerank, methods=["POST"]),
    ]
