"""OpenAI request bodies as pydantic models, in the spec's field order. Extensions are marked.

Tolerant of clients: unknown fields are kept aside (`model_extra`) and ignored. Strict about types: a string
where a number belongs is a 400 naming the parameter, as OpenAI answers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field

from somner.wire import sampling
from somner.wire.body import RequestBody, WireObject


class TextPart(WireObject):
    type: Literal["text"]
    text: str


class ImagePart(WireObject):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class AudioPart(WireObject):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(WireObject):
    type: Literal["file"]
    file: dict[str, Any]


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]


FUNCTION_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class FunctionCall(WireObject):
    name: str
    arguments: str


class MessageToolCall(WireObject):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(WireObject):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None  # legacy function calling: the assistant's one call


class FunctionDefinition(WireObject):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(WireObject):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(WireObject):
    name: str


class NamedToolChoice(WireObject):
    type: Literal["function"]
    function: NamedFunction


ToolChoiceInput = Literal["none", "auto", "required"] | NamedToolChoice
FunctionCallInput = Literal["none", "auto"] | NamedFunction  # legacy: `function_call` of a request


class StreamOptions(WireObject):
    include_usage: bool = False


class JsonSchemaFormat(WireObject):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireObject):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class LoraScale(WireObject):
    """Extension (llama-server's `lora`): one of the model's LoRA adapters at a scale, by position or by name."""

    id: int | None = Field(default=None, ge=0, le=1023)
    name: str | None = Field(default=None, min_length=1, max_length=256)
    scale: float = Field(default=1.0, ge=-100.0, le=100.0)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]
ReasoningFormatName = Literal["none", "auto", "deepseek", "harmony"]


class _Sampling(RequestBody):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    max_tokens: sampling.Tokens | None = Field(default=None, validation_alias=AliasChoices("max_tokens", "max_length"))
    n: int | None = Field(default=None, ge=1, le=sampling.MAX_CHOICES)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    # Extensions: llama.cpp's samplers, under llama-server's names and TabbyAPI's (names and aliases). Where both
    # name a field, the first name listed that the body has wins.
    top_k: sampling.TopK | None = None
    min_p: sampling.Probability | None = None
    typical_p: sampling.Typical | None = Field(default=None, validation_alias=AliasChoices("typical_p", "typical"))
    top_a: sampling.Probability | None = None
    tfs: sampling.Probability | None = Field(default=None, validation_alias=AliasChoices("tfs", "tfs_z"))
    top_n_sigma: sampling.Sigma | None = None
    xtc_probability: sampling.Probability | None = None
    xtc_threshold: sampling.Probability | None = None
    temperature_last: bool | None = None
    dynatemp_range: sampling.TemperatureRange | None = None
    dynatemp_exponent: sampling.Exponent | None = Field(
        default=None, validation_alias=AliasChoices("dynatemp_exponent", "temp_exponent")
    )
    min_temp: sampling.TemperatureRange | None = Field(
        default=None, validation_alias=AliasChoices("min_temp", "dynatemp_low")
    )
    max_temp: sampling.TemperatureRange | None = Field(
        default=None, validation_alias=AliasChoices("max_temp", "dynatemp_high")
    )
    repeat_penalty: sampling.RepeatPenalty | None = Field(
        default=None, validation_alias=AliasChoices("repeat_penalty", "repetition_penalty", "rep_pen")
    )
    repeat_last_n: sampling.Window | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "repeat_last_n", "penalty_range", "repetition_range", "repetition_penalty_range", "rep_pen_range"
        ),
    )
    dry_multiplier: sampling.DryMultiplier | None = None
    dry_base: sampling.DryBase | None = None
    dry_allowed_length: sampling.AllowedLength | None = None
    dry_range: sampling.Window | None = Field(
        default=None, validation_alias=AliasChoices("dry_range", "dry_penalty_last_n")
    )
    dry_sequence_breakers: sampling.Breakers | None = None
    mirostat: sampling.Mirostat | None = Field(default=None, validation_alias=AliasChoices("mirostat", "mirostat_mode"))
    mirostat_tau: sampling.MirostatTau | None = None
    mirostat_eta: sampling.MirostatEta | None = None
    banned_strings: sampling.BannedStrings | None = None
    banned_tokens: sampling.TokenIds | None = Field(
        default=None, validation_alias=AliasChoices("banned_tokens", "custom_token_bans")
    )
    allowed_tokens: sampling.TokenIds | None = Field(
        default=None, validation_alias=AliasChoices("allowed_tokens", "allowed_token_ids")
    )
    min_tokens: sampling.MinTokens | None = Field(
        default=None, validation_alias=AliasChoices("min_tokens", "min_length")
    )
    grammar: str | None = None
    ignore_eos: bool | None = Field(default=None, validation_alias=AliasChoices("ignore_eos", "ban_eos_token"))
    keep_alive: float | str | None = None  # Ollama's keep_alive, honoured here too
    lora: Annotated[list[LoraScale], Field(max_length=64)] | None = Field(
        default=None, validation_alias=AliasChoices("lora", "loras")
    )


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    max_completion_tokens: sampling.Tokens | None = None
    parallel_tool_calls: bool | None = None
    tool_choice: ToolChoiceInput | None = None
    tools: Annotated[list[ChatTool], Field(max_length=128)] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # Deprecated by OpenAI, still sent by older clients: legacy function calling (served as tools, answered in
    # the legacy shape; see decode.uses_functions).
    functions: Annotated[list[FunctionDefinition], Field(max_length=128)] | None = None
    function_call: FunctionCallInput | None = None
    reasoning_effort: ReasoningEffort | None = None
    # Extensions (llama-server's and vLLM's names): how a reasoning model's thinking is split from its answer, the
    # most tokens it may think (-1: no limit, 0: no thinking), and the template's switch (`enable_thinking`).
    reasoning_format: ReasoningFormatName | None = None
    reasoning_budget: int | None = Field(
        default=None, ge=-1, le=1_000_000, validation_alias=AliasChoices("reasoning_budget", "thinking_budget")
    )
    chat_template_kwargs: dict[str, Any] | None = None


PromptInput = str | list[str] | list[sampling.TokenId] | list[list[sampling.TokenId]]


class CompletionRequest(_Sampling):
    prompt: PromptInput
    echo: bool | None = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None


class EmbeddingRequest(RequestBody):
    model: str = Field(min_length=1)
    input: PromptInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=sampling.INT32)
    user: str | None = None
    keep_alive: float | str | None = None


# Extensions: llama-server's tokenizer endpoints, plus `model` to pick the engine (default: the server's model).


class TokenizeRequest(RequestBody):
    model: str | None = Field(default=None, min_length=1)
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(RequestBody):
    model: str | None = Field(default=None, min_length=1)
    tokens: list[sampling.TokenId]
