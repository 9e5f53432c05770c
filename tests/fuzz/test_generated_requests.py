"""Generated bad input per dialect against a live server on the real default model (`generators`): at least
1,000 requests per dialect (a fixed seed; `--long` for ten times as many on a random one), with no answer >= 500,
none taking past the request timeout, every error from a route in its dialect's shape, and the server alive and
answering a good request correctly after each batch. The status histograms are printed at the end of the run."""

from __future__ import annotations

import json
import random
import socket
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.api.shapes import assert_dialect_error
from tests.fuzz.budget import FUZZ_MODEL, SEED, long_mode
from tests.fuzz.generators import Generated, every_wrong_type, generated_request
from tests.fuzz.tally import PROTOCOL_STATUSES, Report, Tally
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT = 30.0
DIALECTS = ["openai", "anthropic", "ollama", "kobold", "tabby"]
# A good request per dialect, and what its answer must hold: checked after each batch.
GOOD: dict[str, tuple[str, dict[str, Any], str]] = {
    "openai": (
        "/v1/chat/completions",
        {"model": FUZZ_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        "choices",
    ),
    "anthropic": (
        "/v1/messages",
        {"model": FUZZ_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
        "content",
    ),
    "ollama": ("/api/generate", {"model": FUZZ_MODEL, "prompt": "hi", "stream": False}, "response"),
    "kobold": ("/api/v1/generate", {"prompt": "hi", "max_length": 2}, "results"),
    "tabby": ("/v1/token/encode", {"model": FUZZ_MODEL, "text": "hi there"}, "tokens"),
}


def _raw_exchange(server: ServeProcess, generated: Generated, token: str) -> int | str:
    """Send a request over a bare socket (headers past what clients allow, bodies cut short); its status, or how
    the connection ended."""
    body = generated.body
    head = [
        f"POST {generated.path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Authorization: Bearer {token}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in generated.headers.items()),
    ]
    payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT) as sock:
        try:
            if generated.cut:
                sock.sendall(payload[: len(payload) - max(1, len(body) // 2)])
                return "cut"  # the client hangs up mid-body: nobody reads an answer
            sock.sendall(payload)
            answer = sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"  # (the server answered and closed while the rest was still being sent)
        except TimeoutError:
            return "timeout"
    if not answer.startswith(b"HTTP/1.1 "):
        return "closed"
    return int(answer[9:12])


def _send(client: httpx.Client, server: ServeProcess, generated: Generated, token: str) -> tuple[int | str, str | None]:
    """One generated request: its outcome, and what is wrong with it (None: nothing)."""
    if generated.cut or generated.kind in ("many_headers", "huge_header"):
        outcome = _raw_exchange(server, generated, token)
        if outcome == "timeout":
            return outcome, f"no answer within {REQUEST_TIMEOUT}s"
        if isinstance(outcome, int) and outcome >= 500:
            return outcome, f"{generated.path}: {outcome}"
        return outcome, None
    headers = {"content-type": "application/json", **generated.headers}
    try:
        reply = client.post(generated.path, content=generated.body, headers=headers)
    except httpx.TimeoutException:
        return "timeout", f"{generated.path}: no answer within {REQUEST_TIMEOUT}s"
    except httpx.TransportError as exc:
        return "dropped", f"{generated.path}: the connection dropped ({exc!r})"
    status = reply.status_code
    if status >= 500:
        return status, f"{generated.path} {generated.body[:200]!r}: {status} {reply.text[:300]}"
    if status >= 400 and not (status in PROTOCOL_STATUSES and reply.headers.get("content-type", "").startswith("text")):
        from somner.api.dialects import dialect_of

        try:
            assert_dialect_error(reply, dialect_of(generated.path), status)
        except AssertionError as exc:
            return status, f"{generated.path}: not the dialect's error shape: {exc}"
    return status, None


def _check_alive(client: httpx.Client, server: ServeProcess, dialect: str) -> None:
    assert server.process.poll() is None, "the server exited"
    assert client.get("/ping").text == "pong"
    path, body, key = GOOD[dialect]
    reply = client.post(path, json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()[key], reply.text


def run_batch(server: ServeProcess, tally: Tally, dialect: str, count: int, seed_value: int) -> None:
    """`count` generated requests: every field with every wrong type first, then random ones up to the count."""
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=REQUEST_TIMEOUT) as client:
        token = server.headers["authorization"].removeprefix("Bearer ")
        exhaustive = every_wrong_type(dialect)
        for generated in exhaustive:
            outcome, problem = _send(client, server, generated, token)
            tally.record(generated.kind, outcome, problem)

        @settings(
            max_examples=max(count - len(exhaustive), 1),
            database=None,
            deadline=None,
            phases=[Phase.generate],  # no shrinking: every failure is recorded, none stops the batch
            suppress_health_check=list(HealthCheck),
        )
        @seed(seed_value)
        @given(generated_request(dialect))
        def one(generated: Generated) -> None:
            outcome, problem = _send(client, server, generated, token)
            tally.record(generated.kind, outcome, problem)

        one()
        _check_alive(client, server, dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_generated_bad_input(
    fuzz_server: ServeProcess, fuzz_report: Report, fuzz_count: int, dialect: str, request: pytest.FixtureRequest
) -> None:
    seed_value = random.randrange(2**32) if long_mode(bool(request.config.getoption("--long"))) else SEED
    tally = fuzz_report.new(f"generated (seed {seed_value})", dialect)
    run_batch(fuzz_server, tally, dialect, fuzz_count, seed_value)
    assert tally.requests >= fuzz_count
    assert not tally.failures, "\n".join(tally.failures[:20])
    assert "timeout" not in tally.statuses
    assert not any(status.isdigit() and int(status) >= 500 for status in tally.statuses), tally.line()


def test_the_generators_break_requests_in_every_way() -> None:
    """The strategies themselves: every kind is drawn, and bodies of the breaking kinds are not the valid ones."""
    seen: dict[str, Generated] = {}

    @settings(max_examples=400, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(SEED)
    @given(generated_request("openai"))
    def collect(generated: Generated) -> None:
        seen.setdefault(generated.kind, generated)

    collect()
    assert {"wrong_type", "truncated", "invalid_utf8", "deep_nesting", "encoded", "cut_mid_body"} <= set(seen)
    truncated = seen["truncated"].body
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(truncated)
    with pytest.raises(UnicodeDecodeError):
        seen["invalid_utf8"].body.decode("utf-8")
    # Every field gets every other type: the chat message's content among them, as a list, an object, a number...
    contents = []
    for generated in every_wrong_type("anthropic"):
        messages = json.loads(generated.body)["messages"]
        if isinstance(messages, list) and messages and isinstance(messages[0], dict) and "content" in messages[0]:
            contents.append(messages[0]["content"])
    assert {type(c).__name__ for c in contents} >= {"NoneType", "bool", "int", "float", "list", "dict"}
