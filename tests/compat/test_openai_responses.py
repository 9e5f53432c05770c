"""The official `openai` client's Responses API against a running `somner serve` on the real model."""

from __future__ import annotations

from collections.abc import Iterator

import jsonschema
import openai
import orjson
import pytest
from openai.types.responses import FunctionToolParam

from tests.servers import ADMIN_KEY, ServeProcess

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"

UNIT_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["unit"],
    "additionalProperties": False,
}
UNIT_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "set_unit",
    "description": "Choose the temperature unit",
    "parameters": UNIT_SCHEMA,
    "strict": True,
}


@pytest.fixture(scope="module")
def client(serve: ServeProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{serve.url}/v1", api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk


def test_create(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, instructions="Answer briefly.", input="Name a colour.", max_output_tokens=12, temperature=0
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.to_dict()["store"] is False  # Somner keeps no responses
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 12
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"


def test_message_input_cut_short_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Tell me a long story about the sea."},
            {"role": "assistant", "content": "Once upon a time"},
            {"role": "user", "content": [{"type": "input_text", "text": "Go on, in detail."}]},
        ],
        max_output_tokens=3,
        temperature=0,
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 3


def test_streamed_with_the_stream_helper(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    numbers: list[int] = []
    final = None
    with client.responses.stream(model=MODEL, input="Count to five.", max_output_tokens=10, temperature=0) as stream:
        for event in stream:
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type in ("response.completed", "response.incomplete"):
                final = event.response  # (get_final_response() is only for completed ones, at OpenAI too)
    assert final is not None and final.usage is not None and final.usage.output_tokens <= 10
    assert deltas and "".join(deltas) == final.output_text
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    whole = client.responses.create(model=MODEL, input="Count to five.", max_output_tokens=10, temperature=0)
    assert whole.output_text == final.output_text  # greedy: the same text either way


def test_streamed_with_create(client: openai.OpenAI) -> None:
    stream = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=8, stream=True)
    kinds: list[str] = []
    text = ""
    final = None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert final is not None and final.output_text == text
    assert final.usage is not None and final.usage.output_tokens <= 8


# The model's call framing (`<tool_call>{"name": ..., "arguments": ...}`) alone takes about 20 tokens.
CALL_TOKENS = 40


def test_required_function_tool_gives_a_call_that_validates(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input="Show the weather in celsius.",
        tools=[UNIT_TOOL],
        tool_choice="required",
        max_output_tokens=CALL_TOKENS,
        temperature=0,
    )
    assert response.status == "completed"
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "set_unit" and call.call_id and call.status == "completed"
    jsonschema.validate(orjson.loads(call.arguments), UNIT_SCHEMA)


def test_streamed_function_call_with_the_stream_helper(client: openai.OpenAI) -> None:
    arguments = ""
    with client.responses.stream(
        model=MODEL,
        input="Show the weather in fahrenheit.",
        tools=[UNIT_TOOL],
        tool_choice={"type": "function", "name": "set_unit"},
        max_output_tokens=CALL_TOKENS,
        temperature=0,
    ) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments += event.delta
        final = stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.name == "set_unit" and call.arguments == arguments
    jsonschema.validate(orjson.loads(arguments), UNIT_SCHEMA)


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
    """The Responses API has no `seed`; Somner accepts it as an extension, as on chat completions."""

    def ask(temperature: float, seed: int | None = None) -> str:
        extra = {"seed": seed} if seed is not None else None
        reply = client.responses.create(
            model=MODEL,
            input="Tell me about the ocean.",
            max_output_tokens=16,
            temperature=temperature,
            extra_body=extra,
        )
        return reply.output_text

    assert ask(0) == ask(0)
    assert ask(0.9, seed=7) == ask(0.9, seed=7)


def test_errors_surface_as_sdk_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as chained:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_123")
    assert chained.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_123")
    assert client.responses.create(model=MODEL, input="ok", max_output_tokens=1).usage is not None  # still serving
