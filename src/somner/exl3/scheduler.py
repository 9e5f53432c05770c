"""The ExLlamaV3 engine's thread: jobs in, one `Generator.iterate` per step, chunks out.

Design note. ExLlamaV3's generator does the batching itself (paged cache, prefill in chunks, every running job
sampled in one forward pass, speculative decoding); this loop feeds it and turns its events into Somner's chunks.
`parallel` slots bound how many jobs the generator holds at once, as the llama.cpp engine's slots do; the rest
wait here, first in first out, and a job cancelled while it waits never reaches the generator. What the
generator reports is text: stop strings are matched here with the same holdback as the llama.cpp engine
(`engine/text.py`), the token limit is checked here, and usage and timings are counted here, so the fake
generator of the tests and the real one end jobs the same way. Outputs of a step go to the sink in one call.
Everything runs on the engine thread except `submit`, `cancel`, `arriving` and `stop`, which touch the inbox under
its condition variable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from somner.core import Chunk, FinishReason, Timings, Usage
from somner.engine.jobs import EngineStats
from somner.engine.text import StopMatcher
from somner.errors import EngineFailed, SomnerError
from somner.exl3.generator import Event, Exl3Job, Generator

log = logging.getLogger(__name__)

_MAX_GATHER = 0.05  # longest wait, from idle, for announced requests to join the first step

Output = tuple[Exl3Job, Chunk | SomnerError]
Sink = Callable[[Sequence[Output]], None]


class Slot:
    """Room for one running job (`/stats` shows them as llama.cpp's slots)."""

    __slots__ = ("first_token_at", "generated", "job", "seq", "started_at", "stops", "tokens")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.job: Exl3Job | None = None
        self.tokens: list[int] = []  # the last job's prompt
        self.stops = StopMatcher([])
        self.generated = 0
        self.started_at = 0.0
        self.first_token_at = 0.0


class Scheduler:
    def __init__(self, generator: Generator, sink: Sink, *, slots: int) -> None:
        self.generator = generator
        self.sink = sink
        self.slots = [Slot(seq) for seq in range(slots)]
        self.stats = EngineStats()
        self._running: dict[int, Slot] = {}  # job id -> its slot
        self._cond = threading.Condition()
        self._queue: deque[Exl3Job] = deque()
        self._cancelled: set[int] = set()
        self._arriving = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from other threads ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="somner-exl3", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Exl3Job) -> None:
        with self._cond:
            if self._stopping:
                raise EngineFailed("the engine is shutting down")
            self._queue.append(job)
            with self.stats.lock:
                self.stats.submitted += 1
                self.stats.queued = len(self._queue)
            self._cond.notify()

    def cancel(self, job_id: int) -> None:
        with self._cond:
            self._cancelled.add(job_id)
            self._cond.notify()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap the preparation of a request that will be submitted: from idle, the first step waits (briefly) for
        it, so requests sent together are prefilled together."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify()

    # -- the engine thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (
                        self._stopping or self._cancelled or (self._queue and self._free_slots()) or self._running
                    ):
                        self._cond.wait()
                    if self._stopping:
                        break
                    self._gather_burst_locked()
                    cancelled, self._cancelled = self._cancelled, set()
                    admitted = self._admit_locked(cancelled)
                outputs: list[Output] = []
                self._apply_cancellations(cancelled)
                for job in admitted:
                    self._start(job, outputs)
                if self._running:
                    self._step(outputs)
                if outputs:
                    self.sink(outputs)
        except BaseException:
            log.exception("engine loop crashed")
            raise
        finally:
            self._fail_everything("the engine stopped")

    def _free_slots(self) -> int:
        return sum(1 for slot in self.slots if slot.job is None)

    def _gather_burst_locked(self) -> None:
        if self._running:
            return
        deadline = time.monotonic() + _MAX_GATHER
        while self._arriving and self._queue and len(self._queue) < self._free_slots() and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _admit_locked(self, cancelled: set[int]) -> list[Exl3Job]:
        """Queued jobs for the free slots (FIFO); jobs cancelled while queued are dropped."""
        if cancelled:
            dropped = [job for job in self._queue if job.id in cancelled]
            self._queue = deque(job for job in self._queue if job.id not in cancelled)
            cancelled.difference_update(job.id for job in dropped)
            with self.stats.lock:
                self.stats.cancelled += len(dropped)
        admitted: list[Exl3Job] = []
        free = self._free_slots()
        while self._queue and len(admitted) < free:
            admitted.append(self._queue.popleft())
        with self.stats.lock:
            self.stats.queued = len(self._queue)
        return admitted

    def _apply_cancellations(self, cancelled: set[int]) -> None:
        for job_id in cancelled:
            slot = self._running.get(job_id)
            if slot is None or slot.job is None:
                continue  # (it ended already)
            self._stop_in_generator(slot.job)
            self._release(slot)
            with self.stats.lock:
                self.stats.cancelled += 1

    def _start(self, job: Exl3Job, outputs: list[Output]) -> None:
        slot = next(slot for slot in self.slots if slot.job is None)
        try:
            self.generator.enqueue(job)
        except Exception as exc:  # (the library's own checks: a job it cannot hold)
            log.exception("the generator refused job %d", job.id)
            outputs.append((job, EngineFailed(f"the engine could not start this generation: {exc}")))
            with self.stats.lock:
                self.stats.failed += 1
            return
        slot.job = job
        slot.tokens = job.prompt
        slot.stops = StopMatcher(job.stop)
        slot.generated = 0
        slot.started_at = time.perf_counter()
        slot.first_token_at = 0.0
        self._running[job.id] = slot
        with self.stats.lock:
            self.stats.active += 1
            self.stats.prompt_tokens += len(job.prompt)

    def _step(self, outputs: list[Output]) -> None:
        started = time.perf_counter()
        try:
            events = self.generator.iterate()
        except Exception:
            log.exception("the generator failed; ending its jobs")
            for slot in list(self._running.values()):
                self._fail(slot, outputs, EngineFailed("the engine failed while generating"))
            return
        for event in events:
            running = self._running.get(event.job.id)
            if running is not None:  # (events of a job cancelled this step are dropped)
                self._advance(running, event, outputs)
        with self.stats.lock:
            self.stats.steps += 1
            elapsed = time.perf_counter() - started
            self.stats.step_seconds += elapsed
            self.stats.decode_seconds += elapsed

    def _advance(self, slot: Slot, event: Event, outputs: list[Output]) -> None:
        job = slot.job
        assert job is not None
        if event.tokens:
            slot.generated += event.tokens
            slot.first_token_at = slot.first_token_at or time.perf_counter()
            with self.stats.lock:
                self.stats.generated_tokens += event.tokens
        if event.total_tokens is not None and event.total_tokens > slot.generated:
            with self.stats.lock:
                self.stats.generated_tokens += event.total_tokens - slot.generated
            slot.generated = event.total_tokens
        emit, stopped = slot.stops.feed(event.text)
        if stopped:
            if event.end is None:
                self._stop_in_generator(job)
            self._finish(slot, outputs, FinishReason.STOP, emit, event.cached_tokens)
        elif event.end is not None:
            reason = FinishReason.LENGTH if event.end == "max_new_tokens" else FinishReason.STOP
            self._finish(slot, outputs, reason, emit + slot.stops.flush(), event.cached_tokens)
        elif slot.generated >= job.max_tokens:
            self._stop_in_generator(job)
            self._finish(slot, outputs, FinishReason.LENGTH, emit + slot.stops.flush(), event.cached_tokens)
        elif emit:
            outputs.append((job, Chunk(text=emit)))

    def _stop_in_generator(self, job: Exl3Job) -> None:
        try:
            self.generator.cancel(job)
        except Exception:
            log.exception("the generator could not cancel job %d", job.id)

    def _finish(self, slot: Slot, outputs: list[Output], reason: FinishReason, text: str, cached: int) -> None:
        job = slot.job
        assert job is not None
        now = time.perf_counter()
        first = slot.first_token_at or now
        usage = Usage(prompt_tokens=len(job.prompt), completion_tokens=slot.generated, cached_tokens=cached)
        timings = Timings(prompt_ms=(first - slot.started_at) * 1000.0, predicted_ms=(now - first) * 1000.0)
        chunk = Chunk(text=text, finish_reason=reason, usage=usage, timings=timings)
        chunk.stop_sequence = slot.stops.matched
        outputs.append((job, chunk))
        self._release(slot)
        with self.stats.lock:
            self.stats.finished += 1
            self.stats.cached_tokens += cached

    def _fail(self, slot: Slot, outputs: list[Output], error: SomnerError) -> None:
        job = slot.job
        assert job is not None
        outputs.append((job, error))
        self._stop_in_generator(job)
        self._release(slot)
        with self.stats.lock:
            self.stats.failed += 1

    def _release(self, slot: Slot) -> None:
        if slot.job is not None:
            self._running.pop(slot.job.id, None)
        slot.job = None
        with self.stats.lock:
            self.stats.active = len(self._running)

    def _fail_everything(self, reason: str) -> None:
        outputs: list[Output] = []
        for slot in list(self._running.values()):
            self._fail(slot, outputs, EngineFailed(reason))
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
        outputs.extend((job, EngineFailed(reason)) for job in queued)
        if outputs:
            self.sink(outputs)
