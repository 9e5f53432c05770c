"""Reasoning on the real engine, read by the official clients of every dialect.

The default model is a base model; a test chat template (`tests/fixtures/reasoning/think.jinja`) makes it a
"reasoning model": the prompt ends inside an open `<think>` block, the model's own tokens are its thinking, and
the model's thinking budget (4 tokens) makes the engine close the thought, after which the model answers. So the
output really holds `<think>`-tagged text, cut wherever the model's tokens fall, and each dialect must show the
thinking apart from the answer, streamed and not. A grammar forces a tool call after a thought.

The same model under a harmony test template (`harmony.jinja`, gpt-oss's shape: the prompt opens the analysis
channel) is a gpt-oss-style reasoner, and served as itself ("plain") it does not reason at all: thinking asked of it
is a 400 in each dialect's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from anthropic.types import TextBlock, ThinkingBlock
from openai.types.chat import ChatCompletionFunctionToolParam

from tests.conftest import link_model
from tests.servers import ADMIN_KEY, ServeProcess, start_serve

pytestmark = pytest.mark.integration

MODEL = "thinker"
TEMPLATE = Path(__file__).parents[1] / "fixtures" / "reasoning" / "think.jinja"
HARMONY_MODEL = "oss"
HARMONY_TEMPLATE = Path(__file__).parents[1] / "fixtures" / "reasoning" / "harmony.jinja"
PLAIN_MODEL = "plain"
BUDGET = 4
QUESTION = "What is two plus two?"
GREEDY = {"temperature": 0}
CALL_GRAMMAR = (
    'root ::= "Time." "\\n</think>\\n\\n" "<tool_call>{\\"name\\":\\"get_time\\",\\"arguments\\":{}}</tool_call>"'
)
TIME_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time.", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServeProcess]:
    data_dir = tmp_path_factory.mktemp("reasoning-serve")
    models = data_dir / "models"
    link_model(model_path, models, f"{MODEL}.gguf")
    (models / f"{MODEL}.yaml").write_text(
        f"template: {TEMPLATE}\nreasoning_format: deepseek\nreasoning_budget: {BUDGET}\nparallel: 2\n"
    )
    link_model(model_path, models, f"{HARMONY_MODEL}.gguf")  # (reasoning_format auto: the template has channels)
    (models / f"{HARMONY_MODEL}.yaml").write_text(f"template: {HARMONY_TEMPLATE}\nreasoning_budget: {BUDGET}\n")
    link_model(model_path, models, f"{PLAIN_MODEL}.gguf")
    process = start_serve(data_dir)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def oai(server: ServeProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk


def assert_split(reasoning: str | None, content: str | None) -> None:
    """Thinking and answer both there, and no tag left in either."""
    assert reasoning and content, (reasoning, content)
    for text in (reasoning, content):
        assert "</think>" not in text and "</" not in text[-3:]


# -- OpenAI chat -------------------------------------------------------------------------------------------


def test_openai_chat_whole_and_streamed(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=11, temperature=0)
    message = whole.choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    assert_split(reasoning, message.content)
    assert whole.usage is not None and whole.usage.completion_tokens_details is not None
    thought_tokens = whole.usage.completion_tokens_details.reasoning_tokens or 0
    assert BUDGET < thought_tokens < whole.usage.completion_tokens  # (the budget, then the closing tag's tokens)

    stream = oai.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=11,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
    )
    thoughts, texts, usage = [], [], None
    for event in stream:
        if event.usage is not None:
            usage = event.usage
        for choice in event.choices:
            thoughts.append(getattr(choice.delta, "reasoning_content", None) or "")
            texts.append(choice.delta.content or "")
    assert "".join(thoughts) == reasoning
    assert "".join(texts) == message.content
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == thought_tokens


def test_openai_thought_never_closed_is_all_reasoning(oai: openai.OpenAI) -> None:
    """No budget (the request lifts the model's) and max_tokens reached inside the thought."""
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = oai.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, extra_body={"reasoning_budget": -1}, temperature=0
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "length"
    assert getattr(choice.message, "reasoning_content", "") and not choice.message.content
    assert whole.usage is not None and whole.usage.completion_tokens_details is not None
    assert whole.usage.completion_tokens_details.reasoning_tokens == whole.usage.completion_tokens == 8


def test_openai_thinking_off(oai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = oai.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, reasoning_effort="none", temperature=0
    )
    message = whole.choices[0].message
    assert getattr(message, "reasoning_content", None) is None and message.content
    assert whole.usage is not None and whole.usage.completion_tokens_details is None  # (no reasoning tokens)


def test_openai_tool_call_after_thinking(oai: openai.OpenAI) -> None:
    """A grammar makes the model think, close the thought and call a tool (streamed: the engine's own events)."""
    messages: Any = [{"role": "user", "content": "What time is it?"}]
    events = oai.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[TIME_TOOL],
        max_tokens=48,
        stream=True,
        extra_body={"grammar": CALL_GRAMMAR},
    )
    thoughts, texts, names, reason = [], [], [], None
    for event in events:
        for part in event.choices:
            thoughts.append(getattr(part.delta, "reasoning_content", None) or "")
            texts.append(part.delta.content or "")
            names += [c.function.name for c in part.delta.tool_calls or [] if c.function is not None]
            reason = part.finish_reason or reason
    assert "".join(thoughts) == "Time." and not "".join(texts).strip()
    assert names == ["get_time"] and reason == "tool_calls"


# -- OpenAI Responses --------------------------------------------------------------------------------------


def test_responses_reasoning_items(oai: openai.OpenAI) -> None:
    whole = oai.responses.create(model=MODEL, input=QUESTION, max_output_tokens=11, temperature=0)
    thought, answer = whole.output[0], whole.output[1]
    assert thought.type == "reasoning" and thought.content is not None and thought.status == "completed"
    assert answer.type == "message" and answer.content[0].type == "output_text"
    assert_split(thought.content[0].text, answer.content[0].text)
    assert whole.usage is not None and whole.usage.output_tokens_details.reasoning_tokens > BUDGET

    deltas: list[str] = []
    final = None
    with oai.responses.stream(model=MODEL, input=QUESTION, max_output_tokens=11, temperature=0) as events:
        for event in events:
            if event.type == "response.reasoning_text.delta":
                deltas.append(event.delta)
            elif event.type in ("response.completed", "response.incomplete"):
                final = event.response
    assert final is not None and final.status == whole.status
    assert "".join(deltas) == thought.content[0].text
    assert [item.type for item in final.output] == ["reasoning", "message"]
    streamed = final.output[0]
    assert streamed.type == "reasoning" and streamed.content is not None
    assert streamed.content[0].text == thought.content[0].text
    assert final.output_text == whole.output_text


# -- Anthropic ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def claude(server: ServeProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk


def test_anthropic_thinking_blocks(claude: anthropic.Anthropic) -> None:
    options: Any = {
        "model": MODEL,
        "max_tokens": 11,
        "messages": [{"role": "user", "content": QUESTION}],
        "thinking": {"type": "enabled", "budget_tokens": BUDGET},
        "extra_body": GREEDY,
    }
    whole = claude.messages.create(**options)
    thought, answer = whole.content[0], whole.content[1]
    assert isinstance(thought, ThinkingBlock) and thought.signature
    assert isinstance(answer, TextBlock)
    assert_split(thought.thinking, answer.text)

    with claude.messages.stream(**options) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds and "text" in kinds
    assert final.content[0].type == "thinking" and final.content[0].thinking == thought.thinking
    assert final.content[0].signature == thought.signature
    assert final.content[1].type == "text" and final.content[1].text == answer.text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_anthropic_count_tokens_counts_the_empty_thought(claude: anthropic.Anthropic) -> None:
    """Thinking turned off gives the prompt an empty, closed thought: it is counted as it will be read."""
    messages: Any = [{"role": "user", "content": QUESTION}]
    on = claude.messages.count_tokens(model=MODEL, messages=messages, thinking={"type": "enabled", "budget_tokens": 4})
    off = claude.messages.count_tokens(model=MODEL, messages=messages, thinking={"type": "disabled"})
    assert off.input_tokens > on.input_tokens > 0


def test_anthropic_bad_thinking_is_a_400(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        claude.messages.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": QUESTION}],
            thinking={"type": "enabled", "budget_tokens": 8},
        )


# -- Ollama ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(server: ServeProcess) -> Iterator[ollama.Client]:
    sdk = ollama.Client(host=server.url, headers=server.headers)
    try:
        yield sdk
    finally:
        sdk.close()  # type: ignore[no-untyped-call]


def test_ollama_chat_thinking(llama: ollama.Client) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    options = {"num_predict": 11, **GREEDY}
    whole = llama.chat(model=MODEL, messages=messages, think=True, options=options)
    assert_split(whole.message.thinking, whole.message.content)
    thoughts, texts = [], []
    for part in llama.chat(model=MODEL, messages=messages, think=True, options=options, stream=True):
        thoughts.append(part.message.thinking or "")
        texts.append(part.message.content or "")
    assert "".join(thoughts) == whole.message.thinking
    assert "".join(texts) == whole.message.content


def test_ollama_generate_thinking(llama: ollama.Client) -> None:
    options = {"num_predict": 11, **GREEDY}
    whole = llama.generate(model=MODEL, prompt=QUESTION, think=True, options=options)
    assert_split(whole.thinking, whole.response)
    parts = list(llama.generate(model=MODEL, prompt=QUESTION, think=True, options=options, stream=True))
    assert "".join(p.thinking or "" for p in parts) == whole.thinking
    assert "".join(p.response or "" for p in parts) == whole.response
    with pytest.raises(ollama.ResponseError, match="think"):
        llama.generate(model=MODEL, prompt=QUESTION, think="extreme", options=options)


# -- Kobold ------------------------------------------------------------------------------------------------


def test_kobold_text_stays_plain(server: ServeProcess) -> None:
    """Kobold completes raw text: a thought in the prompt and in the output stays in the text, as written."""
    prompt = f"<start_of_turn>user\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n<think>\n"
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as http:
        body = {"model": MODEL, "prompt": prompt, "max_length": 8, "temperature": 0.01}  # (three models here)
        kobold = http.post("/api/v1/generate", json=body)
    assert kobold.status_code == 200
    assert set(kobold.json()) == {"results"} and set(kobold.json()["results"][0]) >= {"text"}
    assert "<think>" in kobold.json()["results"][0]["text"]  # (the model repeats the tag: nothing took it out)


# -- gpt-oss's harmony channels ----------------------------------------------------------------------------


def assert_no_markers(*texts: str | None) -> None:
    for text in texts:
        assert text and "<|" not in text and "|>" not in text, texts


def test_harmony_channels_on_openai_whole_and_streamed(oai: openai.OpenAI) -> None:
    """The prompt opens the analysis channel; after 4 tokens of thought the engine switches to the final channel
    (`<|end|><|start|>assistant<|channel|>final<|message|>`), and the model's own tokens are the answer."""
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = oai.chat.completions.create(model=HARMONY_MODEL, messages=messages, max_tokens=24, temperature=0)
    message = whole.choices[0].message
    thought = getattr(message, "reasoning_content", None)
    assert_no_markers(thought, message.content)
    usage = whole.usage
    assert usage is not None and usage.completion_tokens_details is not None
    # (4 tokens of thought, then the switch to the final channel, which is several tokens in this model's vocabulary)
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens or 0
    assert BUDGET < reasoning_tokens < usage.completion_tokens
    thoughts, texts = [], []
    events = oai.chat.completions.create(
        model=HARMONY_MODEL, messages=messages, max_tokens=24, temperature=0, stream=True
    )
    for event in events:
        for part in event.choices:
            thoughts.append(getattr(part.delta, "reasoning_content", None) or "")
            texts.append(part.delta.content or "")
    assert "".join(thoughts) == thought and "".join(texts) == message.content
    off = oai.chat.completions.create(
        model=HARMONY_MODEL, messages=messages, max_tokens=8, temperature=0, reasoning_effort="none"
    )
    assert getattr(off.choices[0].message, "reasoning_content", None) is None and off.choices[0].message.content


def test_harmony_function_call_from_the_commentary_channel(oai: openai.OpenAI) -> None:
    grammar = (
        'root ::= "Time.<|end|><|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json'
        '<|message|>{\\"tz\\": \\"UTC\\"}"'
    )
    messages: Any = [{"role": "user", "content": "What time is it?"}]
    whole = oai.chat.completions.create(
        model=HARMONY_MODEL, messages=messages, tools=[TIME_TOOL], max_tokens=120, extra_body={"grammar": grammar}
    )
    choice = whole.choices[0]
    assert getattr(choice.message, "reasoning_content", None) == "Time."
    assert choice.finish_reason == "tool_calls" and not (choice.message.content or "").strip()
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls if c.type == "function"] == [
        ("get_time", '{"tz": "UTC"}')
    ]


def test_harmony_on_ollama_and_anthropic(llama: ollama.Client, claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    chat = llama.chat(model=HARMONY_MODEL, messages=messages, think=True, options={"num_predict": 40, **GREEDY})
    assert_no_markers(chat.message.thinking, chat.message.content)
    reply = claude.messages.create(
        model=HARMONY_MODEL,
        max_tokens=40,
        messages=[{"role": "user", "content": QUESTION}],
        thinking={"type": "enabled", "budget_tokens": BUDGET},
        extra_body=GREEDY,
    )
    thought, answer = reply.content[0], reply.content[1]
    assert isinstance(thought, ThinkingBlock) and isinstance(answer, TextBlock)
    assert thought.thinking == chat.message.thinking and answer.text == chat.message.content


# -- a model that does not reason --------------------------------------------------------------------------


def test_thinking_asked_of_a_model_that_does_not_reason_is_a_400(
    oai: openai.OpenAI, llama: ollama.Client, claude: anthropic.Anthropic
) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        oai.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=4, reasoning_effort="low")
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        oai.responses.create(model=PLAIN_MODEL, input=QUESTION, max_output_tokens=4, reasoning={"effort": "low"})
    with pytest.raises(ollama.ResponseError, match="does not support thinking") as refused:
        llama.chat(model=PLAIN_MODEL, messages=messages, think=True, options={"num_predict": 4})
    assert refused.value.status_code == 400
    with pytest.raises(ollama.ResponseError, match="does not support thinking"):
        llama.generate(model=PLAIN_MODEL, prompt=QUESTION, think="high", options={"num_predict": 4})
    with pytest.raises(anthropic.BadRequestError, match="does not support thinking"):
        claude.messages.create(
            model=PLAIN_MODEL, max_tokens=8, messages=messages, thinking={"type": "enabled", "budget_tokens": 4}
        )
    # Turning thinking off, or saying nothing, is fine.
    assert llama.chat(model=PLAIN_MODEL, messages=messages, think=False, options={"num_predict": 2}).message.content
    off = oai.chat.completions.create(model=PLAIN_MODEL, messages=messages, max_tokens=2, reasoning_effort="none")
    assert off.choices[0].message.content is not None
