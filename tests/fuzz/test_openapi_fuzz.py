"""schemathesis against a live server on the real default model: every operation of the server's own
`/openapi.json`, with requests generated from its schemas (valid ones, and ones that break them), checked for
server errors, status codes and content types the document declares, and answers (errors too: each dialect's
envelope) that conform to their schemas. Counted per dialect and printed at the end of the run."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from tests.fuzz.budget import FUZZ_MODEL, SEED, long_mode
from tests.fuzz.tally import Report, Tally
from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT = 30.0
# Examples per operation and mode (fewer where there is less to vary). The generated-request suite makes the
# thousands per dialect; this one holds every operation to the document.
PER_OPERATION = 5
# Operations that restart an engine or generate text from whatever prompt is generated: one example each in CI
# (they cost seconds, not milliseconds; the generated-request suite sends those routes a thousand cheap ones).
_COSTLY = frozenset(
    {
        "/v1/template/switch",
        "/v1/template/unload",
        "/v1/model/load",
        "/v1/model/unload",
        "/v1/lora/load",
        "/v1/lora/unload",
        "/unload",
        "/admin/models/{model_id}/load",
        "/admin/models/{model_id}/unload",
        "/api/v1/generate",
        "/api/latest/generate",
        "/api/extra/generate/stream",
    }
)
_AUTH_HEADERS = frozenset({"authorization", "x-api-key", "x-admin-key"})
# Streams that never end by themselves (the live request log): their answer is checked up to the first event.
_ENDLESS = frozenset({"/admin/logs/stream"})
# TabbyAPI's answer while no model is loaded (README: TabbyAPI's endpoints), which the run's unloads cause.
_NO_MODEL = '{"detail":"No models are currently loaded."}'
# Operations that may unload the served model: the model is loaded again after each of them.
_UNLOADS = ("/unload", "/v1/model/unload", "/admin/models/{model_id}/unload", "/api/delete")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _tally(report: Report, tallies: dict[str, Tally], tag: str, seed_value: int) -> Tally:
    if tag not in tallies:
        tallies[tag] = report.new(f"schemathesis (seed {seed_value})", tag)
    return tallies[tag]


def _first_event(
    case: schemathesis.Case[Any], server: ServeProcess, session: requests.Session
) -> tuple[int | str, str | None]:
    """An endless stream's status, and its first bytes within the request timeout (then the client hangs up)."""
    request = case.as_transport_kwargs(base_url=server.url, headers=server.headers)
    try:
        response = session.request(**request, timeout=REQUEST_TIMEOUT, stream=True)
    except requests.RequestException as exc:
        return "dropped", f"the connection dropped: {exc!r}"
    with response:
        if response.status_code >= 500:
            return response.status_code, response.text[:300]
        if response.status_code == 200:
            if not str(response.headers.get("content-type", "")).startswith("text/event-stream"):
                return 200, f"not an event stream: {response.headers.get('content-type')}"
            if not next(response.iter_content(chunk_size=None), b""):
                return 200, "the stream ended before its first event"
    return response.status_code, None


def _runner(
    server: ServeProcess,
    session: requests.Session,
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    tally: Tally,
    examples: int,
    seed_value: int,
) -> Callable[[], None]:
    """The generated requests of one operation in one mode, sent and checked, as a hypothesis test."""

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(operation.as_strategy(generation_mode=mode))
    def one(case: schemathesis.Case[Any]) -> None:
        kind = f"{mode.value} {case.method} {case.path}"
        started = time.monotonic()
        # The key is ours (the route walk tests missing and bad keys); schemathesis's own would only be refused.
        for name in [name for name in case.headers or {} if name.lower() in _AUTH_HEADERS]:
            del case.headers[name]
        if case.path in _ENDLESS:
            tally.record(kind, *_first_event(case, server, session))
            tally.timed(kind, time.monotonic() - started)
            return
        try:
            response = case.call(base_url=server.url, session=session, headers=server.headers, timeout=REQUEST_TIMEOUT)
        except requests.Timeout:
            tally.record(kind, "timeout", f"no answer within {REQUEST_TIMEOUT}s")
            return
        except requests.ConnectionError as exc:
            tally.record(kind, "dropped", f"the connection dropped: {exc!r}")
            return
        problem = None
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:
            problem = f"{response.status_code} {str(exc)[:600]}"
        outcome: int | str = response.status_code
        if response.status_code == 503 and response.text == _NO_MODEL:
            outcome, problem = "503 no model loaded", None  # (documented; after one of the unloads in the run)
        tally.record(kind, outcome, problem)
        tally.timed(kind, time.monotonic() - started)

    return one


@pytest.mark.timeout(900)  # (one test for every operation: a few minutes on a busy 2-core machine)
def test_every_operation_of_the_document(
    fuzz_server: ServeProcess, fuzz_report: Report, request: pytest.FixtureRequest
) -> None:
    long = long_mode(bool(request.config.getoption("--long")))
    seed_value = random.randrange(2**32) if long else SEED
    examples = PER_OPERATION * 10 if long else PER_OPERATION
    document: dict[str, Any] = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    tallies: dict[str, Tally] = {}
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        operations += 1
        tag = document["paths"][operation.path][operation.method.lower()]["tags"][0]
        tally = _tally(fuzz_report, tallies, tag, seed_value)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                count = 1 if operation.path in _COSTLY and not long else examples
                _runner(fuzz_server, session, operation, mode, tally, count, seed_value)()
            except Unsatisfiable:
                pass  # nothing to vary (a route without parameters has no negative examples)
            except Exception as exc:  # (schemathesis cannot generate for some schemas: say which)
                tally.record(f"{mode.value} {operation.method} {operation.path}", "unsupported", repr(exc)[:300])
            if operation.path in _UNLOADS:
                loaded = session.post(f"{fuzz_server.url}/admin/models/{FUZZ_MODEL}/load", headers=fuzz_server.headers)
                assert loaded.status_code == 200, loaded.text
    assert operations == sum(len(item) for item in document["paths"].values())
    problems = [f"{t.dialect}: {failure}" for t in tallies.values() for failure in t.failures]
    assert not problems, "\n".join(problems[:30])
    assert fuzz_server.process.poll() is None
    assert httpx.get(f"{fuzz_server.url}/ping", timeout=10).text == "pong"
    chat = {"model": FUZZ_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answer = httpx.post(f"{fuzz_server.url}/v1/chat/completions", json=chat, headers=fuzz_server.headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] is not None
