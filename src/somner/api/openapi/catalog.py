"""Which schemas belong to which route: the table the OpenAPI document is assembled from.

Routes read their bodies themselves (`wire.body.parse` with the dialect's request schema), so nothing can be
inferred from a handler's signature; each route is listed here with the request schema its handler parses, its
answer's schema and media types, and its query parameters. `tests/api/test_openapi.py` fails when a route of the
app has no entry, so a new route must come with its line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from somner.api.admin.keys import KeyCreate, KeyUpdate, UserCreate
from somner.api.admin.models import LoadRequest
from somner.api.openapi import responses as r
from somner.wire import rerank
from somner.wire.anthropic import schemas as anthropic
from somner.wire.kobold import schemas as kobold
from somner.wire.ollama import schemas as ollama
from somner.wire.openai import schemas as openai
from somner.wire.openai.responses import schemas as openai_responses
from somner.wire.tabby import schemas as tabby

JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
TEXT = "text/plain"


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """One method of one route, as the OpenAPI document shows it."""

    method: str
    path: str
    tag: str
    summary: str
    request: type[BaseModel] | None = None
    body_required: bool = True
    answer: type[BaseModel] | None = None  # None: any JSON (or the media type's own text)
    media: tuple[str, ...] = (JSON,)
    status: int = 200
    query: tuple[Query, ...] = ()
    public: bool = False  # answered without an API key (the guard's public list)
    error_media: str = JSON  # errors: the dialect's JSON envelope (the console's pages answer theirs as text)


def _openai() -> list[Operation]:
    tag = "OpenAI"
    return [
        Operation("GET", "/v1/models", tag, "List the models this key may use", answer=r.ModelListResponse),
        Operation("GET", "/v1/models/{model_id}", tag, "One model", answer=r.ModelCard),
        Operation(
            "POST",
            "/v1/chat/completions",
            tag,
            "Chat completion (streamed as SSE with `stream: true`)",
            request=openai.ChatCompletionRequest,
            answer=r.ChatCompletionResponse,
            media=(JSON, SSE),
        ),
        Operation(
            "POST",
            "/v1/completions",
            tag,
            "Text completion (legacy; streamed as SSE with `stream: true`)",
            request=openai.CompletionRequest,
            answer=r.CompletionResponse,
            media=(JSON, SSE),
        ),
        Operation(
            "POST", "/v1/embeddings", tag, "Embeddings", request=openai.EmbeddingRequest, answer=r.EmbeddingResponse
        ),
        Operation(
            "POST",
            "/v1/responses",
            tag,
            "Responses API (stateless: `store` is not kept)",
            request=openai_responses.ResponseRequest,
            answer=r.ResponseObject,
            media=(JSON, SSE),
        ),
        Operation("GET", "/v1/responses/{response_id}", tag, "A stored response (none are stored: 404)"),
        Operation("DELETE", "/v1/responses/{response_id}", tag, "Delete a stored response (none are stored: 404)"),
        Operation("GET", "/v1/responses/{response_id}/input_items", tag, "A stored response's input (404)"),
        Operation("POST", "/v1/responses/{response_id}/cancel", tag, "Cancel a background response (404)"),
        Operation(
            "POST",
            "/tokenize",
            tag,
            "Tokenize text (llama-server's extension)",
            request=openai.TokenizeRequest,
            answer=r.TokenizeResponse,
        ),
        Operation(
            "POST",
            "/detokenize",
            tag,
            "Token ids to text (llama-server's extension)",
            request=openai.DetokenizeRequest,
            answer=r.DetokenizeResponse,
        ),
        *(
            Operation(
                "POST",
                path,
                tag,
                "Documents sorted by relevance to a query (reranker models; Jina / Cohere shape)",
                request=rerank.RerankRequest,
                answer=r.JsonObject,
            )
            for path in ("/v1/rerank", "/rerank")
        ),
    ]


def _anthropic() -> list[Operation]:
    tag = "Anthropic"
    return [
        Operation(
            "POST",
            "/v1/messages",
            tag,
            "Create a message (streamed as SSE with `stream: true`)",
            request=anthropic.MessageCreateRequest,
            answer=r.MessageResponse,
            media=(JSON, SSE),
        ),
        Operation(
            "POST",
            "/v1/messages/count_tokens",
            tag,
            "Count a message's input tokens",
            request=anthropic.CountTokensRequest,
            answer=r.CountTokensResponse,
        ),
    ]


def _kobold() -> list[Operation]:
    tag = "KoboldAI"
    operations: list[Operation] = []
    for prefix in ("/api/v1", "/api/latest"):
        operations += [
            Operation("GET", f"{prefix}/model", tag, "The loaded model's name", answer=r.KoboldValue),
            Operation("GET", f"{prefix}/info/version", tag, "KoboldAI API version", answer=r.KoboldValue),
            Operation("GET", f"{prefix}/config/max_context_length", tag, "Context length", answer=r.KoboldValue),
            Operation("GET", f"{prefix}/config/max_length", tag, "Default output length", answer=r.KoboldValue),
            Operation("GET", f"{prefix}/config/soft_prompt", tag, "Soft prompt (none)", answer=r.KoboldValue),
            Operation("GET", f"{prefix}/config/soft_prompts_list", tag, "Soft prompts (none)", answer=r.KoboldValue),
            Operation(
                "POST",
                f"{prefix}/generate",
                tag,
                "Generate text",
                request=kobold.GenerateRequest,
                answer=r.KoboldGenerateResponse,
            ),
        ]
    return [
        *operations,
        Operation("GET", "/api/extra/version", tag, "KoboldCpp version and features", answer=r.KoboldValue),
        Operation("GET", "/api/extra/true_max_context_length", tag, "Context length", answer=r.KoboldValue),
        Operation("GET", "/api/extra/perf", tag, "Timings of the last generation", answer=r.JsonObject),
        Operation(
            "POST",
            "/api/extra/generate/stream",
            tag,
            "Generate text, streamed as SSE",
            request=kobold.GenerateRequest,
            media=(SSE,),
        ),
        Operation("GET", "/api/extra/generate/check", tag, "Text generated so far", answer=r.KoboldGenerateResponse),
        Operation(
            "POST",
            "/api/extra/generate/check",
            tag,
            "Text generated so far, for one genkey",
            request=kobold.GenkeyRequest,
            body_required=False,
            answer=r.KoboldGenerateResponse,
        ),
        Operation(
            "POST",
            "/api/extra/abort",
            tag,
            "Abort a generation",
            request=kobold.GenkeyRequest,
            body_required=False,
            answer=r.JsonObject,
        ),
        Operation(
            "POST", "/api/extra/tokencount", tag, "Count tokens", request=kobold.TokenCountRequest, answer=r.JsonObject
        ),
        Operation(
            "POST", "/api/extra/tokenize", tag, "Tokenize text", request=kobold.TokenCountRequest, answer=r.JsonObject
        ),
        Operation(
            "POST",
            "/api/extra/detokenize",
            tag,
            "Token ids to text",
            request=kobold.DetokenizeRequest,
            answer=r.JsonObject,
        ),
    ]


def _ollama() -> list[Operation]:
    tag = "Ollama"
    return [
        Operation("GET", "/", tag, "Ollama's liveness probe ('Ollama is running')", media=(TEXT,), public=True),
        Operation("GET", "/api/version", tag, "Version", answer=r.OllamaVersion),
        Operation("GET", "/api/tags", tag, "Models", answer=r.OllamaModelList),
        Operation("POST", "/api/show", tag, "A model's details", request=ollama.ModelRequest, answer=r.JsonObject),
        Operation("GET", "/api/ps", tag, "Loaded models", answer=r.OllamaModelList),
        Operation(
            "POST",
            "/api/chat",
            tag,
            "Chat (streamed as NDJSON unless `stream: false`)",
            request=ollama.ChatRequest,
            answer=r.OllamaChatResponse,
            media=(JSON, NDJSON),
        ),
        Operation(
            "POST",
            "/api/generate",
            tag,
            "Generate (streamed as NDJSON unless `stream: false`)",
            request=ollama.GenerateRequest,
            answer=r.OllamaGenerateResponse,
            media=(JSON, NDJSON),
        ),
        Operation("POST", "/api/embed", tag, "Embeddings", request=ollama.EmbedRequest, answer=r.OllamaEmbedResponse),
        Operation(
            "POST", "/api/tokenize", tag, "Text to token ids", request=ollama.TokenizeRequest, answer=r.JsonObject
        ),
        Operation(
            "POST", "/api/detokenize", tag, "Token ids to text", request=ollama.DetokenizeRequest, answer=r.JsonObject
        ),
        Operation(
            "POST",
            "/api/embeddings",
            tag,
            "Embedding (legacy)",
            request=ollama.EmbeddingsRequest,
            answer=r.OllamaEmbeddingsResponse,
        ),
        Operation(
            "POST",
            "/api/pull",
            tag,
            "Download a model (admin; progress as NDJSON unless `stream: false`)",
            request=ollama.PullRequest,
            answer=r.OllamaStatus,
            media=(JSON, NDJSON),
        ),
        Operation("DELETE", "/api/delete", tag, "Delete a model or alias (admin)", request=ollama.ModelRequest),
        Operation("POST", "/api/copy", tag, "Copy a model under a new name (admin)", request=ollama.CopyRequest),
    ]


def _tabby() -> list[Operation]:
    tag = "TabbyAPI"
    model = Query("model", "Which model (default: the most recently used loaded one).")
    return [
        Operation("GET", "/v1/model", tag, "The current model's card", answer=r.JsonObject, query=(model,)),
        Operation("GET", "/v1/model/list", tag, "Models", answer=r.JsonObject),
        Operation("GET", "/v1/model/draft/list", tag, "Draft models", answer=r.JsonObject),
        Operation(
            "POST",
            "/v1/model/load",
            tag,
            "Load a model (admin; progress as SSE with `stream: true`)",
            request=tabby.ModelLoadRequest,
            answer=r.JsonObject,
            media=(JSON, SSE),
        ),
        Operation("POST", "/v1/model/unload", tag, "Unload (admin)", request=tabby.UnloadRequest, body_required=False),
        Operation("GET", "/v1/lora", tag, "Active LoRA adapters", answer=r.JsonObject, query=(model,)),
        Operation("GET", "/v1/lora/list", tag, "Available LoRA adapters", answer=r.JsonObject),
        Operation("GET", "/v1/loras", tag, "Available LoRA adapters", answer=r.JsonObject),
        Operation("POST", "/v1/lora/load", tag, "Load LoRA adapters (admin)", request=tabby.LoraLoadRequest),
        Operation(
            "POST",
            "/v1/lora/unload",
            tag,
            "Unload LoRA adapters (admin)",
            request=tabby.UnloadRequest,
            body_required=False,
        ),
        Operation("GET", "/v1/template/list", tag, "Chat templates", answer=r.JsonObject),
        Operation("GET", "/v1/templates", tag, "Chat templates", answer=r.JsonObject),
        Operation("POST", "/v1/template/switch", tag, "Switch template (admin)", request=tabby.TemplateSwitchRequest),
        Operation(
            "POST",
            "/v1/template/unload",
            tag,
            "Back to the model's template (admin)",
            request=tabby.UnloadRequest,
            body_required=False,
        ),
        Operation("GET", "/v1/sampling/override/list", tag, "Sampler presets", answer=r.JsonObject),
        Operation("GET", "/v1/sampling/overrides", tag, "Sampler presets", answer=r.JsonObject),
        Operation(
            "POST",
            "/v1/sampling/override/switch",
            tag,
            "Switch sampler preset (admin)",
            request=tabby.SamplerOverrideSwitchRequest,
        ),
        Operation("POST", "/v1/sampling/override/unload", tag, "No sampler preset (admin)"),
        Operation("POST", "/v1/token/encode", tag, "Tokenize", request=tabby.TokenEncodeRequest, answer=r.JsonObject),
        Operation("POST", "/v1/token/decode", tag, "Detokenize", request=tabby.TokenDecodeRequest, answer=r.JsonObject),
        Operation("GET", "/v1/auth/permission", tag, "The key's permission level", answer=r.JsonObject),
        Operation("GET", "/v1/health", tag, "Health (TabbyAPI's)", answer=r.JsonObject, public=True),
    ]


def _admin() -> list[Operation]:
    tag = "Admin"
    return [
        Operation("GET", "/admin/models", tag, "Every model and its state", answer=r.JsonObject),
        Operation("GET", "/admin/models/{model_id}", tag, "One model in detail", answer=r.JsonObject),
        Operation(
            "POST",
            "/admin/models/{model_id}/load",
            tag,
            "Load a model (keep_alive: how long it then stays)",
            request=LoadRequest,
            body_required=False,
            answer=r.JsonObject,
        ),
        Operation("POST", "/admin/models/{model_id}/unload", tag, "Unload a model", answer=r.JsonObject),
        Operation("GET", "/status", tag, "Models and their states (llama-swap's)", answer=r.JsonObject),
        Operation("GET", "/unload", tag, "Unload every model (llama-swap's)", answer=r.JsonObject),
        Operation("POST", "/unload", tag, "Unload every model", answer=r.JsonObject),
        Operation("GET", "/admin/users", tag, "Users", answer=r.JsonObject),
        Operation("POST", "/admin/users", tag, "Add a user", request=UserCreate, answer=r.JsonObject, status=201),
        Operation("DELETE", "/admin/users/{name}", tag, "Remove a user", answer=r.JsonObject),
        Operation(
            "GET",
            "/admin/keys",
            tag,
            "API keys (never their secrets)",
            answer=r.JsonObject,
            query=(Query("all", "'true': revoked keys too.", {"type": "string", "enum": ["true", "false"]}),),
        ),
        Operation("POST", "/admin/keys", tag, "Create a key", request=KeyCreate, answer=r.JsonObject, status=201),
        Operation(
            "POST",
            "/admin/keys/import",
            tag,
            "Import keys ('name: secret' lines, text/plain)",
            answer=r.JsonObject,
            status=201,
            media=(JSON,),
        ),
        Operation("POST", "/admin/keys/{key_id}/rotate", tag, "Rotate a key", answer=r.JsonObject),
        Operation("POST", "/admin/keys/{key_id}/revoke", tag, "Revoke a key", answer=r.JsonObject),
        Operation("DELETE", "/admin/keys/{key_id}", tag, "Revoke a key", answer=r.JsonObject),
        Operation(
            "PATCH",
            "/admin/keys/{key_id}",
            tag,
            "Change a key's limits and quotas",
            request=KeyUpdate,
            answer=r.JsonObject,
        ),
        Operation(
            "GET",
            "/admin/usage",
            tag,
            "Usage totals",
            answer=r.JsonObject,
            query=(
                Query(
                    "by",
                    "Group by user, key, model or day.",
                    {"type": "string", "enum": ["user", "key", "model", "day"]},
                ),
                Query("since", "A duration back from now ('7d', '12h')."),
            ),
        ),
        Operation("GET", "/admin/backends", tag, "Backends and pools", answer=r.JsonObject),
        Operation(
            "GET",
            "/admin/usage/series",
            tag,
            "Usage per hour or day (per key, model or user); CSV with format=csv",
            answer=r.JsonObject,
            media=(JSON, "text/csv"),
            query=(
                Query("since", "A duration back from now ('24h', '7d'); default 24h."),
                Query("bucket", "Bucket size.", {"type": "string", "enum": ["hour", "day"]}),
                Query(
                    "by",
                    "Split by key, model or user (absent: all together).",
                    {"type": "string", "enum": ["key", "model", "user"]},
                ),
                Query("format", "json (default) or csv.", {"type": "string", "enum": ["json", "csv"]}),
            ),
        ),
        Operation(
            "GET",
            "/admin/usage/top",
            tag,
            "The busiest keys, models or users",
            answer=r.JsonObject,
            query=(
                Query("since", "A duration back from now; default 7d."),
                Query("by", "key (default), model or user.", {"type": "string", "enum": ["key", "model", "user"]}),
                Query("limit", "1 to 1000; default 10.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ),
        ),
        Operation(
            "GET",
            "/admin/usage/errors",
            tag,
            "The latest failed requests, newest first",
            answer=r.JsonObject,
            query=(
                Query("since", "A duration back from now; default 7d."),
                Query("limit", "1 to 1000; default 20.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ),
        ),
        Operation(
            "GET",
            "/admin/logs/stream",
            tag,
            "The request log, live (SSE; no prompt text)",
            media=(SSE,),
            query=(
                Query("replay", "'false': skip the recent requests.", {"type": "string", "enum": ["true", "false"]}),
            ),
        ),
    ]


def _server() -> list[Operation]:
    tag = "Server"
    return [
        Operation("GET", "/ping", tag, "Liveness ('pong')", media=(TEXT,), public=True),
        Operation("GET", "/health", tag, "Health in detail (503 while an engine is unwell)", public=True),
        Operation("GET", "/ready", tag, "Readiness (503 until ready)", public=True),
        Operation(
            "GET",
            "/metrics",
            tag,
            "Prometheus metrics (a key with the metrics scope, unless metrics_public)",
            media=(TEXT,),
        ),
        Operation(
            "GET",
            "/usage/series",
            tag,
            "The calling key's own usage per hour or day (any key); CSV with format=csv",
            answer=r.JsonObject,
            media=(JSON, "text/csv"),
            query=(
                Query("since", "A duration back from now ('24h', '7d'); default 24h."),
                Query("bucket", "Bucket size.", {"type": "string", "enum": ["hour", "day"]}),
                Query("by", "Split by model (absent: all together).", {"type": "string", "enum": ["model"]}),
                Query("format", "json (default) or csv.", {"type": "string", "enum": ["json", "csv"]}),
            ),
        ),
        Operation(
            "GET",
            "/usage/errors",
            tag,
            "The calling key's latest failed requests (any key)",
            answer=r.JsonObject,
            query=(
                Query("since", "A duration back from now; default 7d."),
                Query("limit", "1 to 1000; default 20.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ),
        ),
        Operation("GET", "/openapi.json", tag, "This document", public=True),
        Operation("GET", "/docs", tag, "This document as a page", media=("text/html",), public=True),
    ]


def _console() -> list[Operation]:
    tag = "Console"
    html = ("text/html",)
    files = ("text/css", "text/javascript", "application/javascript", "image/svg+xml")
    return [
        Operation("GET", "/ui/", tag, "The web console's sign-in page", media=html, public=True, error_media=TEXT),
        Operation("GET", "/ui/{page}", tag, "A page of the web console", media=html, public=True, error_media=TEXT),
        Operation(
            "GET",
            "/ui/static/{name}",
            tag,
            "The console's script, style and icon",
            media=files,
            public=True,
            error_media=TEXT,
        ),
    ]


def operations() -> list[Operation]:
    """Every operation Somner can serve (a dialect's only when it is in `api_servers`)."""
    return [*_server(), *_openai(), *_anthropic(), *_kobold(), *_ollama(), *_tabby(), *_admin(), *_console()]
