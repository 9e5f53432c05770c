"""The batching loop: many sequences, one llama.cpp context, one thread.

Design note. The context holds `parallel` sequences (slots), each with its own `ctx` cells of KV cache
(llama.cpp's non-unified cache), so no sequence ever gets a fraction of the configured context. One thread
runs steps; a step is one `llama_decode` of a batch made of
  1. one token for every slot that is generating, then
  2. a chunk of pending prompt tokens (chunked prefill), under a per-step token budget that shrinks while
     other sequences are generating, so a long prompt delays running streams by a bounded amount per step;
     short prompts are fed first, so a new stream does not wait for a long prompt's whole prefill.
After the decode, each slot whose last row produced logits samples its next token with its own sampler chain.

Requests enter a FIFO queue (`submit`); a free slot takes the queue head, preferring the slot whose cached
tokens share the longest prefix with the new prompt (prompt prefix cache: a chat's next turn re-prefills
only the new text). The choices of one request (`n`, a job `group`) are prefilled once: the first takes a slot
and prefills the prompt, the others wait in their slots and, the step it is done, copy its cache and draw their
first token from the same logits. Shared prefixes: a prompt that begins with at least `_MIN_SHARED` more tokens
of what another slot holds (busy or free: a system prompt many users share) copies that slot's cache instead of
computing the start again; one that begins like a prompt another slot is still prefilling waits for it
(`awaits`) and copies it then, so a burst of requests with one system prompt computes it once. Cancelling
(`cancel`) frees the slot at the start of the next step. Outputs of a step go to the sink in one call, so the
serving event loop is woken once per step, not once per token.
Everything here runs on the engine thread except `submit`, `cancel`, `submit_embedding` and `stop`, which
only touch the inbox under its condition variable.

Consecutive slots. llama.cpp splits a step's batch into one graph evaluation ("ubatch") per run of consecutive
sequence numbers (its per-sequence caches are streams of one tensor, and a ubatch spans consecutive streams), and
each evaluation has a large fixed cost (it reads all the weights again): four generating sequences in slots 0, 1, 3
and 4 measured 1.7x the step time of slots 0 to 3, and 0, 2, 4 and 6 1.8x. So a request takes the free slot that
keeps the busy ones together (`_packed_slot`), unless another holds a worthwhile part of its prompt, and at the
start of each step the busy sequences that are still scattered (requests end in any order) are moved into the gaps
(`_compact`): a move copies the sequence's whole cache stream (its cost grows with the context per slot: 3.5 ms for
2,560 tokens of Gemma 3 270M on a CPU, less than one extra evaluation of its model) and leaves a copy behind as that
free slot's prefix cache; the gap's own cache, when it is worth keeping, first moves to the least valuable free slot
outside the busy range.

Banned strings (see banned.py) make a sequence go back: when its held text completes one, the slot keeps the
tokens before the token where it began, cuts its cache back to them (as far as the cache allows; what it cannot
keep is prefilled again, like a prompt: `feed` is what must be in the cache before the next sample), its sampler
rebuilds its history, the draft model forgets the rest, and that token is banned at that position. A sequence
goes back at most `_MAX_REWINDS` times; then, or when a position has no token left, it ends there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from somner.core import Chunk, FinishReason, Timings, TokenLogprob, TopLogprob, Usage
from somner.engine.adapters import AdapterScales, Scales, step_scales
from somner.engine.banned import BannedStrings, Released
from somner.engine.jobs import EmbeddingJob, EngineStats, GenerationJob, Output, Sink
from somner.engine.llama import Batch, EngineError, LlamaContext, LlamaModel, common_prefix
from somner.engine.sampling import NoCandidates, logprobs_of
from somner.engine.speculative import Drafter, Wish
from somner.engine.text import IncrementalDecoder, StopMatcher
from somner.engine.vision import Media
from somner.errors import EngineFailed, SomnerError

log = logging.getLogger(__name__)

# While other sequences generate, a step takes at most half the batch of prompt tokens. On a CPU a step's
# generating rows cost about a decode step of their own beside a chunk of 128 prompt tokens, but far less beside
# 256 or more (measured: 2,048 prompt tokens with 4 streams beside them took 0.5 s more in chunks of 128 than
# alone, 0.2 s more in chunks of 256), while each step still delays the streams by a fraction of a second.
_MIN_PREFILL_WHILE_DECODING = 32
# llama.cpp's CPU matrix kernels take a different path (different rounding) for batches of fewer than 8 rows than
# for larger ones, and the difference grows through the layers into visibly different logits. A prompt's last
# tokens are therefore always evaluated as a run of at least this many (cache reuse recomputes them, chunked
# prefill leaves no shorter tail), so the same prompt is computed the same way whether it is new or cached, and
# seeded sampling repeats itself.
_TAIL_TOKENS = 16
# A prompt with at most this many tokens left to read goes ahead of longer ones in a step (see _prefill_order).
_SHORT_PROMPT = 64
# Shortest run of a prompt worth copying from another slot's cache instead of computing it (a copy moves the whole
# sequence's cache, so it only pays for a long shared part such as a system prompt).
_MIN_SHARED = 64
# Longest wait, from idle, for announced requests to join the first step (see _gather_burst_locked).
_MAX_GATHER = 0.05
# Rewinds one sequence may make for its banned strings: each costs a decode of at least one token, so this bounds
# what a request can make the engine redo (a model that keeps heading for a banned string then just stops there).
_MAX_REWINDS = 128


class Slot:
    """One sequence of the shared context: its cached tokens and, while busy, the job it serves."""

    __slots__ = (
        "adapters",
        "awaits",
        "bans",
        "cached",
        "decoder",
        "fed",
        "feed",
        "first_token_at",
        "generated",
        "guard",
        "guesses",
        "job",
        "last_token",
        "last_used",
        "leader",
        "output",
        "prompt_pos",
        "rewinds",
        "row",
        "seq",
        "started_at",
        "stops",
        "tokens",
    )

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.job: GenerationJob | None = None
        self.tokens: list[int] = []  # tokens whose KV is in the cache, position i at index i
        self.adapters: Scales = ()  # the LoRA scales `tokens` were computed with
        self.last_used = 0.0
        self._reset_job_state()

    def _reset_job_state(self) -> None:
        self.feed: list[int] = []  # what must be in the cache before the next sample: the prompt (+ kept output)
        self.prompt_pos = 0  # how much of `feed` is in the cache
        self.last_token = -1
        self.generated = 0
        self.output: list[int] = []  # the generated tokens (the last one is fed next step)
        self.cached = 0
        self.row = -1
        self.fed = False  # this step's batch feeds `last_token` at `row`
        self.guard: BannedStrings | None = None
        self.leader: Slot | None = None  # the slot prefilling this one's prompt (a choice of the same request)
        # (slot, its job, n): a slot prefilling a long start this prompt shares; this one waits until that slot
        # has the first n positions in its cache, copies them and prefills only the rest (see _copy_awaited)
        self.awaits: tuple[Slot, GenerationJob, int] | None = None
        self.bans: dict[int, set[int]] = {}  # generated index -> tokens banned there (rewinds)
        self.rewinds = 0
        self.guesses: list[int] = []  # the draft model's guesses fed after last_token this step
        self.started_at = 0.0
        self.first_token_at = 0.0
        self.decoder = IncrementalDecoder()
        self.stops = StopMatcher([])

    @property
    def prefilling(self) -> bool:
        return self.job is not None and self.prompt_pos < len(self.feed)


def _media_at(media: tuple[Media, ...], position: int) -> Media | None:
    return next((m for m in media if m.start == position), None)


def _next_media(media: tuple[Media, ...], position: int, end: int) -> int:
    """Where the prompt's next image after `position` begins (`end` when none does)."""
    return min((m.start for m in media if m.start >= position), default=end)


def _before_media(media: tuple[Media, ...], keep: int) -> int:
    """`keep` moved back to the start of an image it would cut (an image's tokens are fed together)."""
    return next((m.start for m in media if m.start < keep < m.end), keep)


def _prefill_order(slot: Slot) -> tuple[bool, float]:
    """Which waiting prompt a step feeds first: the short ones (their stream starts in this step, at little cost to
    it), then the others oldest first. A short request arriving while a long prompt is read in chunks would
    otherwise wait for that prompt's whole prefill; the long prompt still gets the rest of every step's budget."""
    return len(slot.feed) - slot.prompt_pos > _SHORT_PROMPT, slot.started_at


def _takes(slot: Slot, scales: Scales | None) -> bool:
    """Whether `slot`'s job is decoded in a step of LoRA `scales` (None: every step)."""
    return scales is None or (slot.job is not None and slot.job.adapters == scales)


class Scheduler:
    def __init__(
        self,
        model: LlamaModel,
        ctx: LlamaContext,
        sink: Sink,
        *,
        batch_size: int,
        embedding_context: Callable[[], LlamaContext] | None = None,
        drafter: Drafter | None = None,
        adapters: AdapterScales | None = None,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.sink = sink
        self.batch_size = batch_size
        self.n_ctx_seq = ctx.n_ctx_seq
        self.slots = [Slot(seq) for seq in range(ctx.shape.n_seq_max)]
        self.stats = EngineStats()
        self.drafter = drafter
        self.adapters = adapters  # LoRA scales per request (see adapters.py)
        self._adapter_turn = 0
        guesses = drafter.max_tokens if drafter is not None else 0
        self._batch = Batch(max(batch_size, len(self.slots) * (1 + guesses)))
        self._make_embedding_context = embedding_context
        self._embedding_ctx: LlamaContext | None = None
        self._embedding_batch: Batch | None = None
        self._cond = threading.Condition()
        self._queue: deque[GenerationJob] = deque()
        self._embedding_queue: deque[EmbeddingJob] = deque()
        self._cancelled: set[int] = set()
        self._arriving = 0  # requests being prepared that will be submitted (see arriving())
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from other threads ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="somner-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: GenerationJob) -> None:
        with self._cond:
            if self._stopping:
                job.sampler.close()
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

    def submit_embedding(self, job: EmbeddingJob) -> None:
        with self._cond:
            if self._stopping:
                raise EngineFailed("the engine is shutting down")
            self._embedding_queue.append(job)
            self._cond.notify()

    # -- the engine thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (
                        self._stopping
                        or self._cancelled
                        or self._embedding_queue
                        or (self._queue and self._free_slot_exists())
                        or any(slot.job is not None for slot in self.slots)
                    ):
                        self._cond.wait()
                    if self._stopping:
                        break
                    self._gather_burst_locked()
                    cancelled, self._cancelled = self._cancelled, set()
                    embeddings = list(self._embedding_queue)
                    self._embedding_queue.clear()
                    admitted = self._admit_locked(cancelled)
                outputs: list[Output] = []
                self._apply_cancellations(cancelled, outputs)
                for job in admitted:
                    self._assign(job)
                if embeddings:
                    self._run_embeddings(embeddings)
                self._step(outputs)
                if outputs:
                    self.sink(outputs)
        except BaseException:
            log.exception("engine loop crashed")
            raise
        finally:
            self._fail_everything("the engine stopped")

    def _gather_burst_locked(self) -> None:
        """From idle, let requests that are still being prepared join the first step.

        Requests sent together reach the scheduler some milliseconds apart (each is read, parsed and tokenized
        first, and the cores are busy). Starting the first alone would make the rest wait a whole prefill step,
        and their prefill would then stall its decoding. So when nothing is generating, the scheduler waits
        (briefly, bounded) for requests the server has announced but not yet submitted. A lone request has
        nothing to wait for.
        """
        if any(slot.job is not None for slot in self.slots):
            return
        deadline = time.monotonic() + _MAX_GATHER
        free = sum(1 for slot in self.slots if slot.job is None)
        while self._arriving and self._queue and len(self._queue) < free and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap the preparation of a request that will be submitted: the scheduler may wait for it to join."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify()

    def _free_slot_exists(self) -> bool:
        return any(slot.job is None for slot in self.slots)

    def _admit_locked(self, cancelled: set[int]) -> list[GenerationJob]:
        """Pop queued jobs for the free slots (FIFO); jobs cancelled while queued are dropped here."""
        free = sum(1 for slot in self.slots if slot.job is None)
        admitted: list[GenerationJob] = []
        while self._queue and len(admitted) < free:
            job = self._queue.popleft()
            if job.id in cancelled:
                cancelled.discard(job.id)
                job.sampler.close()
                with self.stats.lock:
                    self.stats.cancelled += 1
                continue
            admitted.append(job)
        if cancelled:
            kept = deque(job for job in self._queue if job.id not in cancelled)
            for job in self._queue:
                if job.id in cancelled:
                    job.sampler.close()
                    cancelled.discard(job.id)
                    with self.stats.lock:
                        self.stats.cancelled += 1
            self._queue = kept
        with self.stats.lock:
            self.stats.queued = len(self._queue)
        return admitted

    def _apply_cancellations(self, cancelled: set[int], outputs: list[Output]) -> None:
        if not cancelled:
            return
        for slot in self.slots:
            if slot.job is not None and slot.job.id in cancelled:
                self._release(slot)
                with self.stats.lock:
                    self.stats.cancelled += 1

    def _assign(self, job: GenerationJob) -> None:
        """Put `job` in a free slot (`_slot_for`) and drop the rest of that slot's cache."""
        slot, best_common = self._slot_for(job)
        # The last prompt tokens are evaluated again even when cached: their logits give the first output token,
        # and recomputing a run of them keeps a repeated prompt's numerics identical to its first time.
        leader = self._leader_for(job)
        keep = 0 if leader is not None else max(0, min(best_common, len(job.prompt) - _TAIL_TOKENS))
        donor = self._donor_for(job, slot, keep) if leader is None else None
        awaits = self._prefilling_donor_for(job, slot, keep) if leader is None else None
        if awaits is not None and donor is not None:
            if awaits[2] >= donor[1] + _MIN_SHARED:
                donor = None  # another slot is computing much more of it: wait for that (see _copy_awaited)
            else:
                awaits = None
        if donor is not None:
            donor_slot = donor[0]
            # Another slot (busy or not) holds a longer part of this prompt, e.g. a system prompt many users
            # share: copy its cache rather than compute that part again.
            self.ctx.seq_remove(slot.seq, 0, -1)
            if self.ctx.seq_copy(donor_slot.seq, slot.seq):
                keep = min(donor[1], len(job.prompt) - _TAIL_TOKENS)
                slot.tokens = list(donor_slot.tokens)
                with self.stats.lock:
                    self.stats.shared_prefixes += 1
            else:
                keep = 0
                slot.tokens = []
        keep = _before_media(job.media, keep)
        reuse = self.ctx.keep_prefix(slot.seq, keep)
        del slot.tokens[reuse:]
        slot.adapters = job.adapters
        if self.drafter is not None:
            self.drafter.keep(slot.seq, slot.tokens)
        slot._reset_job_state()
        slot.job = job
        slot.feed = job.prompt
        slot.prompt_pos = reuse
        slot.cached = reuse
        slot.stops = StopMatcher(job.stop)
        slot.guard = BannedStrings(job.banned) if job.banned else None
        slot.leader = leader
        slot.awaits = awaits
        slot.started_at = time.perf_counter()
        with self.stats.lock:
            self.stats.active += 1
            self.stats.cached_tokens += reuse

    def _slot_for(self, job: GenerationJob) -> tuple[Slot, int]:
        """The free slot with the longest reusable prefix of `job`'s prompt, when that is worth keeping; else the
        free slot that keeps the busy ones closest together. With the length of its reusable prefix."""
        commons = {
            slot.seq: common_prefix(slot.tokens, job.prompt) if slot.adapters == job.adapters else 0
            for slot in self.slots
            if slot.job is None
        }
        best = max(
            (slot for slot in self.slots if slot.seq in commons),
            key=lambda slot: (commons[slot.seq], -slot.last_used),  # (of equals, the least recently used)
        )
        if min(commons[best.seq], len(job.prompt) - _TAIL_TOKENS) < _MIN_SHARED:
            best = self._packed_slot()
        return best, commons[best.seq]

    def _packed_slot(self) -> Slot:
        """A free slot whose cache is not worth keeping (fewer than _MIN_SHARED tokens), else the least recently
        used; of equals, the one that keeps the busy slots' numbers in the narrowest range, the lowest of those
        (see "Consecutive slots" in the design note: a slot elsewhere is moved next to the others later)."""
        busy = [slot.seq for slot in self.slots if slot.job is not None]
        low, high = (min(busy), max(busy)) if busy else (len(self.slots), -1)
        free = [slot for slot in self.slots if slot.job is None]

        def cost(slot: Slot) -> tuple[bool, float, int, int]:
            worth = len(slot.tokens) >= _MIN_SHARED
            return worth, slot.last_used if worth else 0.0, max(high, slot.seq) - min(low, slot.seq), slot.seq

        return min(free, key=cost)

    def _compact(self) -> None:
        """Move scattered busy sequences into the gaps between the others, so that the busy slots' numbers are
        consecutive (see "Consecutive slots" in the design note). The busy range is placed where it needs the
        fewest moves; slots tied to others (a request's choices waiting for its prompt, a prompt awaited by
        another) stay where they are, and the range must include them."""
        busy = [slot for slot in self.slots if slot.job is not None]
        count = len(busy)
        if count < 2 or busy[-1].seq - busy[0].seq + 1 == count:
            return
        tied = {id(s.leader) for s in self.slots if s.leader is not None}
        tied |= {id(s.awaits[0]) for s in self.slots if s.awaits is not None}
        pinned = [s.seq for s in busy if s.leader is not None or s.awaits is not None or id(s) in tied]
        best: tuple[int, int] | None = None
        for low in range(len(self.slots) - count + 1):
            if any(not low <= seq < low + count for seq in pinned):
                continue
            moves = sum(1 for s in busy if not low <= s.seq < low + count)
            if best is None or moves < best[0]:
                best = (moves, low)
        if best is None:
            return
        window = range(best[1], best[1] + count)
        for slot in [s for s in busy if s.seq not in window]:
            gap = next(s for s in self.slots if s.seq in window and s.job is None)
            if not self._move(slot, gap, window):
                return

    def _move(self, slot: Slot, gap: Slot, window: range) -> bool:
        """Move busy `slot`'s sequence to free `gap`'s number: its cache is copied there, and `gap` takes the old
        number with the copy left there as its prefix cache. A `gap` cache worth keeping first moves to the free
        slot outside `window` whose cache is worth least. False when llama.cpp did not copy (nothing moved)."""
        if len(gap.tokens) >= _MIN_SHARED:
            spare = min(
                (s for s in self.slots if s.job is None and s.seq not in window),
                key=lambda s: (len(s.tokens), s.last_used),
                default=None,
            )
            if spare is not None and len(spare.tokens) < len(gap.tokens):
                self.ctx.seq_remove(spare.seq, 0, -1)
                spare.tokens = []
                if self.ctx.seq_copy(gap.seq, spare.seq):
                    self._swap_numbers(gap, spare)  # (`spare`, now at the gap's number, is overwritten below)
                    gap = spare
        self.ctx.seq_remove(gap.seq, 0, -1)
        gap.tokens = []
        if not self.ctx.seq_copy(slot.seq, gap.seq):
            self.ctx.seq_remove(gap.seq, 0, -1)
            return False
        gap.tokens, gap.adapters, gap.last_used = list(slot.tokens), slot.adapters, time.monotonic()
        self._swap_numbers(slot, gap)
        with self.stats.lock:
            self.stats.slot_moves += 1
        return True

    def _swap_numbers(self, a: Slot, b: Slot) -> None:
        """Two slots trade sequence numbers (their caches have been copied accordingly); `slots` stays in order."""
        a.seq, b.seq = b.seq, a.seq
        self.slots = sorted(self.slots, key=lambda s: s.seq)
        if self.drafter is not None:  # (the draft cache stays in place: each number keeps what its new slot shares)
            self.drafter.keep(a.seq, a.tokens)
            self.drafter.keep(b.seq, b.tokens)

    def _donor_for(self, job: GenerationJob, slot: Slot, keep: int) -> tuple[Slot, int] | None:
        """Another slot whose cache holds at least _MIN_SHARED more of `job`'s prompt than `slot` keeps, and can
        still be cut there (sliding-window layers keep only their window: see LlamaContext.keep_prefix)."""
        best: Slot | None = None
        best_common = keep + _MIN_SHARED - 1
        limit = len(job.prompt) - _TAIL_TOKENS
        for other in self.slots:
            if other is slot or other.adapters != job.adapters:
                continue
            common = min(common_prefix(other.tokens, job.prompt), limit)
            if common > best_common and self.ctx.can_keep(other.seq, common):
                best, best_common = other, common
        return None if best is None else (best, best_common)

    def _prefilling_donor_for(
        self, job: GenerationJob, slot: Slot, keep: int
    ) -> tuple[Slot, GenerationJob, int] | None:
        """A slot now prefilling a prompt that starts with at least _MIN_SHARED more of `job`'s prompt than `slot`
        keeps (a burst of requests with one system prompt): `job` waits for it rather than computing that start
        again beside it."""
        limit = len(job.prompt) - _TAIL_TOKENS
        best: tuple[Slot, GenerationJob, int] | None = None
        for other in self.slots:
            if other is slot or other.job is None or other.awaits is not None or other.leader is not None:
                continue
            if not other.prefilling or other.adapters != job.adapters:
                continue
            common = min(common_prefix(other.feed, job.prompt), limit)
            if common >= keep + _MIN_SHARED and common > other.prompt_pos and (best is None or common > best[2]):
                best = (other, other.job, common)
        return best

    def _copy_awaited(self) -> None:
        """Slots waiting for another's prefill of their start (`awaits`): copy it once it is in that cache; stop
        waiting (and prefill it themselves) when that slot's request ended before it got there."""
        for slot in self.slots:
            if slot.awaits is None or slot.job is None:
                continue
            source, source_job, n = slot.awaits
            if common_prefix(source.tokens, slot.feed) < n:
                if source.job is not source_job or not source.prefilling:
                    slot.awaits = None  # (its request ended, or it was cut off: this one computes it)
                continue
            slot.awaits = None
            if not self.ctx.can_keep(source.seq, n):
                continue
            self.ctx.seq_remove(slot.seq, 0, -1)
            if not self.ctx.seq_copy(source.seq, slot.seq):
                slot.tokens, slot.prompt_pos, slot.cached = [], 0, 0
                continue
            reuse = self.ctx.keep_prefix(slot.seq, _before_media(slot.job.media, n))
            slot.tokens = source.tokens[:reuse]
            if self.drafter is not None:
                self.drafter.keep(slot.seq, slot.tokens)
            with self.stats.lock:
                self.stats.cached_tokens += reuse - slot.cached
                self.stats.shared_prefixes += 1
            slot.prompt_pos = slot.cached = reuse

    def _leader_for(self, job: GenerationJob) -> Slot | None:
        """A slot prefilling the prompt of another choice of `job`'s request, if one is (its first prefill: a choice
        that went back for a banned string prefills more than the prompt)."""
        if job.group is None:
            return None
        for slot in self.slots:
            other = slot.job
            joinable = other is not None and other.group == job.group and slot.feed is other.prompt
            if joinable and slot.leader is None and slot.prefilling:
                return slot
        return None

    def _share_prompt(self, leader: Slot) -> None:
        """`leader` has just prefilled its prompt: the choices waiting for it copy its cache and sample their first
        token from its last row, in this step."""
        for slot in self.slots:
            if slot.leader is not leader:
                continue
            slot.leader = None
            if not self.ctx.seq_copy(leader.seq, slot.seq):  # (then it prefills the prompt itself)
                continue
            slot.tokens = list(leader.tokens)
            slot.prompt_pos = len(slot.feed)
            slot.cached = len(slot.feed)
            slot.row = leader.row
            with self.stats.lock:
                self.stats.cached_tokens += len(slot.feed)

    def _release(self, slot: Slot) -> None:
        job = slot.job
        if job is None:
            return
        followers = [other for other in self.slots if other.leader is slot]
        for follower in followers:  # (the first prefills the prompt itself, for the others)
            follower.leader = followers[0] if follower is not followers[0] else None
        job.sampler.close()
        slot.job = None
        slot.last_used = time.monotonic()
        slot._reset_job_state()
        with self.stats.lock:
            self.stats.active -= 1

    def _step(self, outputs: list[Output]) -> None:
        step_started = time.perf_counter()
        self._copy_awaited()  # (also when nothing else runs: a slot whose source ended prefills itself)
        self._compact()
        scales = self._step_adapters()
        self._feed_media(scales, outputs)
        if self.drafter is not None:
            self._guess(scales)
        prefill = self._fill_batch(scales)
        if self._batch.size == 0:
            return
        if self.adapters is not None and scales is not None:
            self.adapters.use(scales)
        started = time.perf_counter()
        try:
            self.ctx.decode(self._batch)
        except EngineError as exc:
            log.error("decode failed: %s", exc)
            for slot in self.slots:
                if slot.job is not None and (slot.row >= 0 or any(s is slot for s, _ in prefill)):
                    self._fail(slot, outputs, EngineFailed("the engine failed to process this request"))
            return
        decoded = time.perf_counter()
        for slot, take in prefill:
            slot.tokens.extend(slot.feed[slot.prompt_pos : slot.prompt_pos + take])
            slot.prompt_pos += take
            with self.stats.lock:
                self.stats.prompt_tokens += take
            if not slot.prefilling:
                self._share_prompt(slot)
        self._copy_awaited()
        for slot in self.slots:
            if slot.row < 0 or slot.job is None:
                continue
            if slot.fed:
                slot.tokens.append(slot.last_token)  # the token fed this step is now in the cache
            if slot.guesses:
                self._advance_guessed(slot, outputs)
            else:
                self._advance(slot, outputs)
        with self.stats.lock:
            self.stats.steps += 1
            self.stats.decode_seconds += decoded - started
            self.stats.step_seconds += time.perf_counter() - step_started

    def _feed_media(self, scales: Scales | None, outputs: list[Output]) -> None:
        """Decode the images whose turn it is: a slot whose prompt has reached an image feeds it now, in a decode
        of its own (an image's tokens may attend to each other both ways), before this step's batch."""
        for slot in self.slots:
            job = slot.job
            if job is None or not job.media or slot.leader is not None or not _takes(slot, scales):
                continue
            media = _media_at(job.media, slot.prompt_pos)
            while media is not None and slot.prefilling:
                if self.adapters is not None and scales is not None:
                    self.adapters.use(scales)
                try:
                    self.ctx.decode_embeddings(media.embeddings, media.start, slot.seq, non_causal=media.non_causal)
                except EngineError as exc:
                    log.error("image decode failed: %s", exc)
                    self._fail(slot, outputs, EngineFailed("the engine failed to process this request's image"))
                    break
                slot.tokens.extend(slot.feed[media.start : media.end])
                slot.prompt_pos = media.end
                with self.stats.lock:
                    self.stats.prompt_tokens += media.end - media.start
                media = _media_at(job.media, slot.prompt_pos)

    def _step_adapters(self) -> Scales | None:
        """The LoRA scales of this step's sequences (see adapters.py); None: every sequence's (no adapters)."""
        if self.adapters is None:
            return None
        waiting = [
            (slot.job.adapters, slot.started_at)
            for slot in self.slots
            if slot.job is not None and (not slot.prefilling or slot.leader is None)
        ]
        self._adapter_turn += 1
        return step_scales(waiting, self._adapter_turn)

    def _fill_batch(self, scales: Scales | None = None) -> list[tuple[Slot, int]]:
        """One token per generating slot, then prompt chunks within the step's budget (oldest request first);
        with `scales`, only the slots of jobs with those LoRA scales. Sets each slot's `row` (the batch row to
        sample from, or -1); returns (slot, prompt tokens taken)."""
        batch = self._batch
        batch.clear()
        decoding = False
        for slot in self.slots:
            slot.row = -1
            slot.fed = slot.job is not None and not slot.prefilling and _takes(slot, scales)
            if slot.fed:
                slot.row = batch.add(slot.last_token, len(slot.tokens), slot.seq, True)
                if slot.guesses:
                    batch.add_run(slot.guesses, len(slot.tokens) + 1, slot.seq, True, logits_all=True)
                decoding = True
        budget = self.batch_size - batch.size
        if decoding:
            budget = min(budget, max(_MIN_PREFILL_WHILE_DECODING, self.batch_size // 2))
        prefill: list[tuple[Slot, int]] = []
        waiting = (  # (followers wait: _share_prompt)
            s for s in self.slots if s.prefilling and s.leader is None and s.awaits is None and _takes(s, scales)
        )
        for slot in sorted(waiting, key=_prefill_order):
            if budget <= 0:
                break
            end = _next_media(slot.job.media, slot.prompt_pos, len(slot.feed)) if slot.job else len(slot.feed)
            remaining = end - slot.prompt_pos  # (up to the next image: it is fed on its own, _feed_media)
            take = min(budget, remaining)
            if end == len(slot.feed) and take < remaining and remaining - take < _TAIL_TOKENS:
                take = remaining - _TAIL_TOKENS  # never leave a short tail chunk (see _TAIL_TOKENS)
            if take <= 0:
                continue
            piece = slot.feed[slot.prompt_pos : slot.prompt_pos + take]
            last = slot.prompt_pos + take == len(slot.feed)
            row = batch.add_run(piece, slot.prompt_pos, slot.seq, last)
            if last:
                slot.row = row
            prefill.append((slot, take))
            budget -= take
        return prefill

    def _guess(self, scales: Scales | None = None) -> None:
        """Let the draft model guess the next tokens of every generating slot this step decodes (speculative.py)."""
        assert self.drafter is not None
        wishes: list[Wish] = []
        for slot in self.slots:
            slot.guesses = []
            job = slot.job
            if job is None or slot.prefilling or slot.generated == 0 or not _takes(slot, scales):
                continue
            # Guesses must leave room for the token sampled after them, within max_tokens and the context.
            limit = min(self.drafter.max_tokens, job.max_tokens - slot.generated - 1)
            limit = min(limit, self.n_ctx_seq - len(slot.tokens) - 2)
            wishes.append(Wish(slot.seq, slot.tokens, slot.last_token, max(0, limit)))
        if not wishes:
            return
        self.drafter.propose(wishes)
        for wish in wishes:
            self.slots[wish.seq].guesses = wish.guesses
            with self.stats.lock:
                self.stats.drafted_tokens += len(wish.guesses)

    def _advance_guessed(self, slot: Slot, outputs: list[Output]) -> None:
        """Sample `slot` row by row along its guesses while they match what its sampler draws; then drop the
        positions no sampled token confirmed, from this context and the draft's."""
        guesses = slot.guesses
        first = slot.row
        seq = slot.seq
        accepted = 0
        for i in range(len(guesses) + 1):
            slot.row = first + i
            if not self._advance(slot, outputs) or slot.prefilling:  # (ended, or went back: see _rewind)
                break
            if i == len(guesses) or slot.last_token != guesses[i]:
                break
            slot.tokens.append(guesses[i])  # confirmed: its cache position holds the token actually drawn
            accepted += 1
        with self.stats.lock:
            self.stats.accepted_tokens += accepted
        self.ctx.seq_remove(seq, len(slot.tokens), -1)
        assert self.drafter is not None
        self.drafter.truncate(seq, len(slot.tokens))  # (its cache holds the slot's tokens, then unchecked guesses)
        slot.guesses = []

    def _advance(self, slot: Slot, outputs: list[Output]) -> bool:
        """Sample the next token of `slot` and turn it into output; False when that ended the sequence."""
        job = slot.job
        assert job is not None
        banned = slot.bans.get(slot.generated, ()) if slot.bans else ()
        thinking = job.thinking
        forced = thinking.forced() if thinking is not None else None
        if forced is not None:  # (the thinking budget is spent: the engine closes the thought)
            token = forced
            job.sampler.accept(token)
        else:
            try:
                token = job.sampler.sample(self.ctx, slot.row, generated=slot.generated, banned=banned)
            except NoCandidates:
                self._end(slot, outputs, FinishReason.STOP)
                return False
        if not slot.first_token_at:
            slot.first_token_at = time.perf_counter()
        slot.generated += 1
        slot.output.append(token)
        with self.stats.lock:
            self.stats.generated_tokens += 1
        logprobs = self._logprobs(slot, token) if job.logprobs is not None else None
        if self.model.is_eog(token):
            self._end(slot, outputs, FinishReason.STOP, after=logprobs)
            return False
        text = slot.decoder.feed(self.model.piece(token))
        if slot.guard is not None:
            held = slot.guard.push(text, whole=not slot.decoder.pending, logprobs=logprobs)
            if not isinstance(held, Released):
                return self._rewind(slot, outputs, slot.guard.base + held)
            text, logprobs = held.text, (held.logprobs or None) if job.logprobs is not None else None
        if thinking is not None:
            thinking.feed(text)
        emit, stopped = slot.stops.feed(text)
        if stopped:
            self._finish(slot, outputs, FinishReason.STOP, emit, logprobs)
            return False
        slot.last_token = token
        # The sampled token is fed next step at position len(tokens); it must fit in the sequence's cells.
        if slot.generated >= job.max_tokens or len(slot.tokens) >= self.n_ctx_seq:
            self._end(slot, outputs, FinishReason.LENGTH, emit, logprobs)
            return False
        if emit or logprobs:
            outputs.append((job, Chunk(text=emit, logprobs=logprobs)))
        return True

    def _rewind(self, slot: Slot, outputs: list[Output], start: int) -> bool:
        """A banned string began with generated token `start`: go back to just before it and ban it there (see the
        design note). False when the sequence ends instead (too many rewinds)."""
        job = slot.job
        assert job is not None
        slot.decoder = IncrementalDecoder()  # (rewind points are whole characters: nothing of what follows stays)
        if slot.rewinds >= _MAX_REWINDS:
            log.info("sequence %d went back %d times for banned strings; it ends there", slot.seq, slot.rewinds)
            self._end(slot, outputs, FinishReason.STOP)
            return False
        slot.rewinds += 1
        slot.bans.setdefault(start, set()).add(slot.output[start])
        for later in [p for p in slot.bans if p > start]:
            del slot.bans[later]  # (made for a context that is gone)
        del slot.output[start:]
        slot.generated = start
        slot.feed = [*job.prompt, *slot.output]
        # The cache keeps all but the last token of `feed`, which is fed again for the logits of position `start`.
        kept = self.ctx.keep_prefix(slot.seq, len(slot.feed) - 1)
        del slot.tokens[kept:]
        slot.prompt_pos = kept
        if self.drafter is not None:
            self.drafter.keep(slot.seq, slot.tokens)
        job.sampler.rewind(slot.output)
        with self.stats.lock:
            self.stats.rewinds += 1
        return True

    def _end(
        self,
        slot: Slot,
        outputs: list[Output],
        reason: FinishReason,
        emit: str = "",
        logprobs: list[TokenLogprob] | None = None,
        *,
        after: list[TokenLogprob] | None = None,
    ) -> None:
        """Finish with `emit` and whatever is still held back (an incomplete character, a partial stop string, text
        that could have become a banned string); `after`: log-probabilities of a token that added no text."""
        job = slot.job
        assert job is not None
        held = slot.guard.flush() if slot.guard is not None else Released()
        text, stopped = slot.stops.feed(held.text + slot.decoder.flush())
        if stopped:
            reason = FinishReason.STOP  # (the held tail completed a stop string)
        else:
            text += slot.stops.flush()
        if job.logprobs is not None:
            logprobs = [*(logprobs or []), *held.logprobs, *(after or [])]
        self._finish(slot, outputs, reason, emit + text, logprobs)

    def _logprobs(self, slot: Slot, token: int) -> list[TokenLogprob]:
        job = slot.job
        assert job is not None
        assert job.logprobs is not None
        chosen, top = logprobs_of(self.ctx.logits(slot.row), token, job.logprobs)
        piece = self.model.piece(token)
        return [
            TokenLogprob(
                token=piece.decode("utf-8", errors="replace"),
                logprob=chosen,
                bytes=list(piece),
                top=[
                    TopLogprob(
                        token=self.model.piece(t).decode("utf-8", errors="replace"),
                        logprob=lp,
                        bytes=list(self.model.piece(t)),
                        id=t,
                    )
                    for t, lp in top
                ],
                id=token,
            )
        ]

    def _finish(
        self,
        slot: Slot,
        outputs: list[Output],
        reason: FinishReason,
        text: str,
        logprobs: list[TokenLogprob] | None,
    ) -> None:
        job = slot.job
        assert job is not None
        now = time.perf_counter()
        first = slot.first_token_at or now
        usage = Usage(prompt_tokens=len(job.prompt), completion_tokens=slot.generated, cached_tokens=slot.cached)
        timings = Timings(prompt_ms=(first - slot.started_at) * 1000.0, predicted_ms=(now - first) * 1000.0)
        chunk = Chunk(text=text, logprobs=logprobs, finish_reason=reason, usage=usage, timings=timings)
        chunk.stop_sequence = slot.stops.matched
        outputs.append((job, chunk))
        self._release(slot)
        with self.stats.lock:
            self.stats.finished += 1

    def _fail(self, slot: Slot, outputs: list[Output], error: SomnerError) -> None:
        job = slot.job
        assert job is not None
        outputs.append((job, error))
        # The sequence's cache may be inconsistent after a failed decode: forget it.
        self.ctx.seq_remove(slot.seq, 0, -1)
        slot.tokens.clear()
        if self.drafter is not None:
            self.drafter.keep(slot.seq, slot.tokens)
        self._release(slot)
        with self.stats.lock:
            self.stats.failed += 1

    def _fail_everything(self, reason: str) -> None:
        outputs: list[Output] = []
        for slot in self.slots:
            if slot.job is not None:
                self._fail(slot, outputs, EngineFailed(reason))
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
            embedding_jobs = list(self._embedding_queue)
            self._embedding_queue.clear()
        for job in queued:
            job.sampler.close()
            outputs.append((job, EngineFailed(reason)))
        for embedding_job in embedding_jobs:
            embedding_job.done(EngineFailed(reason))
        if outputs:
            self.sink(outputs)

    # -- embeddings ------------------------------------------------------------------------------------

    def _run_embeddings(self, jobs: list[EmbeddingJob]) -> None:
        """Embed every input of every waiting job, packing as many sequences per decode as fit."""
        if self._embedding_ctx is None:
            if self._make_embedding_context is None:
                for job in jobs:
                    job.done(EngineFailed("this engine does not serve embeddings"))
                return
            try:
                self._embedding_ctx = self._make_embedding_context()
            except EngineError as exc:
                log.error("cannot create the embedding context: %s", exc)
                for job in jobs:
                    job.done(EngineFailed("the engine could not set up embeddings"))
                return
            self._embedding_batch = Batch(self._embedding_ctx.shape.n_batch)
        ctx = self._embedding_ctx
        batch = self._embedding_batch
        assert batch is not None
        work = [(job, i, tokens) for job in jobs for i, tokens in enumerate(job.inputs)]
        results: dict[int, list[list[float]]] = {job.id: [[] for _ in job.inputs] for job in jobs}
        failed: set[int] = set()
        pos = 0
        while pos < len(work):
            batch.clear()
            group: list[tuple[EmbeddingJob, int, list[int]]] = []
            while pos < len(work) and len(group) < ctx.shape.n_seq_max:
                tokens = work[pos][2]
                if group and len(tokens) > batch.free:
                    break
                batch.add_run(tokens, 0, len(group), True, logits_all=True)
                group.append(work[pos])
                pos += 1
            try:
                ctx.decode(batch)
                for seq, (job, index, _tokens) in enumerate(group):
                    vector = ctx.sequence_embedding(seq)
                    norm = float(np.linalg.norm(vector)) if job.normalize else 0.0
                    results[job.id][index] = (vector / norm if norm > 0 else vector).tolist()
            except EngineError as exc:
                log.error("embedding decode failed: %s", exc)
                failed.update(job.id for job, _, _ in group)
            finally:
                ctx.clear()
        for job in jobs:
            if job.id in failed:
                job.done(EngineFailed("the engine failed to embed this input"))
            else:
                job.done(results[job.id])
                with self.stats.lock:
                    self.stats.embeddings += len(job.inputs)
