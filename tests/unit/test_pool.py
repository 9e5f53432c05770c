"""The pool backend over scripted members and a fake clock: least-outstanding choice (weighted), failover before
the first chunk and none after it, passive ejection with exponential backoff, active health checks, restarts of
dead local members, delegation of one-shot calls, and the `backends:` configuration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from somner.core import (
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    Message,
    RerankRequest,
    RerankResult,
    SamplingParams,
    Usage,
)
from somner.errors import BadRequest, EngineFailed, ModelLoadFailed, Unavailable
from somner.models.backends.health import HealthPolicy, MemberHealth
from somner.models.backends.pool import Member, PoolBackend, choose, pool_for
from somner.models.memory import estimate_bytes
from somner.models.registry import ModelSpec
from somner.settings import EngineSettings, ModelEntry
from tests.fakes.gguf_files import make_gguf

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedMember:
    """A member engine whose behaviour the test sets: `mode` is ok, refuse (error before the stream), fail_first
    (the stream fails before its first chunk), fail_midway (after two chunks), bad_request (a 4xx), or hold (the
    stream waits for `release` before its first chunk)."""

    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name = name
        self.mode = mode
        self.alive_flag = False
        self.requests = 0
        self.starts = 0
        self.stops = 0
        self.start_error: Exception | None = None
        self.release = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.alive_flag

    async def start(self) -> None:
        self.starts += 1
        if self.start_error is not None:
            raise self.start_error
        self.alive_flag = True

    async def stop(self) -> None:
        self.stops += 1
        self.alive_flag = False

    async def wait_exit(self) -> int | None:
        await asyncio.Event().wait()
        return None

    async def _open(self) -> AsyncIterator[Chunk]:
        self.requests += 1
        if self.mode == "refuse":
            raise EngineFailed(f"{self.name} is not reachable", code="engine_unreachable")
        if self.mode == "bad_request":
            raise BadRequest("too long", code="context_length_exceeded")
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        if self.mode == "fail_first":
            raise EngineFailed(f"{self.name} stopped while generating")
        if self.mode == "hold":
            await self.release.wait()
        for i in range(4):
            if self.mode == "fail_midway" and i == 2:
                raise EngineFailed(f"{self.name} stopped while generating")
            yield Chunk(text=f"{self.name}{i} ")
        yield Chunk(finish_reason=FinishReason.STOP, usage=Usage(prompt_tokens=1, completion_tokens=4))

    async def chat(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        return await self._open()

    async def complete(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        return await self._open()

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        self.requests += 1
        if self.mode == "refuse":
            raise EngineFailed(f"{self.name} is not reachable")
        return EmbeddingResult(embeddings=[[1.0]], prompt_tokens=1)

    async def rerank(self, request: RerankRequest) -> RerankResult:
        self.requests += 1
        if self.mode == "refuse":
            raise EngineFailed(f"{self.name} is not reachable", code="engine_unreachable")
        return RerankResult(scores=[float(len(self.name))] * len(request.documents), prompt_tokens=2)

    async def tokenize(
        self, text: str, *, add_special: bool = False, with_pieces: bool = False, parse_special: bool = True
    ) -> list[Any]:
        return [self.name]

    async def detokenize(self, tokens: list[int], *, special: bool = True) -> str:
        return self.name

    async def apply_template(self, request: ChatRequest, *, add_generation_prompt: bool = True) -> str:
        return self.name


CHAT = ChatRequest(model="m", messages=[Message(role="user", content="hi")], sampling=SamplingParams())
POLICY = HealthPolicy(
    healthy_threshold=2, unhealthy_threshold=2, eject_after=2, eject_cooldown=10, max_eject_cooldown=35
)


def make_pool(
    *engines: ScriptedMember, clock: Clock | None = None, weights: list[float] | None = None, kind: str = "upstream"
) -> PoolBackend:
    members = [
        Member(
            name=engine.name,
            kind=kind,
            backend=engine,
            health=MemberHealth(POLICY),
            weight=(weights or [1.0] * len(engines))[i],
        )
        for i, engine in enumerate(engines)
    ]
    return PoolBackend("m", members, check_interval=3600, clock=clock or Clock())


async def text_of(stream: AsyncIterator[Chunk]) -> str:
    return "".join([chunk.text async for chunk in stream])


def member(pool: PoolBackend, name: str) -> Member:
    return next(m for m in pool.members if m.name == name)


def test_choice_is_least_outstanding_relative_to_weight() -> None:
    assert choose([(3, 1.0), (1, 1.0), (2, 1.0)], 0) == 1
    assert choose([(2, 1.0), (3, 2.0)], 0) == 1  # 3/2 < 2/1 (scored with the request about to start)
    assert [choose([(0, 1.0)] * 3, turn) for turn in range(4)] == [0, 1, 2, 0]  # equals take turns


async def test_requests_spread_by_outstanding_and_weight() -> None:
    engines = [ScriptedMember(name, "hold") for name in ("a", "b", "c")]
    pool = make_pool(*engines, weights=[2.0, 1.0, 1.0])
    await pool.start()
    for engine in engines:
        engine.release.set()  # each stream yields as soon as it is opened, and stays open until drained
    streams = [await pool.chat(CHAT) for _ in range(8)]
    assert [m.in_flight for m in pool.members] == [4, 2, 2]
    assert await text_of(streams[0]) == "a0 a1 a2 a3 "  # drained: a request of a is over
    assert [m.in_flight for m in pool.members] == [3, 2, 2]
    for stream in streams[1:]:
        await stream.aclose()  # type: ignore[attr-defined]
    assert [m.in_flight for m in pool.members] == [0, 0, 0]
    await pool.stop()


async def test_failover_before_the_first_chunk() -> None:
    for mode in ("refuse", "fail_first"):
        a, b = ScriptedMember("a", mode), ScriptedMember("b")
        pool = make_pool(a, b)
        await pool.start()
        outcomes = [await text_of(await pool.chat(CHAT)) for _ in range(2)]
        assert outcomes == ["b0 b1 b2 b3 ", "b0 b1 b2 b3 "], mode
        assert a.requests == 2 and b.requests == 2
        assert member(pool, "a").failures == 2 and member(pool, "a").retried_elsewhere == 2
        assert member(pool, "b").failures == 0
        assert member(pool, "a").errors[-1][1].startswith("a ")
        await pool.stop()


async def test_no_retry_after_the_first_chunk() -> None:
    a, b = ScriptedMember("a", "fail_midway"), ScriptedMember("b")
    pool = make_pool(a, b)
    await pool.start()
    member(pool, "b").in_flight = 5  # so that the pool picks a first
    stream = await pool.chat(CHAT)
    seen: list[str] = []
    with pytest.raises(EngineFailed):
        async for chunk in stream:
            seen.append(chunk.text)
    assert seen == ["a0 ", "a1 "]
    assert b.requests == 0
    assert member(pool, "a").failures == 1 and member(pool, "a").in_flight == 0
    await pool.stop()


async def test_a_bad_request_is_neither_retried_nor_held_against_the_member() -> None:
    a, b = ScriptedMember("a", "bad_request"), ScriptedMember("b")
    pool = make_pool(a, b)
    await pool.start()
    member(pool, "b").in_flight = 5
    with pytest.raises(BadRequest):
        await pool.chat(CHAT)
    assert b.requests == 0
    assert member(pool, "a").failures == 0 and member(pool, "a").in_flight == 0
    await pool.stop()


async def test_one_retry_only() -> None:
    engines = [ScriptedMember(name, "refuse") for name in ("a", "b", "c")]
    pool = make_pool(*engines)
    await pool.start()
    with pytest.raises(EngineFailed):
        await pool.complete(CompletionRequest(model="m", prompt="x", sampling=SamplingParams()))
    assert sum(e.requests for e in engines) == 2
    assert all(m.in_flight == 0 for m in pool.members)
    await pool.stop()


async def test_ejection_with_exponential_backoff() -> None:
    clock = Clock()
    a, b = ScriptedMember("a", "refuse"), ScriptedMember("b")
    pool = make_pool(a, b, clock=clock)
    await pool.start()
    for _ in range(2):  # eject_after=2: the second failure ejects a for 10s
        await text_of(await pool.chat(CHAT))
    assert [s.state for s in pool.snapshot()] == ["ejected", "up"]
    assert pool.snapshot()[0].ejected_for == 10
    for _ in range(4):
        await text_of(await pool.chat(CHAT))
    assert a.requests == 2  # nothing went to a while it was ejected
    clock.now += 10
    assert pool.snapshot()[0].state == "up"
    for _ in range(2):  # still broken: ejected again, for twice as long
        member(pool, "b").in_flight = 5
        await text_of(await pool.chat(CHAT))
    assert pool.snapshot()[0].ejected_for == 20
    clock.now += 20
    for _ in range(2):
        member(pool, "b").in_flight = 5
        await text_of(await pool.chat(CHAT))
    assert pool.snapshot()[0].ejected_for == 35  # 40, capped
    clock.now += 35
    a.mode = "ok"  # recovered: one success ends the run of ejections
    member(pool, "b").in_flight = 5
    assert await text_of(await pool.chat(CHAT)) == "a0 a1 a2 a3 "
    assert member(pool, "a").health.ejections_in_row == 0 and member(pool, "a").health.ejections == 3
    await pool.stop()


async def test_when_nothing_is_usable_the_alive_members_are_still_tried() -> None:
    clock = Clock()
    a, b = ScriptedMember("a", "refuse"), ScriptedMember("b", "refuse")
    pool = make_pool(a, b, clock=clock)
    await pool.start()
    for _ in range(2):
        with pytest.raises(EngineFailed):
            await pool.chat(CHAT)
    assert {s.state for s in pool.snapshot()} == {"ejected"}
    b.mode = "ok"
    assert await text_of(await pool.chat(CHAT)) == "b0 b1 b2 b3 "
    await pool.stop()


async def test_active_checks_take_a_member_down_and_bring_it_back() -> None:
    clock = Clock()
    a, b = ScriptedMember("a"), ScriptedMember("b")
    pool = make_pool(a, b, clock=clock)
    answers: dict[str, str | None] = {"a": None}

    async def probe() -> str | None:
        return answers["a"]

    member(pool, "a").probe = probe
    await pool.start()
    answers["a"] = "answered 503"
    await pool.check_all()
    assert pool.snapshot()[0].state == "up"  # one failed check is below the threshold
    await pool.check_all()
    assert pool.snapshot()[0].state == "down" and pool.snapshot()[0].last_check_error == "answered 503"
    for _ in range(3):
        await text_of(await pool.chat(CHAT))
    assert a.requests == 0
    answers["a"] = None
    await pool.check_all()
    assert pool.snapshot()[0].state == "down"
    await pool.check_all()
    assert pool.snapshot()[0].state == "up"
    member(pool, "b").in_flight = 5
    assert await text_of(await pool.chat(CHAT)) == "a0 a1 a2 a3 "
    await pool.stop()


async def test_a_dead_local_member_is_restarted() -> None:
    a, b = ScriptedMember("a"), ScriptedMember("b")
    pool = make_pool(a, b, kind="worker")
    await pool.start()
    a.alive_flag = False  # its process died
    assert pool.alive
    await pool.check_all()
    for _ in range(10):
        await asyncio.sleep(0)
    assert a.starts == 2
    assert pool.members[0].backend.alive
    await pool.check_all()
    await pool.check_all()
    assert pool.snapshot()[0].state == "up"
    await pool.stop()
    assert a.stops >= 2 and b.stops == 1
    assert not pool.members[0].backend.alive


class SupervisedMember(ScriptedMember):
    """A local engine with a heartbeat; `hung` makes it stop answering (alive all the same) until killed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.hung = False
        self.kills = 0

    async def responsive(self, within: float) -> bool:
        return self.alive_flag and not self.hung

    async def kill(self) -> None:
        self.kills += 1
        self.hung = False
        self.alive_flag = False


async def test_a_hung_local_member_is_taken_down_killed_and_restarted() -> None:
    a, b = SupervisedMember("a"), ScriptedMember("b")
    pool = make_pool(a, b, kind="worker")
    await pool.start()
    a.hung = True
    await pool.check_all()
    assert pool.snapshot()[0].state == "up" and a.kills == 0  # one failed check is below the threshold
    await pool.check_all()
    assert pool.snapshot()[0].last_check_error == "its engine does not answer"
    for _ in range(10):
        await asyncio.sleep(0)
    assert a.kills == 1 and a.starts == 2 and a.alive
    await pool.check_all()
    await pool.check_all()
    assert pool.snapshot()[0].state == "up"
    await pool.stop()


async def test_start_needs_one_member() -> None:
    a, b = ScriptedMember("a"), ScriptedMember("b")
    a.start_error = ModelLoadFailed("no")
    pool = make_pool(a, b)
    await pool.start()
    assert pool.alive and pool.snapshot()[0].state == "down"
    assert await text_of(await pool.chat(CHAT)) == "b0 b1 b2 b3 "
    await pool.stop()
    b.start_error = ModelLoadFailed("no either")
    with pytest.raises(ModelLoadFailed):
        await make_pool(a, b).start()
    assert not pool.alive


async def test_nothing_alive_is_unavailable() -> None:
    a = ScriptedMember("a")
    pool = make_pool(a)
    await pool.start()
    a.alive_flag = False
    with pytest.raises(Unavailable):
        await pool.chat(CHAT)
    await pool.stop()


async def test_one_shot_calls_go_to_a_usable_member_with_failover() -> None:
    a, b = ScriptedMember("a", "refuse"), ScriptedMember("b")
    pool = make_pool(a, b)
    await pool.start()
    member(pool, "b").in_flight = 5
    result = await pool.embed(EmbeddingRequest(model="m", inputs=["x"]))
    assert result.embeddings == [[1.0]] and a.requests == 1
    member(pool, "b").in_flight = 0
    member(pool, "a").health.up = False
    assert await pool.tokenize("x") == ["b"]
    assert await pool.detokenize([1]) == "b"
    assert await pool.apply_template(CHAT) == "b"
    member(pool, "a").health.up = True
    member(pool, "b").in_flight = 5
    reranked = await pool.rerank(RerankRequest(model="m", query="q", documents=["x", "y"]))
    assert reranked.scores == [1.0, 1.0] and a.requests == 2  # (refused by a, answered by b)
    await pool.stop()


def test_backends_make_a_pool_entry() -> None:
    entry = ModelEntry.model_validate(
        {
            "id": "m",
            "upstream_model": "served",
            "backends": [
                {"url": "http://h1:8000/"},
                {"url": "http://h2:8000", "weight": 2, "first_token_timeout": "5s"},
            ],
            "pool": {"check_interval": "1s", "eject_cooldown": 2},
        }
    )
    assert entry.kind == "pool" and entry.missing() is None
    members = [entry.member_entry(m) for m in entry.backends]
    assert [m.urls for m in members] == [["http://h1:8000"], ["http://h2:8000"]]
    assert all(m.kind == "upstream" and m.upstream_model == "served" for m in members)
    pool = pool_for(ModelSpec(entry=entry, engine=EngineSettings(), source="config"), lambda s: ScriptedMember(s.id))
    assert [(m.name, m.weight, m.first_token_timeout) for m in pool.members] == [
        ("http://h1:8000", 1.0, 120.0),
        ("http://h2:8000", 2.0, 5.0),
    ]
    assert pool.check_interval == 1.0 and all(m.probe is not None for m in pool.members)


def test_bad_pool_entries_say_what_is_missing() -> None:
    assert "needs `url`" in str(ModelEntry(id="m", backends=[{"backend": "upstream"}]).missing())  # type: ignore[list-item]
    assert "needs `path`" in str(ModelEntry(id="m", backends=[{"backend": "worker"}]).missing())  # type: ignore[list-item]
    assert "needs `backends`" in str(ModelEntry(id="m", backend="pool").missing())
    assert "must be pool" in str(ModelEntry(id="m", backend="upstream", backends=[{"url": "http://h"}]).missing())  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        ModelEntry(id="m", backends=[{"url": "ftp://h"}])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        ModelEntry(id="m", backends=[{"url": "http://h", "weight": 0}])  # type: ignore[list-item]


def test_a_pools_memory_estimate_counts_each_local_member(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(make_gguf([1024] * 8))
    one = estimate_bytes(
        ModelSpec(
            entry=ModelEntry(id="m", command="engine --model {path} --port {port}", path=model),
            engine=EngineSettings(),
            source="config",
        )
    )
    assert one > model.stat().st_size
    entry = ModelEntry.model_validate(
        {
            "id": "m",
            "backends": [
                {"command": "engine --model {path} --port {port}", "path": str(model)},
                {"command": "engine --model {path} --port {port}", "path": str(model)},
                {"url": "http://remote:8000"},
            ],
        }
    )
    spec = ModelSpec(entry=entry, engine=EngineSettings(), source="config")
    assert estimate_bytes(spec) == 2 * one  # two local copies; the remote member holds nothing here


def test_a_draft_models_weights_count_in_the_estimate(tmp_path: Path) -> None:
    model, draft = tmp_path / "m.gguf", tmp_path / "d.gguf"
    model.write_bytes(make_gguf([4096] * 8))
    draft.write_bytes(make_gguf([1024] * 4))
    engine = EngineSettings()
    plain = estimate_bytes(ModelSpec(entry=ModelEntry(id="m", path=model), engine=engine, source="config"))
    drafted = ModelEntry(id="m", path=model, draft_model=draft)
    assert estimate_bytes(ModelSpec(entry=drafted, engine=engine, source="config")) == plain + draft.stat().st_size
