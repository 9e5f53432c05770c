"""OpenAI's harmony format (gpt-oss): the model's output is a series of messages, each on a channel.

After a prompt that ends with `<|start|>assistant`, gpt-oss writes messages such as

    <|channel|>analysis<|message|>The user asks ...<|end|>
    <|start|>assistant<|channel|>final<|message|>The answer.<|return|>

or, to call a function, `<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{}<|call|>`
(the recipient may also stand before the channel: `<|start|>assistant to=functions.get_time<|channel|>...`).
llama.cpp renders `<|channel|>`, `<|message|>`, `<|start|>` and `<|constrain|>` as text but not `<|end|>`;
`<|return|>` and `<|call|>` end the generation. So a message's body ends at `<|end|>` when it is there, else at the
next `<|start|>`, else at the end of the output.

`HarmonySplitter` reads the output as it streams, with the interface of `ReasoningSplitter`: the analysis channel
is reasoning, the final channel (and anything on another channel, such as a commentary preamble) is content, and a
message to a function becomes a `<tool_call>` block in the content when it ends, which the engine's tool-call
parser then reads like any other model's call (arguments that are not JSON stay text: nothing is lost). Markers cut
across pieces are held until whole. Output that does not start like harmony is content as written.
"""

from __future__ import annotations

import json
import re

CHANNEL = "<|channel|>"
MESSAGE = "<|message|>"
START = "<|start|>"
END = "<|end|>"
_ENDS_GENERATION = ("<|return|>", "<|call|>")
_BODY_ENDS = (END, START, *_ENDS_GENERATION)

ANALYSIS = "analysis"
FINAL = "final"
FUNCTIONS = "functions."

# What a prompt gets so that the model answers without thinking: an empty analysis, then the final channel opened.
SKIP_ANALYSIS = f"{CHANNEL}{ANALYSIS}{MESSAGE}{END}{START}assistant{CHANNEL}{FINAL}{MESSAGE}"
# What the engine writes to close a thought that reached its budget.
CLOSE_ANALYSIS = f"{END}{START}assistant{CHANNEL}{FINAL}{MESSAGE}"
ASSISTANT_TURN = f"{START}assistant"

_MAX_HEADER = 256  # a header longer than this is not one: the text is shown as content
_CHANNEL_NAME = re.compile(re.escape(CHANNEL) + r"\s*([A-Za-z_][\w.-]*)")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")

_HEADER, _BODY, _BETWEEN, _PLAIN = 0, 1, 2, 3


def _held_suffix(text: str, markers: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that is a proper beginning of one of `markers`."""
    longest = 0
    for marker in markers:
        for size in range(min(len(text), len(marker) - 1), longest, -1):
            if marker.startswith(text[-size:]):
                longest = size
                break
    return longest


def opened_channel(prompt: str) -> str | None:
    """The channel a prompt leaves open (it ends with `<|message|>` after a channel header), if any."""
    stripped = prompt.rstrip()
    if not stripped.endswith(MESSAGE):
        return None
    start = max(stripped.rfind(START), stripped.rfind(END))
    found = _CHANNEL_NAME.search(stripped, max(start, 0))
    return found.group(1) if found else None


class HarmonySplitter:
    """Splits one generation's harmony messages into reasoning and content (see the module's note).

    `opened`: the channel the prompt left open (the output starts inside that message's body); None: the output
    starts with a message header."""

    __slots__ = ("_args", "_channel", "_first", "_header", "_held", "_recipient", "_state")

    def __init__(self, *, opened: str | None = None) -> None:
        self._state = _BODY if opened is not None else _HEADER
        self._channel = opened
        self._recipient: str | None = None
        self._header = ""
        self._held = ""  # body text that may be the start of a marker
        self._args: list[str] = []  # the body of a message to a function, until it ends
        self._first = opened is None  # the first header: output that does not open like harmony is plain text

    @property
    def thinking(self) -> bool:
        """Inside an analysis message."""
        return self._state == _BODY and self._channel == ANALYSIS and self._recipient is None

    @property
    def answering(self) -> bool:
        """Always False: a later message can follow any message, so every piece is looked at."""
        return False

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) shown now for the next piece of output."""
        reasoning: list[str] = []
        content: list[str] = []
        text = self._held + text
        self._held = ""
        while text:
            if self._state == _PLAIN:
                content.append(text)
                break
            if self._state == _HEADER:
                text = self._read_header(text, content)
            elif self._state == _BODY:
                text = self._read_body(text, reasoning, content)
            else:  # between messages: after `<|end|>`, until the next `<|start|>`
                at = text.find(START)
                if at == -1:
                    kept = _held_suffix(text, (START,))
                    self._held = text[len(text) - kept :] if kept else ""
                    break
                text = text[at + len(START) :]
                self._state = _HEADER
        return "".join(reasoning), "".join(content)

    def _read_header(self, text: str, content: list[str]) -> str:
        text, self._header = self._header + text, ""
        at = text.find(MESSAGE)
        if at == -1:
            if (self._first and not self._may_open(text)) or len(text) > _MAX_HEADER:
                self._state = _PLAIN
                content.append(text)
            else:
                self._header = text
            return ""
        header = text[:at]
        self._first = False
        channel = _CHANNEL_NAME.search(header)
        recipient = _RECIPIENT.search(header)
        self._channel = channel.group(1) if channel else None
        self._recipient = recipient.group(1) if recipient else None
        self._state = _BODY
        return text[at + len(MESSAGE) :]

    @staticmethod
    def _may_open(header: str) -> bool:
        """Whether the start of the output can still become a harmony header."""
        head = header.lstrip()
        return any(head.startswith(m) or m.startswith(head) for m in (CHANNEL, "to=", "<|"))

    def _read_body(self, text: str, reasoning: list[str], content: list[str]) -> str:
        found = [(at, marker) for marker in _BODY_ENDS if (at := text.find(marker)) != -1]
        if not found:
            kept = _held_suffix(text, _BODY_ENDS)
            body = text[: len(text) - kept]
            self._held = text[len(body) :]
            self._route(body, reasoning, content)
            return ""
        at, marker = min(found)
        self._route(text[:at], reasoning, content)
        self._end_message(content)
        self._state = _HEADER if marker == START else _BETWEEN
        return text[at + len(marker) :]

    def _route(self, body: str, reasoning: list[str], content: list[str]) -> None:
        if not body:
            return
        if self._recipient is not None:
            self._args.append(body)
        elif self._channel == ANALYSIS:
            reasoning.append(body)
        else:
            content.append(body)

    def _end_message(self, content: list[str]) -> None:
        """A message to a function ends: its call, as a `<tool_call>` block."""
        if self._recipient is None:
            return
        name = self._recipient.removeprefix(FUNCTIONS)
        arguments = "".join(self._args).strip() or "{}"
        self._args = []
        self._recipient = None
        content.append(f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {arguments}}}</tool_call>')

    def finish(self) -> tuple[str, str]:
        """(reasoning, content) still held at the end of the output."""
        reasoning: list[str] = []
        content: list[str] = []
        if self._state == _BODY:
            held, self._held = self._held, ""
            self._route(held, reasoning, content)
            self._end_message(content)
        elif self._state == _HEADER and self._first and not any(m in self._header for m in (CHANNEL, "to=")):
            content.append(self._header)  # (too short to tell: shown as written; a begun header is markup)
        self._header = self._held = ""
        return "".join(reasoning), "".join(content)
