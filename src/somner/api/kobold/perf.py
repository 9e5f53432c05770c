"""KoboldCpp's `/api/extra/perf`: the caller's last generation (sizes, speeds, seed, why it stopped) and the
server's state (generations so far, queue, idle time).

A generation's prompt and output times are the engine's own (`Chunk.timings`, from Somner's worker) when it
reports them, else measured here: from the moment the engine took the request to its first token, then to its end.
Each caller sees only its own last generation, as it sees only its own in abort and check.
"""

from __future__ import annotations

import time

from somner.core import Chunk, Usage
from somner.gateway.generations import Finished
from somner.services import Services
from somner.wire.kobold import encode


class Stopwatch:
    """Times one generation: started when the engine has the request, `see` each chunk on its way out."""

    __slots__ = ("first", "last", "started")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first: float | None = None
        self.last: Chunk | None = None

    def see(self, chunk: Chunk) -> None:
        if chunk.text and self.first is None:
            self.first = time.monotonic()
        if chunk.finish_reason is not None:
            self.last = chunk

    def finished(self, usage: Usage, seed: int | None) -> Finished:
        """The measurements, once the generation is over (`last` None: it was aborted)."""
        ended = time.monotonic()
        first = self.first if self.first is not None else ended
        prompt_seconds, output_seconds = first - self.started, ended - first
        timings = self.last.timings if self.last is not None else None
        if timings is not None and (timings.prompt_ms or timings.predicted_ms):
            prompt_seconds, output_seconds = timings.prompt_ms / 1000.0, timings.predicted_ms / 1000.0
        return Finished(
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            prompt_seconds=prompt_seconds,
            output_seconds=output_seconds,
            seed=seed,
            finish_reason=self.last.finish_reason if self.last is not None else None,
            stop_sequence=self.last is not None and self.last.stop_sequence is not None,
        )


def body(services: Services, owner: str) -> dict[str, object]:
    generations = services.generations
    last = generations.last(owner)
    return encode.perf(
        prompt_tokens=last.prompt_tokens if last is not None else 0,
        output_tokens=last.output_tokens if last is not None else 0,
        prompt_seconds=last.prompt_seconds if last is not None else 0.0,
        output_seconds=last.output_seconds if last is not None else 0.0,
        seed=last.seed if last is not None and last.seed is not None else -1,
        stop=encode.stop_reason(last.finish_reason, on_stop_sequence=last.stop_sequence) if last is not None else -1,
        total=generations.total,
        queue=services.gateway.queue.depth,
        busy=len(generations) > 0,
        uptime=max(0.0, time.time() - services.started_at),
        idle=generations.idle_seconds(),
    )
