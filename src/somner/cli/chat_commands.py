"""What a person types into `somner run`'s chat, understood: slash commands (Ollama's, with their spellings),
`/set parameter` values checked before they reach the server, and messages of several lines between triple
quotes. Pure functions of the text: the chat loop (`run_cmd`) performs what they describe."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HELP = """\
Available commands:
  /set parameter NAME VALUE   Set a sampling parameter (/set parameter lists them)
  /set system TEXT            Set the system message (/set system alone removes it)
  /set verbose | quiet        Show or hide timings and speed after each answer
  /set format json | noformat Answer in JSON, or in free text
  /show info | parameters | system | template | modelfile | license
                              Show the model's information, or the session's settings
  /load MODEL | FILE          Talk to another model, or resume a session saved with /save
  /save FILE                  Save this session (model, settings, messages) as JSON
  /clear                      Forget the conversation (settings stay)
  /bye                        Leave (Ctrl-D too)
  /?, /help                   This help

Use \"\"\" to begin a message of several lines, and \"\"\" again to end it.
Ctrl-C stops an answer (the server stops generating); at the prompt it clears the line."""


class CommandError(ValueError):
    """A command that cannot be carried out as typed; the message says how to type it."""


@dataclass(frozen=True, slots=True)
class SetParameter:
    name: str
    value: Any  # None: back to the model's default


@dataclass(frozen=True, slots=True)
class SetSystem:
    text: str | None


@dataclass(frozen=True, slots=True)
class SetOption:
    """`/set verbose|quiet|format json|noformat`: a session switch, by its name and new value."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class Show:
    what: str


@dataclass(frozen=True, slots=True)
class Load:
    target: str


@dataclass(frozen=True, slots=True)
class Save:
    path: str


@dataclass(frozen=True, slots=True)
class Clear:
    pass


@dataclass(frozen=True, slots=True)
class Bye:
    pass


@dataclass(frozen=True, slots=True)
class Help:
    text: str


Command = SetParameter | SetSystem | SetOption | Show | Load | Save | Clear | Bye | Help


def _number(kind: type[int] | type[float], low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise CommandError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise CommandError(f"expected a value {bounds}, got {text}")
        return value

    return convert


# Ollama's option names (the server's `/api/chat` takes them as they are), with what each accepts.
PARAMETERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "temperature": (_number(float, 0.0, 100.0), "randomness: 0 always picks the likeliest token"),
    "top_p": (_number(float, 0.0, 1.0), "keep the likeliest tokens up to this total probability"),
    "top_k": (_number(int, 0), "keep only the k likeliest tokens (0: all)"),
    "min_p": (_number(float, 0.0, 1.0), "drop tokens below this share of the likeliest one's probability"),
    "num_predict": (_number(int, -2), "most tokens per answer (-1: no limit, -2: fill the context)"),
    "seed": (_number(int, -(2**63), 2**64 - 1), "random seed, for answers that repeat"),
    "stop": (str, "stop strings: /set parameter stop A B ... (quote those with spaces)"),
    "repeat_penalty": (_number(float, 0.0), "penalty for repeating recent tokens (1: none)"),
    "repeat_last_n": (_number(int, -1), "how many recent tokens the repeat penalty looks at"),
    "presence_penalty": (_number(float, -2.0, 2.0), "penalty for tokens already present"),
    "frequency_penalty": (_number(float, -2.0, 2.0), "penalty growing with how often a token appeared"),
    "typical_p": (_number(float, 0.0, 1.0), "locally typical sampling (1: off)"),
}


def parameters_help() -> str:
    width = max(len(name) for name in PARAMETERS)
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in PARAMETERS.items()]
    return "Parameters (/set parameter NAME VALUE; VALUE 'default' unsets one):\n" + "\n".join(lines)


def parameter(name: str, values: list[str]) -> SetParameter:
    """`/set parameter NAME VALUE...`, checked: a known name and a value of its kind."""
    if name not in PARAMETERS:
        raise CommandError(f"unknown parameter '{name}': one of {', '.join(PARAMETERS)}")
    if not values:
        raise CommandError(f"usage: /set parameter {name} VALUE")
    if values == ["default"]:
        return SetParameter(name, None)
    convert, _ = PARAMETERS[name]
    if name == "stop":
        return SetParameter(name, values)
    if len(values) != 1:
        raise CommandError(f"'{name}' takes one value, got {len(values)}")
    try:
        return SetParameter(name, convert(values[0]))
    except CommandError as exc:
        raise CommandError(f"{name}: {exc}") from None


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise CommandError(f"cannot read {text!r}: {exc}") from None


def _set(rest: str) -> Command:
    head, _, tail = rest.strip().partition(" ")
    if head == "":
        return Help(HELP)
    if head == "parameter":
        words = _words(tail)
        if not words:
            return Help(parameters_help())
        return parameter(words[0], words[1:])
    if head == "system":
        text = tail.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1]
        return SetSystem(text or None)
    if head in ("verbose", "quiet"):
        return SetOption("verbose", head == "verbose")
    if head == "format":
        if tail.strip() != "json":
            raise CommandError("usage: /set format json (or /set noformat)")
        return SetOption("format", "json")
    if head == "noformat":
        return SetOption("format", None)
    raise CommandError(f"unknown setting '{head}': parameter, system, verbose, quiet, format or noformat")


SHOWABLE = ("info", "parameters", "system", "template", "modelfile", "license")


def parse(line: str) -> Command | None:
    """The command on `line`, or None when it is a message (anything not starting with '/'). Raises CommandError
    for an unknown command or a malformed one."""
    text = line.strip()
    if not text.startswith("/"):
        return None
    name, _, rest = text.partition(" ")
    rest = rest.strip()
    match name:
        case "/bye" | "/exit" | "/quit":
            return Bye()
        case "/?" | "/help":
            return Help(parameters_help() if rest in ("parameter", "parameters") else HELP)
        case "/set":
            return _set(rest)
        case "/show":
            if rest not in SHOWABLE:
                raise CommandError(f"usage: /show {' | '.join(SHOWABLE)}")
            return Show(rest)
        case "/clear":
            return Clear()
        case "/load":
            if not rest:
                raise CommandError("usage: /load MODEL (or a file saved with /save)")
            return Load(rest)
        case "/save":
            if not rest:
                raise CommandError("usage: /save FILE")
            return Save(rest)
    raise CommandError(f"unknown command '{name}' (type /? for the commands)")


QUOTES = '"""'


class MessageReader:
    """Turns input lines into messages: a line is a message, unless it starts with three double quotes, which
    begin a message of several lines that ends at the line ending with three double quotes (as in Ollama)."""

    def __init__(self) -> None:
        self._lines: list[str] | None = None

    @property
    def pending(self) -> bool:
        """Inside a block of several lines (the prompt shows that more is expected)."""
        return self._lines is not None

    def reset(self) -> None:
        self._lines = None

    def feed(self, line: str) -> str | None:
        """The message `line` completes, or None while a block goes on."""
        if self._lines is None:
            stripped = line.lstrip()
            if not stripped.startswith(QUOTES):
                return line
            rest = stripped[len(QUOTES) :]
            if rest.rstrip().endswith(QUOTES):  # """ all on one line """
                return rest.rstrip()[: -len(QUOTES)]
            self._lines = [rest] if rest else []
            return None
        if line.rstrip().endswith(QUOTES):
            last = line.rstrip()[: -len(QUOTES)]
            lines = [*self._lines, last] if last else self._lines
            self._lines = None
            return "\n".join(lines)
        self._lines.append(line)
        return None
