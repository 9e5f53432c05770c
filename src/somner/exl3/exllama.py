"""The `Generator` protocol over the real ExLlamaV3 (the `exllamav3` package, PyTorch with CUDA).

Written against ExLlamaV3 1.4's API: `Config.from_directory`, `Model.from_config` (+ `load_gen` with a progress
callback, autosplit, `use_per_device` or `tensor_p`), `Cache` (FP16, or `CacheLayer_quant` with k_bits and
v_bits), `Tokenizer.from_config`, `Generator` (`enqueue`, `iterate`, `cancel`), `Job`, the `SS_*` sampler stages
of a `CustomSampler`, `LLGuidanceFilter` for JSON schemas and GBNF grammars, and `LoRA.from_directory`. The
package and torch are imported when a model loads, never at import time: the worker without them fails with a
clear message, and nothing else in Somner needs them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, cast

from somner.exl3.folder import read_folder, sizes
from somner.exl3.generator import CACHE_BITS, Constraint, EndReason, Event, Exl3Config, Exl3Job, ModelInfo, Sampling

log = logging.getLogger(__name__)

NEEDS = "the exllamav3 engine needs the somner[exl3] extra and a CUDA GPU"
_END_REASONS: frozenset[str] = frozenset({"stop_token", "max_new_tokens", "end_filter", "stop_string", "loop_detected"})


class ExllamaUnavailable(RuntimeError):
    """The exllamav3 package, PyTorch or a CUDA GPU is missing."""


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExllamaUnavailable(f"{NEEDS} ({name} cannot be imported: {exc})") from exc


def load(config: Exl3Config, on_progress: Callable[[float], None]) -> ExllamaGenerator:
    """Load the model folder onto the GPUs (the `GeneratorFactory` of the real engine)."""
    torch = _import("torch")
    exl3 = _import("exllamav3")
    if not torch.cuda.is_available():
        raise ExllamaUnavailable(f"{NEEDS} (PyTorch sees no CUDA device)")
    try:
        return ExllamaGenerator(torch, exl3, config, on_progress)
    except (AssertionError, KeyError, TypeError, AttributeError, ImportError) as exc:
        # The library's own checks are asserts, and a version whose API moved fails with TypeError or
        # AttributeError: either way the gateway gets a one-line reason rather than a traceback.
        version = getattr(exl3, "__version__", "?")
        raise RuntimeError(f"ExLlamaV3 {version} cannot load {config.model_path.name}: {exc!r}") from exc


def _cache(exl3: ModuleType, model: Any, tokens: int, keys: int | None, values: int | None, batch: int) -> Any:
    if keys is None or values is None:
        return exl3.Cache(model, max_num_tokens=tokens, max_batch_size=batch)
    return exl3.Cache(
        model, max_num_tokens=tokens, layer_type=exl3.CacheLayer_quant, k_bits=keys, v_bits=values, max_batch_size=batch
    )


class ExllamaGenerator:
    def __init__(self, torch: ModuleType, exl3: ModuleType, config: Exl3Config, on_progress: Callable[[float], None]):
        self._torch = torch
        self._exl3 = exl3
        folder = read_folder(config.model_path)
        max_seq_len, cache_size = sizes(
            config.max_seq_len, config.cache_size, config.max_batch_size, folder.trained_context
        )
        keys, values = CACHE_BITS[config.cache_k], CACHE_BITS[config.cache_v]
        chunk = max(256, -(-config.chunk_size // 256) * 256)  # (whole cache pages, as TabbyAPI rounds it)
        if (keys is None) != (values is None):
            raise ValueError("ExLlamaV3 quantizes both keys and values or neither")
        self._model_config = exl3.Config.from_directory(str(config.model_path))
        self._model = exl3.Model.from_config(self._model_config)
        self._cache = _cache(exl3, self._model, cache_size, keys, values, config.max_batch_size)
        self._draft_model: Any = None
        self._draft_cache: Any = None
        self._loras: list[Any] = []
        split = list(config.gpu_split) or None
        try:
            if config.draft_model is not None:
                draft_config = exl3.Config.from_directory(str(config.draft_model))
                self._draft_model = exl3.Model.from_config(draft_config)
                self._draft_cache = _cache(exl3, self._draft_model, cache_size, keys, values, config.max_batch_size)
                self._draft_model.load()  # (autosplit: wherever there is room, before the model's own split)
            self._model.load(
                **self._split_options(config, split),
                max_chunk_size=chunk,
                max_batch_size=config.max_batch_size,
                callback=lambda done, total: on_progress(done / total if total else 1.0),
            )
            self.tokenizer = exl3.Tokenizer.from_config(self._model_config)
            if config.loras:
                lora = importlib.import_module("exllamav3.model.lora")
                self._loras = [lora.LoRA.from_directory(self._model, str(path), scale) for path, scale in config.loras]
            self._generator = exl3.Generator(
                model=self._model,
                cache=self._cache,
                tokenizer=self.tokenizer,
                max_batch_size=config.max_batch_size,
                max_chunk_size=chunk,
                draft_model=self._draft_model,
                draft_cache=self._draft_cache,
                num_draft_tokens=config.draft_tokens if self._draft_model is not None else None,
            )
        except BaseException:
            self.close()
            raise
        stops = set(folder.eos_ids) | set(getattr(self._model_config, "eos_token_id_list", None) or [])
        if self.tokenizer.eos_token_id is not None:
            stops.add(int(self.tokenizer.eos_token_id))
        self._info = ModelInfo(
            architecture=folder.architecture,
            description=config.model_path.name,
            vocab_size=int(self._model_config.vocab_size),
            hidden_size=folder.hidden_size,
            max_seq_len=max_seq_len,
            cache_size=cache_size,
            trained_context=folder.trained_context,
            bos_text=folder.bos_text or (self.tokenizer.bos_token or ""),
            eos_text=folder.eos_text or (self.tokenizer.eos_token or ""),
            add_bos=folder.add_bos,
            chat_template=folder.chat_template,
            stop_tokens=frozenset(stops),
            size_bytes=sum(path.stat().st_size for path in config.model_path.glob("*.safetensors")),
        )
        self._jobs: dict[int, Any] = {}  # our job id -> ExLlamaV3's Job

    @staticmethod
    def _split_options(config: Exl3Config, split: list[float] | None) -> dict[str, Any]:
        """Tensor parallelism, a manual split (GB per GPU), or autosplit (the library's default)."""
        if config.tensor_parallel:
            return {"tensor_p": True, "use_per_device": split}
        return {"use_per_device": split}

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        ids = self.tokenizer.encode(text, add_bos=add_bos, encode_special_tokens=special)
        return cast(list[int], ids.flatten().tolist())

    def decode(self, tokens: Sequence[int], *, special: bool) -> str:
        if not tokens:
            return ""
        ids = self._torch.tensor([list(tokens)], dtype=self._torch.long)
        return str(self.tokenizer.decode(ids, decode_special_tokens=special)[0])

    def make_filter(self, constraint: Constraint) -> object:
        try:
            if constraint.json_schema is not None:
                return self._exl3.LLGuidanceFilter(
                    self.tokenizer, json_schema=constraint.json_schema, eos_after_completed=True
                )
            return self._exl3.LLGuidanceFilter(self.tokenizer, gbnf_grammar=constraint.gbnf, eos_after_completed=True)
        except (ValueError, AssertionError, RuntimeError) as exc:
            raise ValueError(str(exc)) from exc

    def _sampler(self, sampling: Sampling) -> Any:
        """The sampler stages, in the order of ExLlamaV3's own ComboSampler (penalties first), with XTC and banned
        tokens added."""
        exl3 = self._exl3
        window = int(10e7) if sampling.penalty_range < 0 else sampling.penalty_range
        stages: list[Any] = []
        if sampling.logit_bias:
            stages.append(exl3.SS_LogitBias(sampling.logit_bias))
        if sampling.repeat_penalty != 1.0 and window:
            stages.append(exl3.SS_RepP(sampling.repeat_penalty, window, 0))
        if (sampling.presence_penalty or sampling.frequency_penalty) and window:
            stages.append(exl3.SS_PresFreqP(sampling.presence_penalty, sampling.frequency_penalty, window, 0))
        if sampling.banned_tokens:
            stages.append(exl3.SS_BanTokens(list(sampling.banned_tokens)))
        if sampling.temperature <= 0.0 or sampling.top_k == 1:
            stages.append(exl3.SS_Argmax())
            return exl3.CustomSampler(stages)
        first, last = (1.0, sampling.temperature) if sampling.temperature_last else (sampling.temperature, 1.0)
        stages += [exl3.SS_Temperature(first), exl3.SS_MinP(sampling.min_p)]
        if sampling.top_k > 0:
            stages.append(exl3.SS_TopK(sampling.top_k))
        stages += [exl3.SS_TopP(sampling.top_p), exl3.SS_Temperature(last)]
        if sampling.xtc_probability > 0.0:
            stages.append(exl3.SS_XTC(sampling.xtc_probability, sampling.xtc_threshold, tokenizer=self.tokenizer))
        stages.append(exl3.SS_Sample())
        return exl3.CustomSampler(stages)

    def enqueue(self, job: Exl3Job) -> None:
        native = self._exl3.Job(
            input_ids=self._torch.tensor([job.prompt], dtype=self._torch.long),
            max_new_tokens=job.max_tokens,
            min_new_tokens=job.sampling.min_tokens,
            sampler=self._sampler(job.sampling),
            seed=job.sampling.seed,
            stop_conditions=sorted(job.stop_tokens),
            decode_special_tokens=False,
            filters=[job.filter] if job.filter is not None else None,
            banned_strings=job.banned_strings or None,
            identifier=job,
        )
        self._generator.enqueue(native)
        self._jobs[job.id] = native

    def cancel(self, job: Exl3Job) -> None:
        native = self._jobs.pop(job.id, None)
        if native is not None:
            self._generator.cancel(native)

    def iterate(self) -> list[Event]:
        events: list[Event] = []
        for result in self._generator.iterate():
            job = result.get("identifier")
            if not isinstance(job, Exl3Job) or result.get("stage") != "streaming":
                continue  # (started and prefill stages)
            ids = result.get("token_ids")
            tokens = int(ids.shape[-1]) if ids is not None else 0
            end: EndReason | None = None
            total = None
            if result.get("eos"):
                reason = result.get("eos_reason")
                end = cast(EndReason, reason) if reason in _END_REASONS else "stop_token"
                total = int(result.get("new_tokens") or 0) or None
                self._jobs.pop(job.id, None)
            cached = int(result.get("cached_tokens") or 0) if end is not None else 0
            events.append(
                Event(
                    job, text=result.get("text") or "", tokens=tokens, end=end, total_tokens=total, cached_tokens=cached
                )
            )
        return events

    def close(self) -> None:
        for lora in getattr(self, "_loras", []):
            lora.unload()
        for model in (getattr(self, "_draft_model", None), getattr(self, "_model", None)):
            if model is not None:
                model.unload()
