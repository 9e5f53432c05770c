"""Chat templates: turning messages into a prompt.

Precedence: the template named in the model's config (a built-in name or a Jinja file), else the GGUF's own
`tokenizer.chat_template`, else a built-in chosen by architecture or by the special tokens the vocabulary has.
A model with none of these fails to load with an error that says how to fix it. Templates render in jinja2's
immutable sandbox: a template from a downloaded file cannot reach Python objects or the file system.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from somner.core import Message, Tool, ToolCall, ToolChoice
from somner.core.template_names import BUILTIN_TEMPLATES, TEMPLATE_ALIASES
from somner.engine import tools as tooling
from somner.errors import BadRequest

BUILTINS = BUILTIN_TEMPLATES
_ALIASES = TEMPLATE_ALIASES
_ARCHITECTURES = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "phi3": "phi3",
}
# For architectures shared by several families (llama, mistral), the vocabulary tells which turn format it has.
_MARKERS = (("<|start_header_id|>", "llama3"), ("<|im_start|>", "chatml"), ("[INST]", "mistral"))


class TemplateNotFound(ValueError):
    """No usable chat template; the message says how to configure one."""


class TemplateTextError(BadRequest):
    code = "invalid_messages"


def builtin_source(name: str) -> str:
    canonical = _ALIASES.get(name, name)
    if canonical not in BUILTINS:
        raise TemplateNotFound(f"unknown built-in template {name!r}; built-ins: {', '.join(BUILTINS)}")
    return (resources.files("somner.engine") / "templates" / f"{canonical}.jinja").read_text(encoding="utf-8")


def choose_template(
    configured: str | None,
    gguf_template: str | None,
    architecture: str,
    has_special_token: Callable[[str], bool],
) -> tuple[str, str]:
    """(label, Jinja source) of the template to use; raises TemplateNotFound."""
    if configured:
        if _ALIASES.get(configured, configured) in BUILTINS:
            return configured, builtin_source(configured)
        path = Path(configured).expanduser()
        try:
            return str(path), path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateNotFound(
                f"template {configured!r} is neither a built-in ({', '.join(BUILTINS)}) nor a readable file"
            ) from exc
    if gguf_template:
        return "gguf", gguf_template
    by_arch = _ARCHITECTURES.get(architecture)
    if by_arch is None:
        by_arch = next((name for marker, name in _MARKERS if has_special_token(marker)), None)
    if by_arch is None:
        raise TemplateNotFound(
            f"the model (architecture {architecture!r}) has no chat template and none is configured; set "
            f"`template:` in its models entry to one of {', '.join(BUILTINS)} or to a Jinja file"
        )
    return by_arch, builtin_source(by_arch)


def _raise_exception(message: str) -> NoReturn:
    raise TemplateTextError(str(message), param="messages")


def _strftime_now(fmt: str) -> str:
    return dt.datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled template; `render` turns messages into prompt text."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str, label: str = "custom") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise TemplateNotFound(f"chat template {label!r} does not compile: {exc}") from exc
        self.label = label
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

        self.knows_tools = self._probe_tools()

    def _probe_tools(self) -> bool:
        """Whether the template renders tools and tool calls itself (else the generic prompt is used)."""
        probe = Tool(name="somner_probe_tool", description="probe", parameters={"type": "object", "properties": {}})
        messages = [
            Message(role="user", content="probe"),
            Message(role="assistant", content="", tool_calls=[ToolCall("call_probe", "somner_probe_call", "{}")]),
            Message(role="tool", content="somner_probe_result", tool_call_id="call_probe"),
        ]
        try:
            text = self._render(tooling.template_messages(messages), tooling.openai_tools([probe]), True)
        except BadRequest:
            return False
        return all(word in text for word in ("somner_probe_tool", "somner_probe_call", "somner_probe_result"))

    def render(
        self,
        messages: list[Message],
        *,
        tools: list[Tool] | None = None,
        tool_choice: ToolChoice | None = None,
        add_generation_prompt: bool = True,
        enable_thinking: bool | None = None,
        reasoning_effort: str | None = None,
    ) -> str:
        """The prompt for `messages`, offering `tools` (natively when the template knows tools, else with the
        generic prompt). `enable_thinking` (Qwen3's switch) and `reasoning_effort` (gpt-oss's) are passed to
        templates that read them, when set."""
        choice = tool_choice or ToolChoice()
        shown = tooling.offered(tools or [], choice)
        has_calls = any(m.tool_calls or m.role == "tool" for m in messages)
        switches: dict[str, Any] = {}
        if enable_thinking is not None:
            switches["enable_thinking"] = enable_thinking
        if reasoning_effort is not None:
            switches["reasoning_effort"] = reasoning_effort
        if self.knows_tools or not (shown or has_calls):
            listing = tooling.openai_tools(shown) if shown else None
            return self._render(tooling.template_messages(messages), listing, add_generation_prompt, switches)
        generic = tooling.generic_messages(messages, shown, choice)
        return self._render(tooling.template_messages(generic), None, add_generation_prompt, switches)

    def _render(
        self,
        items: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool,
        switches: dict[str, Any] | None = None,
    ) -> str:
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        extra.update(switches or {})
        try:
            return self._template.render(
                messages=items,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateTextError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise TemplateTextError(f"The chat template cannot render these messages: {exc}", param="messages") from exc
