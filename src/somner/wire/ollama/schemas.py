"""Ollama request bodies as pydantic models, in the order Ollama's API documents their fields.

Tolerant of clients: unknown fields are ignored. Strict about types: a string where a number belongs is a 400
naming the parameter (`options.temperature`). Fields Ollama accepts but Somner cannot honour are declared (so a
wrong type is still caught) and either ignored or refused in `decode`, as each field's comment says.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from somner.wire import sampling
from somner.wire.body import RequestBody, WireObject


class Options(WireObject):
    """Ollama's `options`. Sampling options map onto Somner's sampling parameters; the rest configure how Ollama
    loads a model, which Somner's configuration decides, so they are accepted and ignored."""

    # Sampling (honoured):
    num_predict: int | None = Field(default=None, ge=-2, le=sampling.INT32)  # -1: unlimited, -2: fill the context
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    top_k: sampling.TopK | None = None
    top_p: sampling.Probability | None = None
    min_p: sampling.Probability | None = None
    typical_p: sampling.Typical | None = None
    repeat_penalty: sampling.RepeatPenalty | None = None
    repeat_last_n: sampling.Window | None = None
    presence_penalty: sampling.Penalty | None = None
    frequency_penalty: sampling.Penalty | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    tfs_z: sampling.Probability | None = None  # (Ollama dropped it with llama.cpp; honoured here)
    mirostat: sampling.Mirostat | None = None
    mirostat_tau: sampling.MirostatTau | None = None
    mirostat_eta: sampling.MirostatEta | None = None
    # Extensions: llama.cpp's other samplers, under llama-server's names.
    top_n_sigma: sampling.Sigma | None = None
    xtc_probability: sampling.Probability | None = None
    xtc_threshold: sampling.Probability | None = None
    dynatemp_range: sampling.TemperatureRange | None = None
    dynatemp_exponent: sampling.Exponent | None = None
    dry_multiplier: sampling.DryMultiplier | None = None
    dry_base: sampling.DryBase | None = None
    dry_allowed_length: sampling.AllowedLength | None = None
    dry_penalty_last_n: sampling.Window | None = None
    dry_sequence_breakers: sampling.Breakers | None = None
    # Load-time and legacy options (ignored: the model's configuration in Somner sets these):
    num_ctx: int | None = Field(default=None, ge=1, le=sampling.INT32)
    num_keep: int | None = Field(default=None, ge=-sampling.INT32, le=sampling.INT32)
    num_batch: int | None = Field(default=None, ge=-sampling.INT32, le=sampling.INT32)
    num_gpu: int | None = Field(default=None, ge=-sampling.INT32, le=sampling.INT32)
    main_gpu: int | None = Field(default=None, ge=-sampling.INT32, le=sampling.INT32)
    num_thread: int | None = Field(default=None, ge=-sampling.INT32, le=sampling.INT32)
    numa: bool | None = None
    low_vram: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    penalize_newline: bool | None = None


FormatInput = str | dict[str, Any]
KeepAlive = float | str | None


class FunctionCall(WireObject):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)  # an object, not JSON text (unlike OpenAI)


class ToolCall(WireObject):
    id: str | None = None  # newer Ollama versions send one
    function: FunctionCall


class ChatMessage(WireObject):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None  # a thinking model's reasoning, from an earlier turn (dropped: not re-sent)
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # on role "tool": the tool whose result this is
    tool_call_id: str | None = None


class FunctionDefinition(WireObject):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ChatTool(WireObject):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class _Generation(RequestBody):
    model: str = Field(min_length=1)
    format: FormatInput | None = None
    options: Options | None = None
    stream: bool = True  # Ollama streams unless told not to
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[ChatTool] | None = None


class GenerateRequest(_Generation):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[sampling.TokenId] | None = None
    raw: bool = False
    images: list[str] | None = None


class EmbedRequest(RequestBody):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(default_factory=list)
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1, le=sampling.INT32)
    options: Options | None = None
    keep_alive: KeepAlive = None


class TokenizeRequest(RequestBody):
    """`/api/tokenize` (the shape of Ollama's proposed tokenizer endpoint): the token ids of `text`."""

    model: str = Field(min_length=1)
    text: str
    keep_alive: KeepAlive = None


class DetokenizeRequest(RequestBody):
    """`/api/detokenize`: the text of token ids."""

    model: str = Field(min_length=1)
    tokens: list[sampling.TokenId]
    keep_alive: KeepAlive = None


class EmbeddingsRequest(RequestBody):
    """The legacy `/api/embeddings`: one prompt, one vector."""

    model: str = Field(min_length=1)
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAlive = None


class ModelRequest(RequestBody):
    """`/api/show` and `/api/delete`: `model`, or the older `name`."""

    model: str | None = Field(default=None, min_length=1)
    name: str | None = Field(default=None, min_length=1)
    verbose: bool = False


class PullRequest(RequestBody):
    model: str | None = Field(default=None, min_length=1)
    name: str | None = Field(default=None, min_length=1)
    insecure: bool = False
    stream: bool = True


class CopyRequest(RequestBody):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)
