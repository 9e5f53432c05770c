"""The engine of one model: loads it, chooses its chat template, turns requests into jobs for the scheduler.

Request preparation (template rendering, tokenizing, checking the context, compiling the grammar) happens on
the caller's thread, so a bad request is refused before anything is queued or streamed; the scheduler thread
only ever sees jobs that fit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from somner.core import (
    IMAGE_MARKER,
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
from somner.engine.adapters import AdapterScales
from somner.engine.config import EngineConfig, Mode
from somner.engine.grammar import grammar_for
from somner.engine.jobs import EmbeddingJob, GenerationJob, Sink
from somner.engine.llama import (
    POOLING_MEAN,
    POOLING_RANK,
    ContextShape,
    LlamaContext,
    LlamaModel,
    supports_gpu_offload,
)
from somner.engine.preload import ModelPreload, open_model
from somner.engine.rerank import pair_tokens
from somner.engine.sampling import Sampler
from somner.engine.scheduler import Scheduler
from somner.engine.speculative import Drafter, check_compatible
from somner.engine.templates import ChatTemplate, choose_template
from somner.engine.thinking import ThinkingBudget
from somner.engine.vision import MARKER, Media, Vision
from somner.errors import BadRequest, ContextLengthExceeded, SomnerError

log = logging.getLogger(__name__)

DEFAULT_CTX_CAP = 4096
_EMBEDDING_SEQUENCES = 16


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        sink: Sink,
        *,
        on_progress: Callable[[float], None] | None = None,
        preloaded: ModelPreload | None = None,
    ) -> None:
        """`preloaded`: the model, already loading since the worker started (preload.py); else loaded here."""
        self.config = config
        self.model = preloaded.result() if preloaded is not None else open_model(config, on_progress)
        if config.gpu_layers != 0 and not supports_gpu_offload():
            log.info("this llama.cpp has no GPU support (or found no GPU): %s runs on the CPU", config.model_id)
        self.mode: Mode = config.mode
        if self.model.ranks:
            self.mode = "rerank"
        elif self.model.pools and config.mode == "both":
            self.mode = "embed"  # (its GGUF declares pooling: an embedding model, as the model listings say)
        scores_only = self.mode in ("embed", "rerank")
        try:
            self.loras = [(self.model.load_lora(path), scale) for path, scale in config.loras]
            self.adapter_names = [path.stem for path, _ in config.loras]
            self.default_scales = tuple(scale for _, scale in config.loras)
            self.template: ChatTemplate | None = None
            if not scores_only:
                label, source = choose_template(
                    config.template, self.model.chat_template, self.model.architecture, self._is_special_token
                )
                self.template = ChatTemplate(
                    source, bos_token=self.model.bos_text, eos_token=self.model.eos_text, label=label
                )
            ctx = config.ctx or min(self.model.n_ctx_train or DEFAULT_CTX_CAP, DEFAULT_CTX_CAP)
            if self.model.n_ctx_train and ctx > self.model.n_ctx_train:
                log.warning("ctx %d exceeds the model's training context %d", ctx, self.model.n_ctx_train)
            self.threads = config.threads or default_threads()
            self.batch = config.batch
            self._embedding_size = min(ctx, DEFAULT_CTX_CAP)
            # An embedding model still gets a minimal generation context: the scheduler's loop runs on it.
            slots, per_slot = (1, 256) if scores_only else (config.parallel, ctx)
            self.ctx = self._context(per_slot * slots, slots, config.batch, embeddings=False)
            self.ctx.set_loras(self.loras)
            self.drafter = self._drafter(per_slot, slots) if config.draft_model is not None else None
            self._embedding_ctx: LlamaContext | None = None
            if scores_only:
                self._embedding_ctx = self._embedding_context()
            self.vision: Vision | None = None
            if config.mmproj is not None and not scores_only:
                self.vision = Vision(config.mmproj, self.model, threads=self.threads, use_gpu=config.gpu_layers != 0)
        except BaseException:
            self.model.close()
            raise
        self.n_ctx = self.ctx.n_ctx_seq
        self.scheduler = Scheduler(
            self.model,
            self.ctx,
            sink,
            batch_size=config.batch,
            embedding_context=None if self.mode == "generate" else self._embedding_context,
            drafter=self.drafter,
            adapters=AdapterScales(self._set_scales, self.default_scales) if self.loras else None,
        )
        log.info(
            "model %s loaded: %s, template %s, ctx %d x %d slots, %d threads, mode %s",
            config.model_id,
            self.model.description,
            self.template.label if self.template else "-",
            self.n_ctx,
            slots,
            self.threads,
            self.mode,
        )

    def _drafter(self, per_slot: int, slots: int) -> Drafter:
        """The draft model and its context: the same slots and context per slot as the model's."""
        assert self.config.draft_model is not None
        # Each slot's guesses join its row in the model's batch, which must hold them all.
        guesses = max(0, min(self.config.draft_tokens, self.config.batch // slots - 1))
        draft = LlamaModel(
            self.config.draft_model,
            gpu_layers=self.config.gpu_layers,
            tensor_split=list(self.config.tensor_split) or None,
            split_mode=self.config.split_mode,
            main_gpu=self.config.main_gpu,
        )
        try:
            check_compatible(self.model, draft)
            ctx = self._context(per_slot * slots, slots, self.config.batch + slots, embeddings=False, model=draft)
        except BaseException:
            draft.close()
            raise
        log.info("draft model %s: up to %d guesses per step", self.config.draft_model.name, guesses)
        return Drafter(draft, ctx, max_tokens=guesses, budget=self.config.batch)

    def _context(
        self, n_ctx: int, n_seq: int, batch: int, *, embeddings: bool, model: LlamaModel | None = None
    ) -> LlamaContext:
        pooling = POOLING_RANK if embeddings and self.mode == "rerank" else POOLING_MEAN
        return LlamaContext(
            model or self.model,
            ContextShape(
                n_ctx=n_ctx,
                n_seq_max=n_seq,
                n_batch=batch,
                n_ubatch=batch,
                threads=self.threads,
                embeddings=embeddings,
                pooling=pooling,
                kv_unified=embeddings,
                swa_full=self.config.swa_full,
                cache_type_k=self.config.cache_type_k,
                cache_type_v=self.config.cache_type_v,
                flash_attn=self.config.flash_attn,
                rope_base=self.config.rope_base,
                rope_scale=self.config.rope_scale,
            ),
        )

    def _is_special_token(self, text: str) -> bool:
        tokens = self.model.tokenize(text, add_special=False, parse_special=True)
        return len(tokens) == 1 and self.model.piece(tokens[0]) == b""

    def _embedding_context(self) -> LlamaContext:
        """The pooled-embedding context (made on first use, or at load for an embedding model)."""
        if self._embedding_ctx is not None:
            return self._embedding_ctx
        ctx = self._context(self._embedding_size, _EMBEDDING_SEQUENCES, self._embedding_size, embeddings=True)
        ctx.set_loras(self.loras)
        return ctx

    @property
    def embedding_limit(self) -> int:
        return self._embedding_size

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()
        if self.drafter is not None:
            self.drafter.close()
        if self.vision is not None:
            self.vision.close()
        self.ctx.close()
        self.model.close()

    def info(self) -> dict[str, Any]:
        return {
            "id": self.config.model_id,
            "path": self.config.model_path.name,
            "architecture": self.model.architecture,
            "description": self.model.description,
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.model.n_ctx_train,
            "n_embd": self.model.n_embd,
            "n_vocab": self.model.n_vocab,
            "parallel": self.config.parallel,
            "size_bytes": self.model.size_bytes,
            "template": self.template.label if self.template else None,
            "mode": self.mode,
            "vision": self.vision is not None,
        }

    # -- preparing requests (caller's thread) -----------------------------------------------------------

    def _generates(self) -> ChatTemplate:
        if self.template is None:
            kind = "a reranker" if self.mode == "rerank" else "an embedding model"
            raise BadRequest(
                f"'{self.config.model_id}' is {kind}: it does not generate text", param="model", code="unsupported"
            )
        return self.template

    def tokenize_prompt(self, text: str) -> list[int]:
        add_bos = self.model.add_bos and not (self.model.bos_text and text.startswith(self.model.bos_text))
        return self.model.tokenize(text, add_special=add_bos, parse_special=True)

    def render_chat(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        """The prompt text of a chat request: its messages and tools through the chat template (for a reasoning
        model whose thinking the request turns off, ending with an empty thought)."""
        template = self._generates()
        if not request.messages:
            raise BadRequest("messages must not be empty", param="messages")
        check_tools(request.tools, request.tool_choice)
        form = self.reasoning_format(request)
        enabled = request.reasoning.enabled if form is not ReasoningFormat.NONE else None
        prompt = template.render(
            request.messages,
            tools=request.tools,
            tool_choice=request.tool_choice,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enabled,
            reasoning_effort=request.reasoning.effort if form is not ReasoningFormat.NONE else None,
        )
        return closed_thought(prompt, form) if enabled is False and add_generation_prompt else prompt

    def reasoning_format(self, request: ChatRequest) -> ReasoningFormat:
        """How the request's output is split: the request's format, else the model's (`auto`: by its template)."""
        source = self.template.source if self.template is not None else None
        return resolve_format(request.reasoning.format, source)

    def _think(self, jobs: list[GenerationJob], request: ChatRequest, prompt: str) -> None:
        """Mark the jobs of a reasoning model's request for splitting, with the request's thinking budget."""
        options = request.reasoning
        form = self.reasoning_format(request)
        if options.enabled is False or form is ReasoningFormat.NONE:
            return
        thought = Thought.of(form, prompt)
        budget = options.budget_tokens
        for job in jobs:
            job.thought = thought
            if budget is not None and not job.sampler.constrained:
                close = self.model.tokenize(thought.close_text, add_special=False, parse_special=True)
                job.thinking = ThinkingBudget(budget, close, thought)

    def prepare_chat(self, request: ChatRequest) -> GenerationJob:
        """The job of a chat request's first choice (see `chat_jobs`)."""
        return self.chat_jobs(request, choices=1)[0]

    def chat_jobs(self, request: ChatRequest, *, choices: int | None = None) -> list[GenerationJob]:
        """One job per choice (`request.n`, or `choices`), all of the same prompt (rendered once)."""
        # Output held to a shape from its first token (a forced call, JSON) cannot open with a thought: such a
        # request gets a reasoning model's answer without thinking. (A raw `grammar` is the client's to shape.)
        forced = request.tool_choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION)
        if forced or request.sampling.json_mode or request.sampling.json_schema is not None:
            request = dataclasses.replace(request, reasoning=dataclasses.replace(request.reasoning, enabled=False))
        prompt = self.render_chat(request)
        grammar = None
        if forced:
            if request.sampling.grammar is not None:
                raise BadRequest("A forced tool call cannot be combined with 'grammar'.", param="grammar")
            shown = tooling.offered(request.tools, request.tool_choice)
            grammar = tooling.forced_grammar(shown, parallel=request.parallel_tool_calls)
        images = [image for message in request.messages for image in message.images]
        if any(image.url is not None for image in images):
            raise BadRequest("Image URLs are fetched by the gateway: send the engine the image data.", param="messages")
        tokens, media = self._see(prompt, [i.data for i in images]) if images else (self.tokenize_prompt(prompt), [])
        count = request.n if choices is None else choices
        jobs = self._jobs(tokens, request.sampling, "messages", count, grammar, media=tuple(media))
        self._think(jobs, request, prompt)
        return self._with_adapters(jobs, request.lora)

    def _see(self, prompt: str, images: list[bytes]) -> tuple[list[int], list[Media]]:
        """The tokens of a prompt with images, and the images' embeddings (vision.py)."""
        if self.vision is None:
            raise BadRequest(
                f"'{self.config.model_id}' reads text only: it has no projector (`mmproj`) for images.",
                param="messages",
                code="unsupported",
            )
        if self.drafter is not None:
            raise BadRequest("Images cannot be combined with this model's draft model.", param="messages")
        add_bos = self.model.add_bos and not (self.model.bos_text and prompt.startswith(self.model.bos_text))
        tokens, media = self.vision.prompt(prompt.replace(IMAGE_MARKER, MARKER), images, add_special=add_bos)
        for item in media:
            if item.non_causal and len(item.embeddings) > self.batch:
                raise BadRequest(
                    f"An image takes {len(item.embeddings)} tokens, more than this model's batch ({self.batch}) holds "
                    "in one decode: raise its `batch`.",
                    param="messages",
                )
        if media and media[-1].end >= len(tokens):
            raise BadRequest("The prompt cannot end with an image.", param="messages")
        return tokens, media

    def prepare_completion(self, request: CompletionRequest) -> GenerationJob:
        """The job of a completion request's first choice (see `completion_jobs`)."""
        return self.completion_jobs(request, choices=1)[0]

    def completion_jobs(self, request: CompletionRequest, *, choices: int | None = None) -> list[GenerationJob]:
        """One job per choice (`request.n`, or `choices`), all of the same prompt."""
        self._generates()
        if isinstance(request.prompt, str):
            tokens = self.tokenize_prompt(request.prompt)
        else:
            bad = next((t for t in request.prompt if not self.model.valid_token(t)), None)
            if bad is not None:
                raise BadRequest(f"prompt token {bad} is outside the vocabulary", param="prompt")
            tokens = list(request.prompt)
        if not tokens:
            raise BadRequest("the prompt is empty", param="prompt")
        jobs = self._jobs(tokens, request.sampling, "prompt", request.n if choices is None else choices, None)
        return self._with_adapters(jobs, request.lora)

    def _set_scales(self, scales: tuple[float, ...]) -> None:
        """The generation context's LoRA scales (engine thread, between decodes)."""
        self.ctx.set_loras([(adapter, scale) for (adapter, _), scale in zip(self.loras, scales, strict=True)])

    def adapter_scales(self, requested: list[AdapterScale]) -> tuple[float, ...]:
        """Each LoRA adapter's scale for a request: the model's own when the request names none; else the named
        ones at the request's scale and the others at 0 (llama-server's rule). BadRequest for an unknown adapter."""
        if not requested:
            return self.default_scales
        scales = [0.0] * len(self.loras)
        for item in requested:
            index = item.id if item.id is not None else self._adapter_index(item.name)
            if index is None or not 0 <= index < len(self.loras):
                known = ", ".join(f"{i}: {name}" for i, name in enumerate(self.adapter_names)) or "none"
                raise BadRequest(
                    f"Unknown LoRA adapter {item.id if item.id is not None else item.name!r}; this model's adapters "
                    f"are {known}.",
                    param="lora",
                )
            scales[index] = item.scale
        return tuple(scales)

    def _adapter_index(self, name: str | None) -> int | None:
        if name is None:
            return None
        stem = name.removesuffix(".gguf")
        return self.adapter_names.index(stem) if stem in self.adapter_names else None

    def _with_adapters(self, jobs: list[GenerationJob], requested: list[AdapterScale]) -> list[GenerationJob]:
        try:
            scales = self.adapter_scales(requested)
        except BadRequest:
            for job in jobs:
                job.sampler.close()
            raise
        for job in jobs:
            job.adapters = scales
        return jobs

    def _jobs(
        self,
        tokens: list[int],
        sampling: SamplingParams,
        param: str,
        choices: int,
        grammar: str | None,
        *,
        media: tuple[Media, ...] = (),
    ) -> list[GenerationJob]:
        """Jobs for the choices of one prompt. With a seed, choice i draws with seed + i: the choices differ, and
        each is reproducible. If one cannot be made, none is left behind."""
        jobs: list[GenerationJob] = []
        try:
            for i in range(max(1, choices)):
                own = sampling
                if i and sampling.seed is not None:
                    own = dataclasses.replace(sampling, seed=sampling.seed + i)
                jobs.append(self._job(tokens, own, param, grammar=grammar, media=media))
                if choices > 1:
                    jobs[-1].group = jobs[0].id
        except BaseException:
            for job in jobs:
                job.sampler.close()
            raise
        return jobs

    def _job(
        self,
        tokens: list[int],
        sampling: SamplingParams,
        param: str,
        *,
        grammar: str | None = None,
        media: tuple[Media, ...] = (),
    ) -> GenerationJob:
        """A job for `tokens`; `grammar` (a forced tool call) replaces the request's own constraint."""
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens. However, your request has "
                f"{len(tokens)} prompt tokens, leaving no room for output.",
                param=param,
            )
        room = self.n_ctx - len(tokens)
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        grammar = grammar if grammar is not None else grammar_for(sampling)
        # (an image's stand-in ids are no tokens of the vocabulary: the sampler's penalties never see them)
        seen = [t for t in tokens if t < self.model.n_vocab] if media else tokens
        sampler = Sampler(self.model, sampling, grammar=grammar, prompt_tokens=seen, context_size=self.n_ctx)
        return GenerationJob(
            prompt=tokens,
            media=media,
            sampler=sampler,
            max_tokens=max_tokens,
            stop=sampling.stop,
            logprobs=sampling.logprobs,
            banned=sampling.banned_strings,
        )

    # -- embeddings ------------------------------------------------------------------------------------

    async def embed(self, inputs: list[str] | list[list[int]]) -> EmbeddingResult:
        if self.mode == "generate":
            raise BadRequest(f"'{self.config.model_id}' does not serve embeddings", param="model")
        if self.mode == "rerank":
            raise BadRequest(
                f"'{self.config.model_id}' is a reranker: it scores documents against a query (/v1/rerank), it does "
                "not embed",
                param="model",
                code="unsupported",
            )
        token_lists: list[list[int]] = []
        items: list[str | list[int]] = list(inputs)
        for i, item in enumerate(items):
            if isinstance(item, str):
                tokens = self.model.tokenize(item, add_special=True, parse_special=False)
            else:
                tokens = list(item)
                if any(not self.model.valid_token(t) for t in tokens):
                    raise BadRequest(f"input {i} has a token outside the vocabulary", param="input")
            if not tokens:
                raise BadRequest(f"input {i} is empty", param="input")
            if len(tokens) > self.embedding_limit:
                raise ContextLengthExceeded(
                    f"input {i} has {len(tokens)} tokens; this model embeds at most {self.embedding_limit}",
                    param="input",
                )
            token_lists.append(tokens)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()

        def done(result: list[list[float]] | SomnerError) -> None:
            loop.call_soon_threadsafe(_resolve, future, result)

        self.scheduler.submit_embedding(EmbeddingJob(inputs=token_lists, done=done))
        vectors = await future
        return EmbeddingResult(embeddings=vectors, prompt_tokens=sum(len(t) for t in token_lists))

    async def rerank(self, query: str, documents: list[str]) -> RerankResult:
        """Score each document against the query with the model's classification head (one decode for as many
        pairs as fit, with any other waiting embedding or rerank work)."""
        if self.mode != "rerank":
            raise BadRequest(
                f"'{self.config.model_id}' has no ranking head: it cannot rerank (a reranker GGUF declares rank "
                "pooling and carries a classification head)",
                param="model",
                code="unsupported",
            )
        pairs = [pair_tokens(self.model, query, document) for document in documents]
        for i, tokens in enumerate(pairs):
            if len(tokens) > self.embedding_limit:
                raise ContextLengthExceeded(
                    f"the query with document {i} has {len(tokens)} tokens; this model reads at most "
                    f"{self.embedding_limit}",
                    param="documents",
                )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()

        def done(result: list[list[float]] | SomnerError) -> None:
            loop.call_soon_threadsafe(_resolve, future, result)

        self.scheduler.submit_embedding(EmbeddingJob(inputs=pairs, done=done, normalize=False))
        outputs = await future
        return RerankResult(scores=[values[0] for values in outputs], prompt_tokens=sum(len(t) for t in pairs))


def _resolve(future: asyncio.Future[list[list[float]]], result: list[list[float]] | SomnerError) -> None:
    if future.done():
        return
    if isinstance(result, SomnerError):
        future.set_exception(result)
    else:
        future.set_result(result)
