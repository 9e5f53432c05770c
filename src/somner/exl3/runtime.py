"""The ExLlamaV3 engine of one model: loads it through a `Generator`, chooses its chat template, and turns
requests into jobs for the scheduler, exactly as `engine/runtime.py` does for llama.cpp (the worker's HTTP
surface is the same: `engine/server.py` over `engine/served.py`).

Request preparation (template, tools, tokenizing, the context check, the sampler settings and the
constrained-decoding filter) happens on the caller's thread, so a bad request is refused with a 400 before
anything is queued.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from somner.core import (
    AdapterScale,
    ChatRequest,
    CompletionRequest,
    EmbeddingResult,
    RerankResult,
    SamplingParams,
    ToolChoiceMode,
    check_tools,
)
from somner.core.reasoning import ReasoningFormat, Thought, closed_thought, resolve_format
from somner.engine import tools as tooling
from somner.engine.templates import ChatTemplate, choose_template
from somner.errors import BadRequest, ContextLengthExceeded
from somner.exl3.folder import architecture_family
from somner.exl3.generator import Constraint, Exl3Config, Exl3Job, Generator, GeneratorFactory
from somner.exl3.sampling import sampling_for
from somner.exl3.scheduler import Scheduler, Sink

log = logging.getLogger(__name__)


class Vocabulary:
    """The generator's tokenizer as `/tokenize` and `/detokenize` use it (llama.cpp's names)."""

    def __init__(self, generator: Generator) -> None:
        self._generator = generator
        self.n_vocab = generator.info.vocab_size
        self.n_embd = generator.info.hidden_size

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return self._generator.encode(text, add_bos=add_special, special=parse_special)

    def piece(self, token: int, *, special: bool = False) -> bytes:
        return self._generator.decode([token], special=special).encode("utf-8")

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return self._generator.decode(tokens, special=special)

    def valid_token(self, token: int) -> bool:
        return 0 <= token < self.n_vocab


def _constraint(sampling: SamplingParams) -> Constraint | None:
    if sampling.grammar is not None:
        return Constraint(gbnf=sampling.grammar)
    if sampling.json_schema is not None:
        return Constraint(json_schema=sampling.json_schema)
    if sampling.json_mode:
        return Constraint(json_schema={"type": "object"})
    return None


class Engine:
    def __init__(
        self,
        config: Exl3Config,
        sink: Sink,
        factory: GeneratorFactory,
        *,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        progress = on_progress or (lambda _progress: None)
        progress(0.0)  # (the gateway learns at once that the load has begun: it can take minutes)
        self.generator = factory(config, progress)
        info = self.generator.info
        try:
            label, source = choose_template(
                config.template, info.chat_template, architecture_family(info.architecture), self._is_special_token
            )
            label = "model" if label == "gguf" else label  # (the folder's own: tokenizer_config.json)
            self.template: ChatTemplate | None = ChatTemplate(
                source, bos_token=info.bos_text, eos_token=info.eos_text, label=label
            )
        except BaseException:
            self.generator.close()
            raise
        self.model = Vocabulary(self.generator)
        self.n_ctx = info.max_seq_len
        self.scheduler = Scheduler(self.generator, sink, slots=config.max_batch_size)
        log.info(
            "model %s loaded: %s, template %s, max_seq_len %d, cache %d tokens (%s/%s), %d sequences at once",
            config.model_id,
            info.description,
            label,
            self.n_ctx,
            info.cache_size,
            config.cache_k,
            config.cache_v,
            config.max_batch_size,
        )

    def _is_special_token(self, text: str) -> bool:
        tokens = self.generator.encode(text, add_bos=False, special=True)
        return len(tokens) == 1 and self.generator.decode(tokens, special=False) == ""

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()
        self.generator.close()

    def info(self) -> dict[str, Any]:
        info = self.generator.info
        return {
            "id": self.config.model_id,
            "path": self.config.model_path.name,
            "engine": "exllamav3",
            "architecture": info.architecture,
            "description": info.description,
            "n_ctx": self.n_ctx,
            "n_ctx_train": info.trained_context,
            "n_embd": info.hidden_size,
            "n_vocab": info.vocab_size,
            "parallel": self.config.max_batch_size,
            "cache_size": info.cache_size,
            "cache_type_k": self.config.cache_k,
            "cache_type_v": self.config.cache_v,
            "size_bytes": info.size_bytes,
            "template": self.template.label if self.template else None,
            "mode": "generate",
        }

    # -- preparing requests (caller's thread) -----------------------------------------------------------

    def tokenize_prompt(self, text: str) -> list[int]:
        info = self.generator.info
        add_bos = info.add_bos and not (info.bos_text and text.startswith(info.bos_text))
        return self.generator.encode(text, add_bos=add_bos, special=True)

    def render_chat(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        assert self.template is not None
        if not request.messages:
            raise BadRequest("messages must not be empty", param="messages")
        check_tools(request.tools, request.tool_choice)
        form = resolve_format(request.reasoning.format, self.template.source)
        enabled = request.reasoning.enabled if form is not ReasoningFormat.NONE else None
        prompt = self.template.render(
            request.messages,
            tools=request.tools,
            tool_choice=request.tool_choice,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enabled,
            reasoning_effort=request.reasoning.effort if form is not ReasoningFormat.NONE else None,
        )
        return closed_thought(prompt, form) if enabled is False and add_generation_prompt else prompt

    def chat_jobs(self, request: ChatRequest, *, choices: int | None = None) -> list[Exl3Job]:
        """One job per choice (`request.n`, or `choices`), all of the same prompt (rendered once)."""
        _check_adapters(request.lora)
        if any(message.images for message in request.messages):
            raise BadRequest(
                f"'{self.config.model_id}' runs on the exllamav3 engine, which reads text only (vision needs a GGUF "
                "model with an `mmproj`).",
                param="messages",
                code="unsupported",
            )
        shaped = request.tool_choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION)
        if shaped or request.sampling.json_mode or request.sampling.json_schema is not None:
            # (output held to a shape from its first token cannot open with a thought: see engine/runtime.py)
            request = dataclasses.replace(request, reasoning=dataclasses.replace(request.reasoning, enabled=False))
        prompt = self.render_chat(request)
        forced = None
        if shaped:
            if request.sampling.grammar is not None:
                raise BadRequest("A forced tool call cannot be combined with 'grammar'.", param="grammar")
            shown = tooling.offered(request.tools, request.tool_choice)
            forced = Constraint(gbnf=tooling.forced_grammar(shown, parallel=request.parallel_tool_calls))
        tokens = self.tokenize_prompt(prompt)
        jobs = self._jobs(tokens, request.sampling, "messages", request.n if choices is None else choices, forced)
        assert self.template is not None
        form = resolve_format(request.reasoning.format, self.template.source)
        if request.reasoning.enabled is not False and form is not ReasoningFormat.NONE:
            thought = Thought.of(form, prompt)  # (split by the server, as for llama.cpp; no thinking budget here)
            for job in jobs:
                job.thought = thought
        return jobs

    def completion_jobs(self, request: CompletionRequest, *, choices: int | None = None) -> list[Exl3Job]:
        _check_adapters(request.lora)
        if isinstance(request.prompt, str):
            tokens = self.tokenize_prompt(request.prompt)
        else:
            bad = next((t for t in request.prompt if not self.model.valid_token(t)), None)
            if bad is not None:
                raise BadRequest(f"prompt token {bad} is outside the vocabulary", param="prompt")
            tokens = list(request.prompt)
        if not tokens:
            raise BadRequest("the prompt is empty", param="prompt")
        return self._jobs(tokens, request.sampling, "prompt", request.n if choices is None else choices, None)

    def _jobs(
        self, tokens: list[int], sampling: SamplingParams, param: str, choices: int, forced: Constraint | None
    ) -> list[Exl3Job]:
        """Jobs for the choices of one prompt; with a seed, choice i draws with seed + i."""
        jobs = []
        for i in range(max(1, choices)):
            own = sampling
            if i and sampling.seed is not None:
                own = dataclasses.replace(sampling, seed=sampling.seed + i)
            jobs.append(self._job(tokens, own, param, forced))
        return jobs

    def _job(self, tokens: list[int], sampling: SamplingParams, param: str, forced: Constraint | None) -> Exl3Job:
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your request has "
                f"{len(tokens)} prompt tokens, leaving no room for output.",
                param=param,
            )
        room = self.n_ctx - len(tokens)
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        settings = sampling_for(sampling, self.model.n_vocab)
        constraint = forced or _constraint(sampling)
        job_filter = None
        if constraint is not None:
            try:
                job_filter = self.generator.make_filter(constraint)
            except ValueError as exc:
                if constraint.json_schema is not None:
                    raise BadRequest(
                        f"The JSON schema cannot be enforced: {exc}", param="response_format", code="invalid_schema"
                    ) from exc
                raise BadRequest(f"The grammar cannot be used: {exc}", param="grammar") from exc
        return Exl3Job(
            prompt=tokens,
            max_tokens=max_tokens,
            sampling=settings,
            stop_tokens=frozenset() if sampling.ignore_eos else self.generator.info.stop_tokens,
            stop=sampling.stop,
            banned_strings=sampling.banned_strings,
            filter=job_filter,
        )

    async def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        raise BadRequest(
            f"'{self.config.model_id}' runs on the exllamav3 engine, which serves no embeddings",
            param="model",
            code="unsupported",
        )

    async def rerank(self, query: str, documents: list[str]) -> RerankResult:
        raise BadRequest(
            f"'{self.config.model_id}' has no ranking head: the exllamav3 engine serves no rerankers",
            param="model",
            code="unsupported",
        )


def _check_adapters(requested: Sequence[AdapterScale]) -> None:
    """ExLlamaV3 applies its LoRA adapters to every job alike: a request cannot choose them or their scales."""
    if requested:
        raise BadRequest(
            "The exllamav3 engine applies the model's LoRA adapters (its `loras`) to every request; a request "
            "cannot choose adapters or scales.",
            param="lora",
            code="unsupported",
        )
