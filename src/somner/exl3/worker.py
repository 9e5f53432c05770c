"""`somner worker-exl3`: one EXL3 model behind the same HTTP surface as the llama.cpp worker (`engine/server.py`),
so the gateway's worker backend drives both alike.

The generator is ExLlamaV3's (`exllama.py`) unless `SOMNER_EXL3_GENERATOR` names another factory as
`module:function`: the tests put a CPU fake there to run this worker as a real process without a GPU. Only this
process reads the variable; nothing a client sends can reach it.
"""

from __future__ import annotations

import importlib
import os

from somner.engine.server import serve_engine
from somner.exl3.generator import Exl3Config, GeneratorFactory
from somner.exl3.runtime import Engine

GENERATOR_VARIABLE = "SOMNER_EXL3_GENERATOR"


def generator_factory() -> GeneratorFactory:
    """ExLlamaV3's loader, or the one `SOMNER_EXL3_GENERATOR` names (ValueError when it names nothing usable)."""
    named = os.environ.get(GENERATOR_VARIABLE, "").strip()
    if not named:
        from somner.exl3 import exllama

        return exllama.load
    module_name, _, attribute = named.partition(":")
    try:
        factory: GeneratorFactory = getattr(importlib.import_module(module_name), attribute or "load")
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{GENERATOR_VARIABLE}={named!r} names no generator factory: {exc}") from exc
    return factory


def run_exl3_worker(
    config: Exl3Config, *, socket_path: str | None, host: str, port: int | None, exit_with_parent: bool
) -> int:
    """Load the model, then serve until SIGTERM. Returns the process exit status (2: the model cannot load)."""
    # (The factory is chosen inside the load: a bad SOMNER_EXL3_GENERATOR is a load failure, exit status 2.)
    return serve_engine(
        lambda router, progress: Engine(config, router.sink, generator_factory(), on_progress=progress),
        config.model_id,
        socket_path=socket_path,
        host=host,
        port=port,
        exit_with_parent=exit_with_parent,
    )
