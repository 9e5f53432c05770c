"""A small typed facade over llama.cpp's C API, as exposed by llama-cpp-python's ctypes bindings.

Only what the engine needs: load a model, make contexts, fill batches, decode, read logits and embeddings,
tokenize and detokenize. Every foreign failure becomes an `EngineError` here, where it enters.
Thread-safety: a context and its batches belong to the engine thread; tokenizing (vocab only) is safe anywhere.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as lib
import numpy as np
import numpy.typing as npt

log = logging.getLogger("somner.llama")

_GGML_LOG_WARN = 3
_GGML_LOG_ERROR = 4
POOLING_MEAN = lib.LLAMA_POOLING_TYPE_MEAN
POOLING_RANK = lib.LLAMA_POOLING_TYPE_RANK  # a reranker: the classification head scores each sequence
_init_lock = threading.Lock()
_state: dict[str, Any] = {}  # process-wide: llama.cpp's backend and log hook are themselves process-wide


class EngineError(RuntimeError):
    """llama.cpp refused or failed an operation."""


def init_backend() -> None:
    """Initialise llama.cpp once per process and route its log to Python logging (warnings and errors only)."""
    with _init_lock:
        if _state:
            return

        @lib.llama_log_callback  # type: ignore[untyped-decorator]
        def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
            if level in (_GGML_LOG_WARN, _GGML_LOG_ERROR):
                message = text.decode("utf-8", errors="replace").rstrip()
                if message:
                    log.log(logging.ERROR if level == _GGML_LOG_ERROR else logging.WARNING, "%s", message)

        _state["log_callback"] = _on_log  # keep the ctypes callback alive for the life of the process
        lib.llama_log_set(_on_log, ctypes.c_void_p(0))
        lib.llama_backend_init()


def route_log(set_log: Callable[[Any, Any], None]) -> None:
    """Send another llama.cpp library's log (mtmd's, through its `*_log_set`) where llama.cpp's goes."""
    init_backend()
    set_log(_state["log_callback"], ctypes.c_void_p(0))


def system_info() -> str:
    return bytes(lib.llama_print_system_info()).decode("utf-8", errors="replace")


def supports_gpu_offload() -> bool:
    return bool(lib.llama_supports_gpu_offload())


class LlamaModel:
    """Weights and vocabulary of one GGUF file."""

    def __init__(
        self,
        path: Path,
        *,
        gpu_layers: int = -1,
        cpu_repack: bool = False,
        tensor_split: list[float] | None = None,
        split_mode: str = "layer",
        main_gpu: int = 0,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        init_backend()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = gpu_layers if gpu_layers >= 0 else 999
        params.use_extra_bufts = cpu_repack
        params.split_mode = SPLIT_MODES[split_mode]
        params.main_gpu = main_gpu
        if on_progress is not None:

            @lib.llama_progress_callback  # type: ignore[untyped-decorator]
            def _progress(progress: float, _user_data: ctypes.c_void_p) -> bool:
                on_progress(float(progress))
                return True  # (False would abort the load)

            params.progress_callback = _progress
            self._progress = _progress  # must outlive the load call
        if tensor_split:
            devices = lib.llama_max_devices()
            split = (ctypes.c_float * devices)(*tensor_split[:devices])
            params.tensor_split = split
            self._tensor_split = split  # must outlive the load call
        handle = lib.llama_model_load_from_file(str(path).encode(), params)
        if not handle:
            raise EngineError(f"llama.cpp could not load {path.name} (see the engine log for the reason)")
        self.handle = handle
        self.path = path
        self.vocab = lib.llama_model_get_vocab(handle)
        self.n_vocab: int = lib.llama_vocab_n_tokens(self.vocab)
        self.n_embd: int = lib.llama_model_n_embd(handle)
        self.n_ctx_train: int = lib.llama_model_n_ctx_train(handle)
        self.n_swa: int = lib.llama_model_n_swa(handle)
        self.bos: int = lib.llama_vocab_bos(self.vocab)
        self.eos: int = lib.llama_vocab_eos(self.vocab)
        self.add_bos: bool = bool(lib.llama_vocab_get_add_bos(self.vocab))
        self.size_bytes: int = lib.llama_model_size(handle)
        self.architecture = self.meta("general.architecture") or "unknown"
        self.description = self.meta("general.name") or path.stem
        self.sep: int = lib.llama_vocab_sep(self.vocab)
        pooling = self.meta(f"{self.architecture}.pooling_type")
        # A reranker: rank pooling declared, and the classification head it needs (n_cls_out outputs).
        self.n_cls_out: int = lib.llama_model_n_cls_out(handle)
        self.ranks = pooling == str(POOLING_RANK) and self.n_cls_out > 0
        self.pools = pooling not in (None, "0")  # an embedding model (mean, CLS, last pooling) or a reranker
        rerank_template = self.meta("tokenizer.chat_template.rerank")
        self.rerank_template: str | None = rerank_template or None
        self._pieces: dict[int, bytes] = {}
        self._special_pieces: dict[int, bytes] = {}
        # Ends of generation: asked of llama.cpp token by token as they are sampled; the whole set (a scan of the
        # vocabulary: a quarter of a second for Gemma 3's 262,144 tokens, at every load) only when a request needs it.
        self._eog_seen: dict[int, bool] = {}
        self._eog: frozenset[int] | None = None
        self.bos_text = self.piece(self.bos, special=True).decode("utf-8", errors="replace") if self.bos >= 0 else ""
        self.eos_text = self.piece(self.eos, special=True).decode("utf-8", errors="replace") if self.eos >= 0 else ""

    def meta(self, key: str) -> str | None:
        size = 1 << 14
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_model_meta_val_str(self.handle, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    @property
    def chat_template(self) -> str | None:
        raw = lib.llama_model_chat_template(self.handle, None)
        return bytes(raw).decode("utf-8", errors="replace") if raw else None

    def is_eog(self, token: int) -> bool:
        seen = self._eog_seen.get(token)
        if seen is None:
            seen = self._eog_seen[token] = bool(lib.llama_vocab_is_eog(self.vocab, token))
        return seen

    @property
    def eog_tokens(self) -> frozenset[int]:
        if self._eog is None:
            self._eog = frozenset(t for t in range(self.n_vocab) if lib.llama_vocab_is_eog(self.vocab, t))
        return self._eog

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            out = (lib.llama_token * capacity)()
            n = lib.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special, parse_special)
            if n >= 0:
                return list(out[:n])
            if n == -(2**31):
                raise EngineError("text too long to tokenize")
            capacity = -n

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token. Control tokens render as nothing unless `special`."""
        cache = self._special_pieces if special else self._pieces
        cached = cache.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        value = buf.raw[: max(n, 0)]
        cache[token] = value
        return value

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return b"".join(self.piece(t, special=special) for t in tokens).decode("utf-8", errors="replace")

    def valid_token(self, token: int) -> bool:
        return 0 <= token < self.n_vocab

    def load_lora(self, path: Path) -> Any:
        adapter = lib.llama_adapter_lora_init(self.handle, str(path).encode())
        if not adapter:
            raise EngineError(f"llama.cpp could not load the LoRA adapter {path.name}")
        return adapter

    def close(self) -> None:
        if self.handle:
            lib.llama_model_free(self.handle)
            self.handle = None


CACHE_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}  # ggml type ids
SPLIT_MODES = {"none": lib.LLAMA_SPLIT_MODE_NONE, "layer": lib.LLAMA_SPLIT_MODE_LAYER, "row": lib.LLAMA_SPLIT_MODE_ROW}
FLASH_ATTN = {
    "auto": lib.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": lib.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": lib.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


@dataclass(frozen=True, slots=True)
class ContextShape:
    n_ctx: int  # total KV cells
    n_seq_max: int
    n_batch: int
    n_ubatch: int
    threads: int
    embeddings: bool = False
    pooling: int = POOLING_MEAN  # with `embeddings`: POOLING_MEAN (one vector per sequence) or POOLING_RANK (scores)
    kv_unified: bool = False
    swa_full: bool = False  # sliding-window layers keep the whole context, not only their window
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    rope_base: float = 0.0  # 0: from the model
    rope_scale: float = 0.0


class LlamaContext:
    """A llama.cpp context: KV cache plus compute buffers. Used from one thread only."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        params = lib.llama_context_default_params()
        params.n_ctx = shape.n_ctx
        params.n_seq_max = shape.n_seq_max
        params.n_batch = shape.n_batch
        params.n_ubatch = shape.n_ubatch
        params.n_threads = shape.threads
        params.n_threads_batch = shape.threads
        params.kv_unified = shape.kv_unified
        params.swa_full = shape.swa_full  # (without it prefix reuse checks pos_min: see keep_prefix)
        params.no_perf = True
        params.type_k = CACHE_TYPES[shape.cache_type_k]
        params.type_v = CACHE_TYPES[shape.cache_type_v]
        params.flash_attn_type = FLASH_ATTN[shape.flash_attn]
        params.rope_freq_base = shape.rope_base
        params.rope_freq_scale = shape.rope_scale
        if shape.embeddings:
            params.embeddings = True
            params.pooling_type = shape.pooling
        handle = lib.llama_init_from_model(model.handle, params)
        if not handle:
            raise EngineError("llama.cpp could not create a context (out of memory for this ctx x parallel?)")
        self.handle = handle
        self.model = model
        self.shape = shape
        self.memory = lib.llama_get_memory(handle)
        self.n_ctx_seq: int = lib.llama_n_ctx_seq(handle)

    def set_loras(self, adapters: list[tuple[Any, float]]) -> None:
        if not adapters:
            return
        handles = (lib.llama_adapter_lora_p_ctypes * len(adapters))(*(a for a, _ in adapters))
        scales = (ctypes.c_float * len(adapters))(*(s for _, s in adapters))
        if lib.llama_set_adapters_lora(self.handle, handles, len(adapters), scales) != 0:
            raise EngineError("llama.cpp could not apply the LoRA adapters")

    def decode(self, batch: Batch) -> None:
        rc = lib.llama_decode(self.handle, batch.raw)
        if rc != 0:
            raise EngineError(f"llama_decode failed with status {rc}")

    def logits(self, index: int) -> npt.NDArray[np.float32]:
        ptr = lib.llama_get_logits_ith(self.handle, index)
        if not ptr:
            raise EngineError(f"no logits for batch row {index}")
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def sequence_embedding(self, seq: int) -> npt.NDArray[np.float32]:
        ptr = lib.llama_get_embeddings_seq(self.handle, seq)
        if not ptr:
            raise EngineError(f"no embedding for sequence {seq}")
        width = self.model.n_cls_out if self.shape.pooling == POOLING_RANK else self.model.n_embd
        return np.ctypeslib.as_array(ptr, shape=(width,)).copy()

    def decode_embeddings(self, embeddings: npt.NDArray[np.float32], start: int, seq: int, *, non_causal: bool) -> None:
        """Put rows of input embeddings (an image's, from its projector) at positions start.. of `seq`; with
        `non_causal`, they attend to each other both ways (the whole run must then fit one ubatch)."""
        count, width = embeddings.shape
        batch = lib.llama_batch_init(count, width, 1)
        try:
            ctypes.memmove(
                batch.embd, np.ascontiguousarray(embeddings, dtype=np.float32).ctypes.data, count * width * 4
            )
            np.ctypeslib.as_array(batch.pos, shape=(count,))[:] = np.arange(start, start + count, dtype=np.int32)
            np.ctypeslib.as_array(batch.n_seq_id, shape=(count,))[:] = 1
            np.ctypeslib.as_array(batch.logits, shape=(count,))[:] = 0
            for row in range(count):
                batch.seq_id[row][0] = seq
            batch.n_tokens = count
            if non_causal:
                lib.llama_set_causal_attn(self.handle, False)
            try:
                rc = lib.llama_decode(self.handle, batch)
            finally:
                if non_causal:
                    lib.llama_set_causal_attn(self.handle, True)
        finally:
            lib.llama_batch_free(batch)
        if rc != 0:
            raise EngineError(f"llama_decode of an image failed with status {rc}")

    def seq_remove(self, seq: int, start: int, end: int = -1) -> bool:
        """Drop positions [start, end) of `seq`; False when a partial removal is impossible."""
        return bool(lib.llama_memory_seq_rm(self.memory, seq, start, end))

    def can_keep(self, seq: int, n: int) -> bool:
        """Whether `seq`'s first `n` positions are all still in the cache (see keep_prefix)."""
        return not (self.model.n_swa > 0 and self.seq_pos_min(seq) > max(0, n - self.model.n_swa))

    def keep_prefix(self, seq: int, n: int) -> int:
        """Keep the first `n` positions of `seq` and drop the rest; returns how many were kept: `n`, or 0 when
        the sequence cannot be cut there (sliding-window layers keep only their window, so positions before it
        may already be gone; some caches refuse partial removal), in which case all of it is dropped."""
        if n > 0 and not self.can_keep(seq, n):
            n = 0
        if not self.seq_remove(seq, n, -1):
            self.seq_remove(seq, 0, -1)
            n = 0
        return n

    def seq_copy(self, source: int, target: int) -> bool:
        """Make `target` hold what `source` holds (all positions; `target` must be empty); False if it did not."""
        lib.llama_memory_seq_cp(self.memory, source, target, -1, -1)
        return int(lib.llama_memory_seq_pos_max(self.memory, target)) == int(
            lib.llama_memory_seq_pos_max(self.memory, source)
        )

    def seq_pos_min(self, seq: int) -> int:
        return int(lib.llama_memory_seq_pos_min(self.memory, seq))

    def clear(self) -> None:
        lib.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        if self.handle:
            lib.llama_free(self.handle)
            self.handle = None


def common_prefix(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    left = np.asarray(a[:n], dtype=np.int64)
    right = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(left != right)
    return int(diff[0]) if diff.size else n


class Batch:
    """A reusable llama_batch of token ids, filled row by row."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = lib.llama_batch_init(capacity, 0, 1)
        self._token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self._pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self._logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))[:] = 1
        self._seq = self.raw.seq_id
        self.size = 0

    def clear(self) -> None:
        self.size = 0
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one row; returns its index (the index to read logits from)."""
        i = self.size
        self._token[i] = token
        self._pos[i] = pos
        self._seq[i][0] = seq
        self._logits[i] = logits
        self.size = i + 1
        self.raw.n_tokens = self.size
        return i

    def add_run(
        self, tokens: list[int], start_pos: int, seq: int, logits_last: bool, *, logits_all: bool = False
    ) -> int:
        """Append consecutive tokens of one sequence; returns the index of the last row.

        `logits_all` marks every row as an output (pooled embeddings need all of a sequence's rows)."""
        n = len(tokens)
        i = self.size
        self._token[i : i + n] = tokens
        self._pos[i : i + n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self._logits[i : i + n] = 1 if logits_all else 0
        seq_ids = self._seq
        for row in range(i, i + n):
            seq_ids[row][0] = seq
        if logits_last:
            self._logits[i + n - 1] = 1
        self.size = i + n
        self.raw.n_tokens = self.size
        return i + n - 1

    @property
    def free(self) -> int:
        return self.capacity - self.size

    def close(self) -> None:
        if self.capacity:
            lib.llama_batch_free(self.raw)
            self.capacity = 0
