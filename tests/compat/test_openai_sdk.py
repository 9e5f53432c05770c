"""The official `openai` client against a running `somner serve` (started like `make run`: the server assembles
the default model into its empty data directory itself)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import jsonschema
import numpy as np
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.servers import ADMIN_KEY, ServeProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"


@pytest.fixture(scope="module")
def client(serve: ServeProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{serve.url}/v1", api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk


def test_default_model_was_provisioned_and_curl_works(serve: ServeProcess) -> None:
    assert (serve.data_dir / "models" / f"{MODEL}.gguf").is_file()
    model_id = httpx.get(f"{serve.url}/v1/models", headers=serve.headers).json()["data"][0]["id"]
    response = httpx.post(
        f"{serve.url}/v1/chat/completions",
        json={"model": model_id, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8},
        headers=serve.headers,
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


def test_model_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}],
        max_tokens=12,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_streamed_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens <= 10
    whole = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=10, temperature=0
    )
    assert "".join(pieces) == whole.choices[0].message.content


def test_completions(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert result.choices[0].text
    assert result.usage is not None and result.usage.completion_tokens == 6
    assert result.choices[0].finish_reason == "length"
    streamed = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == result.choices[0].text


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input=["a cat", "a dog"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 640  # Gemma 3 270M's embedding size
    assert result.usage.prompt_tokens > 0
    encoded = client.embeddings.create(model=MODEL, input="a cat", encoding_format="base64")
    raw: object = encoded.data[0].embedding
    assert isinstance(raw, str)  # asked for explicitly, the SDK hands the base64 text back as is
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.tolist() == pytest.approx(result.data[0].embedding, abs=1e-5)


def test_json_schema_response_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer"},
            "pet": {"enum": ["cat", "dog", "none"]},
        },
        "required": ["name", "age", "pet"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person and give their details as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=80,
        temperature=0,
    )
    content = reply.choices[0].message.content
    assert content is not None
    jsonschema.validate(orjson.loads(content), schema)


WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def test_required_tool_choice_returns_a_call_that_validates(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].id.startswith("call_")
    function = calls[0].function  # type: ignore[union-attr]
    tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[function.name]
    jsonschema.validate(orjson.loads(function.arguments), tool["function"].get("parameters", {}))


def test_named_tool_choice_streams_the_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Rome, in celsius."}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    names, arguments, finishes = [], "", []
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            if delta.function is not None:
                names.append(delta.function.name)
                arguments += delta.function.arguments or ""
        finishes.append(chunk.choices[0].finish_reason)
    assert "get_weather" in names and finishes[-1] == "tool_calls"
    jsonschema.validate(orjson.loads(arguments), WEATHER_TOOL["function"].get("parameters", {}))


def test_tokenize_round_trips_and_counts_like_usage(client: openai.OpenAI, serve: ServeProcess) -> None:
    text = "The capital of France is"
    tokens = httpx.post(f"{serve.url}/tokenize", json={"content": text}, headers=serve.headers).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    back = httpx.post(f"{serve.url}/detokenize", json={"tokens": tokens}, headers=serve.headers).json()
    assert back["content"].strip() == text
    with_bos = httpx.post(
        f"{serve.url}/tokenize", json={"content": text, "add_special": True}, headers=serve.headers
    ).json()["tokens"]
    completion = client.completions.create(model=MODEL, prompt=text, max_tokens=1)
    assert completion.usage is not None and completion.usage.prompt_tokens == len(with_bos) == len(tokens) + 1
    assert httpx.post(f"{serve.url}/tokenize", json={"content": text}).status_code == 401


def test_greedy_and_seeded_sampling_repeat(client: openai.OpenAI) -> None:
    def ask(temperature: float, seed: int | None = None) -> str | None:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me about the ocean."}],
            max_tokens=24,
            temperature=temperature,
            seed=seed,
        )
        return reply.choices[0].message.content

    assert ask(0) == ask(0)
    assert ask(0.8, seed=42) == ask(0.8, seed=42)


def test_errors_surface_as_sdk_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    assert MODEL in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=7)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=MODEL, prompt="word " * 5000, max_tokens=1)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):  # (more choices than one request may ask for)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=17)
    # ...and the server keeps serving.
    assert client.completions.create(model=MODEL, prompt="ok", max_tokens=1).choices


def test_second_chat_turn_is_served_from_the_prefix_cache(client: openai.OpenAI) -> None:
    history: list[dict[str, str]] = [{"role": "user", "content": "Name three colours, then say why you like them."}]
    first = client.chat.completions.create(model=MODEL, messages=history, max_tokens=24, temperature=0)  # type: ignore[arg-type]
    history += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "And three animals?"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert details.cached_tokens >= first.usage.prompt_tokens - 16
    assert details.cached_tokens < second.usage.prompt_tokens


def test_concurrent_identical_requests_agree(client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ask(_: int) -> str | None:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Describe a lighthouse."}], max_tokens=24, temperature=0
        )
        return reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = set(pool.map(ask, range(8)))
    assert len(answers) == 1


def test_the_load_generator_reports_on_a_real_server(serve: ServeProcess) -> None:
    """Keeps benchmarks/loadgen.py working (its figures are for the benchmark scripts, not asserted here)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.py"
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            serve.url,
            "--model",
            MODEL,
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--max-tokens",
            "5",
            "--chat",
            "--api-key",
            ADMIN_KEY,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["errors"] == 0
    assert report["output_tokens"] == 20  # ignore_eos: exactly max_tokens each
    assert report["ttft_ms"]["p50"] > 0 and report["itl_ms"]["p99"] > 0


def test_legacy_functions_get_a_legacy_answer(client: openai.OpenAI) -> None:
    """The SDK's deprecated `functions` / `function_call` parameters: served as tools, answered as OpenAI did."""
    weather = WEATHER_TOOL["function"]
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        functions=[weather],
        function_call={"name": "get_weather"},
        temperature=0,
        max_tokens=60,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call" and not choice.message.tool_calls
    call = choice.message.function_call
    assert call is not None and call.name == "get_weather"
    jsonschema.validate(orjson.loads(call.arguments), weather.get("parameters", {}))
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        functions=[weather],
        function_call={"name": "get_weather"},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    names, arguments, finishes = [], "", []
    for chunk in stream:
        if not chunk.choices:
            continue
        piece = chunk.choices[0].delta.function_call
        if piece is not None:
            names.append(piece.name)
            arguments += piece.arguments or ""
        finishes.append(chunk.choices[0].finish_reason)
    assert "get_weather" in names and finishes[-1] == "function_call"
    jsonschema.validate(orjson.loads(arguments), weather.get("parameters", {}))
