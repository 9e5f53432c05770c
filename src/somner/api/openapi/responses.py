"""What the routes answer, as schemas for the OpenAPI document (the routes build these bodies in `wire/*/encode`).

Only the fields every answer carries are required; answers may carry more (extensions, optional fields), so every
object allows extra properties. The error envelopes are exact: each dialect renders all of its errors through one
function (`wire/<dialect>/encode.error_body`), and these mirror them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors, one envelope per dialect --


class OpenAIErrorDetail(_Answer):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(_Answer):
    """OpenAI's envelope (also the admin routes', Somner's own)."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(_Answer):
    type: str
    message: str


class AnthropicErrorResponse(_Answer):
    type: Literal["error"]
    error: AnthropicErrorDetail


class OllamaErrorResponse(_Answer):
    error: str


class KoboldErrorDetail(_Answer):
    msg: str
    type: str


class KoboldErrorResponse(_Answer):
    detail: KoboldErrorDetail


class TabbyErrorResponse(_Answer):
    """TabbyAPI's (FastAPI's) shape."""

    detail: str


# -- OpenAI --


class ModelCard(_Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelListResponse(_Answer):
    object: Literal["list"]
    data: list[ModelCard]


class Usage(_Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionMessage(_Answer):
    role: Literal["assistant"]
    content: str | None


class ChatCompletionChoice(_Answer):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None


class ChatCompletionResponse(_Answer):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage


class CompletionChoice(_Answer):
    index: int
    text: str
    finish_reason: str | None


class CompletionResponse(_Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Embedding(_Answer):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingResponse(_Answer):
    object: Literal["list"]
    data: list[Embedding]
    model: str


class TokenPiece(_Answer):
    id: int
    piece: str | list[int]  # (its bytes, when they are not UTF-8 on their own)


class TokenizeResponse(_Answer):
    """Token ids, or ids with their text (`with_pieces`)."""

    tokens: list[int] | list[TokenPiece]


class DetokenizeResponse(_Answer):
    content: str


class ResponseObject(_Answer):
    """The Responses API's response object."""

    id: str
    object: Literal["response"]
    status: str
    output: list[dict[str, Any]]


# -- Anthropic --


class AnthropicUsage(_Answer):
    input_tokens: int
    output_tokens: int


class MessageResponse(_Answer):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[dict[str, object]]
    model: str
    stop_reason: str | None
    usage: AnthropicUsage


class CountTokensResponse(_Answer):
    input_tokens: int


# -- Ollama --


class OllamaMessage(_Answer):
    role: str
    content: str


class OllamaChatResponse(_Answer):
    model: str
    created_at: str
    message: OllamaMessage
    done: bool


class OllamaGenerateResponse(_Answer):
    model: str
    created_at: str
    response: str
    done: bool


class OllamaModelList(_Answer):
    models: list[dict[str, object]]


class OllamaVersion(_Answer):
    version: str


class OllamaEmbedResponse(_Answer):
    model: str
    embeddings: list[list[float]]


class OllamaEmbeddingsResponse(_Answer):
    embedding: list[float]


class OllamaStatus(_Answer):
    status: str


# -- KoboldAI --


class KoboldResult(_Answer):
    text: str


class KoboldGenerateResponse(_Answer):
    results: list[KoboldResult]


class KoboldValue(_Answer):
    """Kobold's one-value answers: `{"result": ...}` or `{"value": ...}`."""


# -- any other JSON object --


class JsonObject(_Answer):
    """A JSON object (fields as the route's section of the README describes)."""
