"""The `pool` backend: several engines (worker, process and upstream members) serving one model as one backend.

- Choice: among the usable members (alive, up by active checks, not ejected), the one with the fewest requests in
  flight relative to its weight; ties go round in turn. When no member is usable the pool does not refuse: it
  tries the alive ones anyway (a request that might work beats a certain 503).
- Failover: a request whose member fails before the first chunk (no connection, a 5xx, a transport error, or the
  per-member connect / first-token timeout) is retried once on another member. The first chunk is read here,
  before the stream is handed on, so nothing has reached the client yet when a retry happens; after it, a failure
  ends the stream as with any backend. 4xx answers are the request's fault: neither retried nor held against the
  member.
- Health: see `health.py`. A probe every `check_interval` (remote members: `GET /health`, else `/v1/models`; local
  ones: their process is alive and its engine answers its health check); a local member whose process died is
  restarted by the pool, with the ejection backoff between attempts, and one that is alive but hung (down by its
  checks) is killed first.
- Lifecycle: the manager starts and stops the pool as one backend; the pool starts and stops its members. The pool
  starts when at least one member does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

from somner.core import ChatRequest, CompletionRequest, EmbeddingRequest, EmbeddingResult, RerankRequest, RerankResult
from somner.errors import BadRequest, EngineFailed, SomnerError, Unavailable
from somner.models.backends.base import Backend, ChunkStream, Reranks, SpeaksOpenAI, Supervised, Tokenizes
from somner.models.backends.health import HealthPolicy, HttpProbe, MemberHealth
from somner.models.backends.openai_http import EngineChunks
from somner.models.backends.passthrough import PassThrough
from somner.models.registry import ModelSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound=AsyncIterable[Any])
Clock = Callable[[], float]

Probe = Callable[[], Awaitable[str | None]]  # None: healthy; else why not (an `HttpProbe` for remote members)

_RECENT_ERRORS = 10
_NOTHING: Any = object()  # a stream that ended before its first item


def is_member_fault(exc: BaseException) -> bool:
    """Whether a failure counts against the member (and may be retried elsewhere before the first chunk): the
    engine's own failures (5xx, transport), not the request's (4xx)."""
    return isinstance(exc, SomnerError) and exc.status >= 500


def choose(loads: Sequence[tuple[int, float]], turn: int) -> int:
    """Which of the candidates (in flight, weight) takes the next request: the least outstanding relative to
    weight; among equals, the first from position `turn` on, so that equal members take turns."""
    count = len(loads)
    best, best_score = -1, 0.0
    for step in range(count):
        index = (turn + step) % count
        in_flight, weight = loads[index]
        score = (in_flight + 1) / weight
        if best < 0 or score < best_score:
            best, best_score = index, score
    return best


@dataclass(slots=True)
class Member:
    name: str
    kind: str  # worker, process, upstream
    backend: Backend
    health: MemberHealth
    weight: float = 1.0
    connect_timeout: float = 10.0
    first_token_timeout: float = 120.0
    probe: Probe | None = None  # None: the backend's `alive` is its health
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    retried_elsewhere: int = 0
    errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=_RECENT_ERRORS))
    restarting: bool = False
    next_restart: float = 0.0
    restarts_in_row: int = 0

    @property
    def local(self) -> bool:
        return self.kind != "upstream"


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """One member as the admin API shows it (times on the pool's clock)."""

    name: str
    kind: str
    weight: float
    state: str  # up, ejected, down, stopped
    alive: bool
    in_flight: int
    requests: int
    failures: int
    retried_elsewhere: int
    ejections: int
    ejected_for: float
    last_check: float | None
    last_check_error: str | None
    errors: list[tuple[float, str]]


class PoolBackend:
    def __init__(
        self,
        model_id: str,
        members: list[Member],
        *,
        check_interval: float = 5.0,
        check_timeout: float = 2.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not members:
            raise ValueError("a pool needs at least one member")
        self.model_id = model_id
        self.members = members
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self._clock = clock
        self._turns = itertools.count()
        self._started = False
        self._stopped = asyncio.Event()
        self._checker: asyncio.Task[None] | None = None
        self._restarts: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._started and not self._stopped.is_set() and any(m.backend.alive for m in self.members)

    async def start(self) -> None:
        self._stopped.clear()
        results = await asyncio.gather(*(m.backend.start() for m in self.members), return_exceptions=True)
        failed = [(m, r) for m, r in zip(self.members, results, strict=True) if isinstance(r, BaseException)]
        if len(failed) == len(self.members):
            await self._stop_members()
            raise failed[0][1]
        now = self._clock()
        for member, exc in failed:
            log.warning("pool %s: member %s did not start: %s", self.model_id, member.name, exc)
            member.health.mark_down(now, f"did not start: {exc}")
            self._note_error(member, f"did not start: {exc}")
        self._started = True
        self._checker = asyncio.create_task(self._check_forever(), name=f"pool-health-{self.model_id}")

    async def stop(self) -> None:
        self._stopped.set()
        self._started = False
        tasks = [t for t in (self._checker, *self._restarts) if t is not None]
        self._checker = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._stop_members()

    async def _stop_members(self) -> None:
        results = await asyncio.gather(*(m.backend.stop() for m in self.members), return_exceptions=True)
        for member, result in zip(self.members, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("pool %s: member %s did not stop cleanly: %s", self.model_id, member.name, result)
        for member in self.members:
            await _close(member.probe)

    async def wait_exit(self) -> int | None:
        """Only when stopped: members that die are noticed by the health checks and restarted by the pool."""
        await self._stopped.wait()
        return None

    # -- health ------------------------------------------------------------------------------------------------

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            await self.check_all()

    async def check_all(self) -> None:
        """Probe every member once (concurrently) and restart the local ones whose process died."""
        verdicts = await asyncio.gather(*(self._probe(m) for m in self.members))
        now = self._clock()
        for member, why in zip(self.members, verdicts, strict=True):
            if why is None:
                if member.health.check_passed(now):
                    log.info("pool %s: member %s is back up", self.model_id, member.name)
            else:
                if member.health.check_failed(now, why):
                    log.warning("pool %s: member %s is down: %s", self.model_id, member.name, why)
                    self._note_error(member, f"health check: {why}")
                if member.local and not member.restarting and now >= member.next_restart:
                    if not member.backend.alive:
                        self._restart(member, now)
                    elif not member.health.up and isinstance(member.backend, Supervised):
                        log.error("pool %s: member %s is hung: killing it", self.model_id, member.name)
                        self._restart(member, now)

    async def _probe(self, member: Member) -> str | None:
        if member.probe is None:
            if not member.backend.alive:
                return "its process is not running"
            if isinstance(member.backend, Supervised) and not await member.backend.responsive(self.check_timeout):
                return "its engine does not answer"
            return None
        try:
            return await asyncio.wait_for(member.probe(), self.check_timeout)
        except TimeoutError:
            return f"no answer within {self.check_timeout:g}s"

    def _restart(self, member: Member, now: float) -> None:
        member.restarting = True
        member.restarts_in_row += 1
        member.next_restart = now + member.health.policy.cooldown(member.restarts_in_row)

        async def restart() -> None:
            try:
                with contextlib.suppress(Exception):
                    if isinstance(member.backend, Supervised):
                        await member.backend.kill()  # (a hung engine would wait out SIGTERM's grace)
                    await member.backend.stop()
                await member.backend.start()
                member.restarts_in_row = 0
                log.info("pool %s: member %s restarted", self.model_id, member.name)
            except Exception as exc:
                self._note_error(member, f"restart failed: {exc}")
                log.warning("pool %s: member %s could not be restarted: %s", self.model_id, member.name, exc)
            finally:
                member.restarting = False

        task = asyncio.create_task(restart(), name=f"pool-restart-{member.name}")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _note_error(self, member: Member, message: str) -> None:
        member.errors.append((self._clock(), message))

    # -- choice and accounting ---------------------------------------------------------------------------------

    def _pick(self, tried: Sequence[Member], can: Callable[[Backend], bool]) -> Member | None:
        now = self._clock()
        open_to = [m for m in self.members if m not in tried and m.backend.alive and can(m.backend)]
        usable = [m for m in open_to if m.health.usable(now)] or open_to
        if not usable:
            return None
        return usable[choose([(m.in_flight, m.weight) for m in usable], next(self._turns) % len(usable))]

    def _begin(self, member: Member) -> None:
        member.in_flight += 1
        member.requests += 1

    def _end(self, member: Member, failure: BaseException | None, *, counted: bool) -> None:
        """A request on `member` is over: `failure` None is a success; `counted` False (cancelled, a 4xx) says
        nothing about the member's health."""
        member.in_flight -= 1
        if failure is None:
            if counted:
                member.health.request_succeeded()
            return
        if not counted:
            return
        member.failures += 1
        self._note_error(member, str(failure) or type(failure).__name__)
        cooldown = member.health.request_failed(self._clock())
        if cooldown is not None:
            log.warning(
                "pool %s: member %s ejected for %gs after failed requests", self.model_id, member.name, cooldown
            )

    def snapshot(self) -> list[MemberSnapshot]:
        now = self._clock()
        out = []
        for m in self.members:
            h = m.health
            if not self._started or not m.backend.alive:
                state = "stopped" if not self._started else "down"
            elif not h.up:
                state = "down"
            elif h.ejected(now):
                state = "ejected"
            else:
                state = "up"
            out.append(
                MemberSnapshot(
                    name=m.name,
                    kind=m.kind,
                    weight=m.weight,
                    state=state,
                    alive=m.backend.alive,
                    in_flight=m.in_flight,
                    requests=m.requests,
                    failures=m.failures,
                    retried_elsewhere=m.retried_elsewhere,
                    ejections=h.ejections,
                    ejected_for=max(h.ejected_until - now, 0.0),
                    last_check=h.last_check,
                    last_check_error=h.last_check_error,
                    errors=list(m.errors),
                )
            )
        return out

    # -- streams, with failover before the first item -----------------------------------------------------------

    async def _open(self, opener: Callable[[Backend], Awaitable[S]], can: Callable[[Backend], bool]) -> _Opened[S]:
        tried: list[Member] = []
        last: SomnerError | None = None
        while len(tried) < 2:
            member = self._pick(tried, can)
            if member is None:
                break
            if tried:
                tried[-1].retried_elsewhere += 1
                log.warning(
                    "pool %s: retrying on %s after %s failed: %s", self.model_id, member.name, tried[-1].name, last
                )
            tried.append(member)
            self._begin(member)
            try:
                return await self._first_item(member, opener)
            except SomnerError as exc:
                self._end(member, exc, counted=is_member_fault(exc))
                if not is_member_fault(exc):
                    raise
                last = exc
            except Exception as exc:
                self._end(member, exc, counted=True)
                raise
            except BaseException:
                self._end(member, None, counted=False)
                raise
        if last is not None:
            raise last
        raise Unavailable(f"No engine of the pool for '{self.model_id}' is running.", code="no_backend")

    async def _first_item(self, member: Member, opener: Callable[[Backend], Awaitable[S]]) -> _Opened[S]:
        """Open the stream on `member` and read its first item, each within the member's timeout (a timeout
        becomes `EngineFailed`, so it fails over like any engine failure)."""
        try:
            async with asyncio.timeout(member.connect_timeout):
                source = await opener(member.backend)
        except TimeoutError:
            raise EngineFailed(f"{member.name} did not accept the request in time") from None
        items = aiter(source)
        try:
            async with asyncio.timeout(member.first_token_timeout):
                first = await anext(items)
        except StopAsyncIteration:
            first = _NOTHING
        except BaseException as exc:
            await _close(source)
            if isinstance(exc, TimeoutError):
                raise EngineFailed(f"{member.name} sent no first token in time") from None
            raise
        return _Opened(member, source, items, first)

    async def _chunks(self, opener: Callable[[Backend], Awaitable[ChunkStream]]) -> EngineChunks:
        opened = await self._open(opener, _any)
        return EngineChunks(_Relay(self._end, opened), getattr(opened.source, "prompt_tokens", None))

    async def _events(self, opener: Callable[[Backend], Awaitable[PassThrough]]) -> PassThrough:
        opened = await self._open(opener, _speaks_openai)
        label = f"{opened.member.name} of the pool for {self.model_id}"
        return PassThrough(_Relay(self._end, opened), label, opened.source.prompt_tokens)

    async def chat(self, request: ChatRequest) -> ChunkStream:
        return await self._chunks(lambda b: b.chat(request))

    async def complete(self, request: CompletionRequest) -> ChunkStream:
        return await self._chunks(lambda b: b.complete(request))

    async def chat_events(self, request: ChatRequest) -> PassThrough:
        return await self._events(lambda b: _openai(b).chat_events(request))

    async def complete_events(self, request: CompletionRequest) -> PassThrough:
        return await self._events(lambda b: _openai(b).complete_events(request))

    # -- one-shot calls ----------------------------------------------------------------------------------------

    async def _call(
        self, call: Callable[[Backend], Awaitable[T]], can: Callable[[Backend], bool] = lambda _: True
    ) -> T:
        """A call with one answer, failed over once like a stream's opening."""
        tried: list[Member] = []
        last: SomnerError | None = None
        while len(tried) < 2:
            member = self._pick(tried, can)
            if member is None:
                break
            if tried:
                tried[-1].retried_elsewhere += 1
            tried.append(member)
            self._begin(member)
            try:
                result = await call(member.backend)
            except SomnerError as exc:
                self._end(member, exc, counted=is_member_fault(exc))
                if not is_member_fault(exc):
                    raise
                last = exc
                continue
            except BaseException as exc:
                self._end(member, exc, counted=isinstance(exc, Exception))
                raise
            self._end(member, None, counted=True)
            return result
        if last is not None:
            raise last
        if can is _tokenizes:
            raise BadRequest("The engines serving this model do not offer tokenization.", code="unsupported")
        if can is _reranks:
            raise BadRequest("The engines serving this model do not offer reranking.", code="unsupported")
        raise Unavailable(f"No engine of the pool for '{self.model_id}' is running.", code="no_backend")

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        return await self._call(lambda b: b.embed(request))

    async def rerank(self, request: RerankRequest) -> RerankResult:
        return await self._call(lambda b: _reranker(b).rerank(request), _reranks)

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        return await self._call(
            lambda b: _tokenizer(b).tokenize(
                text, add_special=add_special, with_pieces=with_pieces, parse_special=parse_special
            ),
            _tokenizes,
        )

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        return await self._call(lambda b: _tokenizer(b).detokenize(tokens, special=special), _tokenizes)

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        return await self._call(
            lambda b: _tokenizer(b).apply_template(request, add_generation_prompt=add_generation_prompt), _tokenizes
        )


@dataclass(slots=True)
class _Opened(Generic[S]):
    member: Member
    source: S
    items: AsyncIterator[Any]
    first: Any


class _Relay:
    """An opened stream's items (the first one already read), settling the member's accounts exactly once however
    the stream ends: run out (success), failed (held against the member when it is the engine's fault), or closed
    by the consumer, even before its first read (neither)."""

    def __init__(self, end: Callable[..., None], opened: _Opened[Any]) -> None:
        self._end = end
        self._opened = opened
        self._first = opened.first
        self._settled = False

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> Any:
        if self._settled:
            raise StopAsyncIteration
        if self._first is not _NOTHING:
            first, self._first = self._first, _NOTHING
            return first
        try:
            return await anext(self._opened.items)
        except StopAsyncIteration:
            await self._settle(None, counted=True)
            raise
        except Exception as exc:
            await self._settle(exc, counted=not isinstance(exc, SomnerError) or is_member_fault(exc))
            raise

    async def aclose(self) -> None:
        await self._settle(None, counted=False)

    async def _settle(self, failure: BaseException | None, *, counted: bool) -> None:
        if self._settled:
            return
        self._settled = True
        self._end(self._opened.member, failure, counted=counted)
        with anyio.CancelScope(shield=True):  # closing must finish even when the consumer is being cancelled
            await _close(self._opened.source)


async def _close(source: object) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _any(_: Backend) -> bool:
    return True


def _speaks_openai(backend: Backend) -> bool:
    return isinstance(backend, SpeaksOpenAI)


def _tokenizes(backend: Backend) -> bool:
    return isinstance(backend, Tokenizes)


def _reranks(backend: Backend) -> bool:
    return isinstance(backend, Reranks)


def _reranker(backend: Backend) -> Reranks:
    assert isinstance(backend, Reranks)  # members were chosen with `_reranks`
    return backend


def _openai(backend: Backend) -> SpeaksOpenAI:
    assert isinstance(backend, SpeaksOpenAI)  # members were chosen with `_speaks_openai`
    return backend


def _tokenizer(backend: Backend) -> Tokenizes:
    assert isinstance(backend, Tokenizes)  # members were chosen with `_tokenizes`
    return backend


# -- building a pool from its configuration ---------------------------------------------------------------------


def pool_for(spec: ModelSpec, make_member: Callable[[ModelSpec], Backend]) -> PoolBackend:
    """The pool a model entry with `backends:` describes; `make_member` builds each member's own backend."""
    entry = spec.entry
    settings = entry.pool
    policy = HealthPolicy.of(settings)
    members: list[Member] = []
    for index, described in enumerate(entry.backends):
        member_spec = ModelSpec(entry=entry.member_entry(described), engine=spec.engine, source=spec.source)
        kind = described.kind
        name = described.name or (described.url if described.url is not None else f"{kind}#{index}")
        member = Member(
            name=name,
            kind=kind,
            backend=make_member(member_spec),
            health=MemberHealth(policy),
            weight=described.weight,
            connect_timeout=described.connect_timeout or settings.connect_timeout,
            first_token_timeout=described.first_token_timeout or settings.first_token_timeout,
        )
        if described.url is not None:
            key = described.api_key or entry.api_key
            headers = {"authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
            member.probe = HttpProbe(described.url.removesuffix("/v1"), headers, settings.check_timeout)
        members.append(member)
    return PoolBackend(spec.id, members, check_interval=settings.check_interval, check_timeout=settings.check_timeout)
