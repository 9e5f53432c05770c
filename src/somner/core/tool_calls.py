"""Tool calls across dialects: checking a request's tools, and putting streamed call pieces back together."""

from __future__ import annotations

from somner.core.types import Tool, ToolCall, ToolCallDelta, ToolChoice, ToolChoiceMode
from somner.errors import BadRequest


def check_tools(tools: list[Tool], choice: ToolChoice) -> None:
    """Refuse tool lists and choices that cannot be served (BadRequest naming the parameter)."""
    names = [t.name for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise BadRequest(f"Two tools are named '{duplicate}'.", param="tools")
    if choice.mode is ToolChoiceMode.FUNCTION and choice.name not in names:
        raise BadRequest(
            f"tool_choice names the function '{choice.name}', which is not among the tools.", param="tool_choice"
        )
    if choice.mode is ToolChoiceMode.REQUIRED and not tools:
        raise BadRequest("tool_choice 'required' needs at least one tool.", param="tool_choice")


class ToolCallAssembler:
    """Collects `ToolCallDelta`s, in any number of pieces per call, into whole `ToolCall`s (by index)."""

    def __init__(self) -> None:
        self._calls: dict[int, ToolCall] = {}

    def add(self, deltas: list[ToolCallDelta] | None) -> None:
        for delta in deltas or []:
            call = self._calls.get(delta.index)
            if call is None:
                self._calls[delta.index] = ToolCall(id=delta.id or "", name=delta.name or "", arguments=delta.arguments)
                continue
            if delta.id:
                call.id = delta.id
            if delta.name:
                call.name = delta.name
            call.arguments += delta.arguments

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCall]:
        return [self._calls[index] for index in sorted(self._calls)]
