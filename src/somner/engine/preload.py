"""The worker's model load, begun before the worker imports its server.

A worker's start is its imports (the engine's scheduling code, the wire schemas, the HTTP server: about a quarter
of a second of Python) and its model load (llama.cpp reading the vocabulary and weights: C code that does not hold
the GIL). `ModelPreload` begins the load in a thread as soon as llama.cpp's bindings are imported, so the two run
side by side; the engine then takes the loaded model (`result`), or the load's error, where it would have loaded
the model itself (`open_model`). Only this module, `config.py` and `llama.py` are imported before the load begins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from somner.engine.config import EngineConfig
from somner.engine.llama import LlamaModel

LOADING_PREFIX = "somner worker: loading "


class LoadProgress:
    """Reports the model load's progress on stdout, one line per whole percent (`somner worker: loading 42%`),
    for the gateway, which reads its engines' output (load progress on its APIs)."""

    def __init__(self) -> None:
        self._shown = -1

    def __call__(self, progress: float) -> None:
        percent = max(0, min(100, int(progress * 100)))
        if percent > self._shown:
            self._shown = percent
            print(f"{LOADING_PREFIX}{percent}%", flush=True)  # noqa: T201 - for the gateway


def open_model(config: EngineConfig, on_progress: Callable[[float], None] | None) -> LlamaModel:
    """The model's weights and vocabulary as `config` places them."""
    return LlamaModel(
        config.model_path,
        gpu_layers=config.gpu_layers,
        cpu_repack=config.cpu_repack,
        tensor_split=list(config.tensor_split) or None,
        split_mode=config.split_mode,
        main_gpu=config.main_gpu,
        on_progress=on_progress,
    )


class ModelPreload:
    """`open_model(config, progress)` running in a thread from now on; `result` waits for it."""

    def __init__(self, config: EngineConfig, progress: Callable[[float], None]) -> None:
        self._model: LlamaModel | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._load, args=(config, progress), name="model-load", daemon=True)
        self._thread.start()

    def _load(self, config: EngineConfig, progress: Callable[[float], None]) -> None:
        try:
            self._model = open_model(config, progress)
        except BaseException as exc:
            self._error = exc

    def result(self) -> LlamaModel:
        """The loaded model (once: the caller owns it), or the load's exception, raised here."""
        self._thread.join()
        if self._taken:
            raise RuntimeError("the preloaded model was already taken")
        self._taken = True
        if self._error is not None:
            raise self._error
        assert self._model is not None  # (the thread either set it or failed)
        return self._model
