"""The real engine on the default model, in process."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from somner.core import Chunk
from somner.engine.config import EngineConfig
from somner.engine.jobs import GenerationJob, Output
from somner.engine.runtime import Engine
from somner.errors import SomnerError

# A prompt the model continues confidently: at every one of its first 24 greedy tokens the best choice leads the
# runner-up by more than a nat. llama.cpp's CPU kernels round differently for different batch shapes (a few rows
# or many, one sequence or several: logits move by up to ~0.3), so only such a continuation is the same under any
# batching; near-ties (the France prompt has several under 0.1) may break either way when the batch changes.
CONFIDENT = "1, 2, 3, 4,"


class EngineHarness:
    """Runs jobs on a real engine and collects their outputs (the engine thread feeds per-job queues)."""

    def __init__(self, model_path: Path, **config: object) -> None:
        self._queues: dict[int, queue.Queue[Chunk | SomnerError]] = {}
        self.arrivals: dict[int, list[float]] = {}  # when each job's outputs left the engine
        self._lock = threading.Lock()
        self.engine = Engine(
            EngineConfig(model_path=model_path, model_id="gemma", **config),  # type: ignore[arg-type]
            self._sink,
        )
        self.engine.start()

    def _sink(self, outputs: list[Output]) -> None:
        now = time.perf_counter()
        for job, item in outputs:
            with self._lock:
                q = self._queues.setdefault(job.id, queue.Queue())
                self.arrivals.setdefault(job.id, []).append(now)
            q.put(item)

    def submit(self, job: GenerationJob) -> GenerationJob:
        with self._lock:
            self._queues.setdefault(job.id, queue.Queue())
        self.engine.scheduler.submit(job)
        return job

    def chunks(self, job: GenerationJob, timeout: float = 120.0) -> list[Chunk]:
        with self._lock:
            q = self._queues.setdefault(job.id, queue.Queue())
        out: list[Chunk] = []
        deadline = time.monotonic() + timeout
        while True:
            item = q.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(item, SomnerError):
                raise item
            out.append(item)
            if item.finish_reason is not None:
                return out

    def next_chunk(self, job: GenerationJob, timeout: float = 60.0) -> Chunk | SomnerError:
        with self._lock:
            q = self._queues.setdefault(job.id, queue.Queue())
        return q.get(timeout=timeout)

    def close(self) -> None:
        self.engine.close()


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


@pytest.fixture(scope="module")
def harness(model_path: Path) -> Iterator[EngineHarness]:
    h = EngineHarness(model_path, ctx=1024, parallel=4, threads=2, batch=256)
    yield h
    h.close()
