"""Tool calling without a model: checking tools, the generic prompt, templates that know tools, forced-call
grammars, and finding calls in streamed output (split at every possible point)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from somner.core import (
    Chunk,
    FinishReason,
    Message,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    Usage,
)
from somner.core.tool_calls import ToolCallAssembler, check_tools
from somner.engine import tools as tooling
from somner.engine.templates import ChatTemplate, builtin_source
from somner.errors import BadRequest

WEATHER = Tool(
    name="get_weather",
    description="Weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
)
TIME = Tool(name="get_time", description="", parameters={"type": "object", "properties": {}})
NAMES = {WEATHER.name, TIME.name}


def parse_streamed(text: str, pieces: list[str]) -> tuple[str, list[ToolCall]]:
    parser = tooling.ToolCallParser([WEATHER, TIME])
    shown = "".join(parser.feed(piece) for piece in pieces)
    rest, calls = parser.finish()
    assert "".join(pieces) == text
    return shown + rest, calls


def splits(text: str) -> list[list[str]]:
    """The text whole, one character at a time, and cut at every position."""
    return [[text], list(text), *([text[:i], text[i:]] for i in range(1, len(text)))]


# -- checking a request's tools -------------------------------------------------------------------------------


def test_check_tools_refuses_what_cannot_be_served() -> None:
    check_tools([WEATHER, TIME], ToolChoice(ToolChoiceMode.FUNCTION, "get_time"))
    check_tools([], ToolChoice())
    with pytest.raises(BadRequest, match="Two tools") as duplicate:
        check_tools([WEATHER, WEATHER], ToolChoice())
    assert duplicate.value.param == "tools"
    with pytest.raises(BadRequest, match="not among the tools"):
        check_tools([WEATHER], ToolChoice(ToolChoiceMode.FUNCTION, "get_time"))
    with pytest.raises(BadRequest, match="at least one tool"):
        check_tools([], ToolChoice(ToolChoiceMode.REQUIRED))


def test_assembler_merges_pieces_by_index() -> None:
    assembler = ToolCallAssembler()
    assert not assembler
    assembler.add([ToolCallDelta(index=1, id="b", name="get_time", arguments="")])
    assembler.add([ToolCallDelta(index=0, id="a", name="get_weather", arguments='{"ci')])
    assembler.add([ToolCallDelta(index=0, arguments='ty": "Oslo"}'), ToolCallDelta(index=1, arguments="{}")])
    assert assembler.calls() == [
        ToolCall("a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("b", "get_time", "{}"),
    ]


# -- offering tools ---------------------------------------------------------------------------------------------


def test_offered_follows_the_choice() -> None:
    assert tooling.offered([WEATHER, TIME], ToolChoice()) == [WEATHER, TIME]
    assert tooling.offered([WEATHER, TIME], ToolChoice(ToolChoiceMode.NONE)) == []
    assert tooling.offered([WEATHER, TIME], ToolChoice(ToolChoiceMode.FUNCTION, "get_time")) == [TIME]


def test_generic_prompt_lists_tools_and_replays_calls_and_results() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo"}')
    messages = [
        Message("system", "Be brief."),
        Message("user", "Weather in Oslo?"),
        Message("assistant", "", tool_calls=[call]),
        Message("tool", '{"temp": 3}', tool_call_id="call_1"),
        Message("tool", '{"temp": 4}', tool_call_id="call_2"),
    ]
    out = tooling.generic_messages(messages, [WEATHER], ToolChoice(ToolChoiceMode.FUNCTION, "get_weather"))
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    system = out[0].content
    assert system.startswith("Be brief.\n\n" + tooling.GENERIC_INSTRUCTIONS)
    assert json.loads(system[len("Be brief.\n\n" + tooling.GENERIC_INSTRUCTIONS) :].split("\n]\n")[0] + "\n]") == (
        tooling.openai_tools([WEATHER])
    )
    assert "You must call the function get_weather." in system
    assert out[2].content == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    # consecutive results share one user turn
    assert (
        out[3].content
        == '<tool_response>\n{"temp": 3}\n</tool_response>\n<tool_response>\n{"temp": 4}\n</tool_response>'
    )


def test_generic_prompt_adds_a_system_message_when_there_is_none() -> None:
    out = tooling.generic_messages([Message("user", "hi")], [TIME], ToolChoice(ToolChoiceMode.REQUIRED))
    assert out[0].role == "system"
    assert "You must call at least one of these functions." in out[0].content
    assert out[1] == Message("user", "hi")


TOOL_AWARE = (
    "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}|{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}[{{ c.function.name }} {{ c.function.arguments.city }}]"
    "{% endfor %}{% endif %}|{% endfor %}"
)


def test_a_template_that_knows_tools_renders_them_itself() -> None:
    template = ChatTemplate(TOOL_AWARE, bos_token="", eos_token="")
    assert template.knows_tools
    messages = [
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=[ToolCall("c1", "get_weather", '{"city": "Oslo"}')]),
        Message("tool", "3C", tool_call_id="c1"),
    ]
    text = template.render(messages, tools=[WEATHER, TIME], tool_choice=ToolChoice())
    assert text == "TOOLS:get_weather;get_time;|user:Weather?|assistant:[get_weather Oslo]|tool:3C|"
    assert tooling.GENERIC_INSTRUCTIONS not in text
    named = template.render(
        messages[:1], tools=[WEATHER, TIME], tool_choice=ToolChoice(ToolChoiceMode.FUNCTION, "get_time")
    )
    assert named.startswith("TOOLS:get_time;|")
    assert (
        template.render(messages[:1], tools=[WEATHER], tool_choice=ToolChoice(ToolChoiceMode.NONE)) == "user:Weather?|"
    )


def test_a_template_without_tools_gets_the_generic_prompt() -> None:
    gemma = ChatTemplate(builtin_source("gemma"), bos_token="<bos>", eos_token="<eos>", label="gemma")
    assert not gemma.knows_tools
    text = gemma.render([Message("user", "Weather?")], tools=[WEATHER])
    assert tooling.GENERIC_INSTRUCTIONS in text
    assert '"name": "get_weather"' in text
    assert (
        gemma.render([Message("user", "Weather?")])
        == "<bos><start_of_turn>user\nWeather?<end_of_turn>\n<start_of_turn>model\n"
    )


# -- forcing a call ---------------------------------------------------------------------------------------------


def test_forced_grammar_names_only_the_offered_functions() -> None:
    one = tooling.forced_grammar([WEATHER], parallel=False)
    assert one.rstrip().endswith('root ::= "<tool_call>\\n" tool-call "\\n</tool_call>"')
    assert '\\"get_weather\\"' in one and "get_time" not in one
    both = tooling.forced_grammar([WEATHER, TIME], parallel=True)
    assert '\\"get_time\\"' in both and '\\"get_weather\\"' in both
    assert '( "\\n" "<tool_call>\\n" tool-call "\\n</tool_call>" )*' in both


def test_forced_grammar_follows_refs_inside_parameters() -> None:
    tool = Tool(
        name="move",
        description="",
        parameters={
            "type": "object",
            "properties": {"to": {"$ref": "#/$defs/point"}},
            "required": ["to"],
            "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
        },
    )
    grammar = tooling.forced_grammar([tool, TIME], parallel=False)
    assert '\\"x\\"' in grammar  # the referenced schema was resolved into the grammar


def test_unenforceable_schemas_are_a_bad_request() -> None:
    broken = Tool(name="bad", description="", parameters={"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})
    with pytest.raises(BadRequest) as refused:
        tooling.forced_grammar([broken], parallel=False)
    assert refused.value.param == "tools"


# -- finding calls ----------------------------------------------------------------------------------------------

GENERIC_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


@pytest.mark.parametrize(
    "output",
    [
        GENERIC_CALL,
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}',
        '  [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]',
    ],
)
def test_calls_are_found_in_every_known_format_however_the_stream_is_cut(output: str) -> None:
    for pieces in splits(output):
        text, calls = parse_streamed(output, pieces)
        assert text == ""
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
        assert calls[0].id.startswith("call_") and len(calls[0].id) == 29


def test_text_before_a_call_is_shown_and_calls_after_it_are_kept_in_order() -> None:
    output = f'Let me check.\n{GENERIC_CALL}\n<tool_call>\n{{"name": "get_time", "arguments": {{}}}}\n</tool_call>'
    for pieces in splits(output):
        text, calls = parse_streamed(output, pieces)
        assert text == "Let me check.\n"
        assert [c.name for c in calls] == ["get_weather", "get_time"]


def test_plain_text_passes_through_and_is_never_held_needlessly() -> None:
    parser = tooling.ToolCallParser([WEATHER])
    assert parser.feed("Hello") == "Hello"
    assert parser.feed(" wor") == " wor"
    assert parser.feed("ld <tool") == "ld "  # may open a call: held
    assert parser.feed("box>") == "<toolbox>"  # cannot: released
    assert parser.finish() == ("", [])


def test_a_json_answer_that_is_not_a_call_comes_back_as_text() -> None:
    for output in [
        '{"answer": 42}',
        "[1, 2, 3]",
        '<tool_call>{"name": "unknown_fn", "arguments": {}}</tool_call>',
        "{ broken",
    ]:
        for pieces in splits(output):
            assert parse_streamed(output, pieces) == (output, [])


def test_repeated_calls_are_deduplicated_and_a_cut_off_last_block_is_dropped() -> None:
    output = f'{GENERIC_CALL}\n{GENERIC_CALL}\n<tool_call>\n{{"name": "get_ti'
    text, calls = parse_streamed(output, [output])
    assert text == "" and [c.name for c in calls] == ["get_weather"]


def test_parallel_false_keeps_the_first_call() -> None:
    output = f'{GENERIC_CALL}\n<tool_call>{{"name": "get_time", "arguments": {{}}}}</tool_call>'
    parser = tooling.ToolCallParser([WEATHER, TIME], parallel=False)
    parser.feed(output)
    _, calls = parser.finish()
    assert [c.name for c in calls] == ["get_weather"]


async def _chunks(pieces: list[str], reason: FinishReason) -> AsyncIterator[Chunk]:
    for piece in pieces:
        yield Chunk(text=piece)
    yield Chunk(finish_reason=reason, usage=Usage(prompt_tokens=3, completion_tokens=len(pieces)))


async def _run(pieces: list[str], reason: FinishReason = FinishReason.STOP) -> list[Chunk]:
    parser = tooling.ToolCallParser([WEATHER, TIME])
    return [c async for c in tooling.with_tool_calls(_chunks(pieces, reason), parser)]


@pytest.mark.anyio
async def test_with_tool_calls_turns_calls_into_deltas_and_the_finish_into_tool_calls() -> None:
    out = await _run(["Sure. ", GENERIC_CALL[:20], GENERIC_CALL[20:]])
    assert out[0].text == "Sure. "
    assert out[1].tool_calls is not None and [d.name for d in out[1].tool_calls] == ["get_weather"]
    assert out[-1].finish_reason is FinishReason.TOOL_CALLS
    assert out[-1].usage == Usage(prompt_tokens=3, completion_tokens=3)


@pytest.mark.anyio
async def test_with_tool_calls_keeps_text_and_finish_reason_when_there_is_no_call() -> None:
    out = await _run(["<tool", "ing around"], FinishReason.LENGTH)
    assert "".join(c.text for c in out) == "<tooling around"
    assert out[-1].finish_reason is FinishReason.LENGTH
    assert all(not c.tool_calls for c in out)
