"""`somner run MODEL [PROMPT]`: talk to a model from the terminal, as `ollama run` does.

With a prompt, or text piped into stdin, it prints the streamed answer and exits (1, with the server's message,
when the server refuses; 130 after Ctrl-C). Without either, on a terminal, it is a chat: streamed answers, the
conversation kept for the session, messages of several lines between triple quotes, slash commands
(`chat_commands`), Ctrl-C stopping an answer (the server stops generating) without leaving the chat.

The server is found as every client command finds it (`remote`); `--serve` starts one in the background when none
runs. Decorations (spinners, dim timings) only appear when stdout is a terminal: piped output is the answer alone.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import typer

from somner.cli import chat_client, chat_commands, remote, show_cmd
from somner.cli.chat_client import Reply, Session
from somner.cli.remote import Server, ServerError

EXIT_INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
PROMPT = ">>> "
CONTINUATION = "... "
_DIM, _RESET = "\x1b[2m", "\x1b[0m"


# -- arguments ---------------------------------------------------------------------------------------------------


def answer_format(text: str | None) -> str | dict[str, Any] | None:
    """`--format`: "json", or a JSON schema (an object) the answer must follow. Raises ValueError."""
    if text is None:
        return None
    if text.strip() == "json":
        return "json"
    try:
        schema = json.loads(text)
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        raise ValueError(f"--format takes 'json' or a JSON schema object, not {text!r}")
    return schema


def keep_alive(text: str | None) -> str | None:
    """`--keepalive`, checked here so that a typo is one line before anything is sent. Raises ValueError."""
    if text is None:
        return None
    from somner.durations import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"--keepalive: {exc}") from None
    return text.strip()


def parameters(pairs: list[str]) -> dict[str, Any]:
    """`--parameter NAME=VALUE` options, checked as `/set parameter` checks them (stop strings add up). Raises
    ValueError."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"--parameter takes NAME=VALUE, not {pair!r}")
        try:
            chosen = chat_commands.parameter(name.strip(), [value])
        except chat_commands.CommandError as exc:
            raise ValueError(f"--parameter: {exc}") from None
        if name.strip() == "stop":
            values.setdefault("stop", []).extend(chosen.value)
        elif chosen.value is not None:
            values[chosen.name] = chosen.value
    return values


def one_shot_prompt(words: list[str], piped: str | None) -> str | None:
    """The prompt of a one-shot run: what was piped in, then the words given (as `ollama run` joins them); None
    for a chat (nothing given, nothing piped)."""
    given = " ".join(words).strip()
    if piped is None:
        return given or None
    text = piped.strip()
    return f"{text}\n\n{given}" if text and given else text or given  # ("" when both are empty: refused)


# -- the terminal ------------------------------------------------------------------------------------------------


class Terminal:
    """Where the answer and the chat's messages go: stdout for answers and command output, stderr for errors and
    timings; spinners and dim text only when stdout is a terminal."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.fancy = self.out.isatty()
        self._status: Any = None
        self._column = 0  # characters on the answer's current line (to end it with a newline)

    def waiting(self) -> None:
        """A spinner until the first piece of the answer (terminal only)."""
        if self.fancy and self._status is None:
            from rich.console import Console

            self._status = Console(file=self.out).status("", spinner="dots")
            self._status.start()

    def stop_waiting(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def piece(self, text: str, thinking: bool) -> None:
        self.stop_waiting()
        shown = f"{_DIM}{text}{_RESET}" if thinking and self.fancy else text
        self.out.write(shown)
        self.out.flush()
        self._column = 0 if text.endswith("\n") else self._column + len(text)

    def end_answer(self, *, interrupted: bool = False) -> None:
        """End the answer's line; after Ctrl-C on a terminal always (the terminal echoed "^C" on it)."""
        self.stop_waiting()
        if self._column or (interrupted and self.fancy):
            self.out.write("\n")
            self.out.flush()
        self._column = 0

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def dim(self, text: str, *, err: bool = False) -> None:
        stream = self.err if err else self.out
        fancy = stream.isatty()
        stream.write(f"{_DIM}{text}{_RESET}\n" if fancy else text + "\n")
        stream.flush()

    def error(self, text: str) -> None:
        self.end_answer()
        self.err.write(f"error: {text}\n")
        self.err.flush()


def _answer(server: Server, session: Session, term: Terminal) -> Reply:
    """Stream one answer to the session's conversation onto the terminal. Raises ServerError."""
    term.waiting()
    try:
        reply = chat_client.stream(server, session.request(), term.piece)
    except BaseException:
        term.end_answer()
        raise
    term.end_answer(interrupted=reply.interrupted)
    return reply


def answer_once(server: Server, session: Session, prompt: str, term: Terminal) -> int:
    """The one-shot run: print the answer to `prompt`; the exit status."""
    session.messages.append({"role": "user", "content": prompt})
    try:
        reply = _answer(server, session, term)
    except ServerError as exc:
        term.error(str(exc))
        return 1
    if session.verbose:
        term.dim(chat_client.stats(reply), err=True)
    return EXIT_INTERRUPTED if reply.interrupted else 0


# -- the chat ----------------------------------------------------------------------------------------------------


class Chat:
    """The interactive session: reads lines, carries out commands, streams answers."""

    def __init__(self, server: Server, session: Session, term: Terminal) -> None:
        self.server = server
        self.session = session
        self.term = term
        self.reader = chat_commands.MessageReader()

    def load(self, session: Session) -> bool:
        """Load `session`'s model (a spinner meanwhile); False, having said why, when the server refuses."""
        from somner.cli.progress import step

        try:
            with step(f"loading {session.model}", quiet=not self.term.fancy, plain_line=False):
                chat_client.load(self.server, session)
        except ServerError as exc:
            self.term.error(str(exc))
            return False
        except KeyboardInterrupt:
            self.term.error("stopped loading")
            return False
        return True

    def run(self) -> int:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - input() gains line editing and this session's history
        hint = '/? for help, """ for several lines, /bye or Ctrl-D to leave'
        self.term.dim(f"Chatting with {self.session.model}: {hint}.")
        while True:
            try:
                line = input(CONTINUATION if self.reader.pending else PROMPT)
            except EOFError:
                self.term.say("")
                return 0
            except KeyboardInterrupt:
                self.reader.reset()
                self.term.say("")
                self.term.dim("Use Ctrl + d or /bye to exit.")
                continue
            in_block = self.reader.pending or line.lstrip().startswith(chat_commands.QUOTES)
            message = self.reader.feed(line)
            if message is None:
                continue
            try:
                command = None if in_block else chat_commands.parse(message)
            except chat_commands.CommandError as exc:
                self.term.error(str(exc))
                continue
            if isinstance(command, chat_commands.Bye):
                return 0
            try:
                if command is not None:
                    self.carry_out(command)
                elif message.strip():
                    self.ask(message)
            except KeyboardInterrupt:  # outside an answer's stream (which handles its own): back to the prompt
                self.term.end_answer(interrupted=True)

    def ask(self, message: str) -> None:
        messages = self.session.messages
        messages.append({"role": "user", "content": message})
        try:
            reply = _answer(self.server, self.session, self.term)
        except ServerError as exc:
            messages.pop()  # unanswered: the next message should not follow a question left hanging
            self.term.error(str(exc))
            return
        if reply.text:
            messages.append({"role": "assistant", "content": reply.text})  # what was shown, even if cut short
        elif reply.interrupted:
            messages.pop()
        if self.session.verbose:
            self.term.dim(chat_client.stats(reply), err=True)
        self.term.say("")

    def carry_out(self, command: chat_commands.Command) -> None:
        session, term = self.session, self.term
        match command:
            case chat_commands.Help(text):
                term.say(text)
            case chat_commands.SetParameter(name, None):
                session.parameters.pop(name, None)
                term.say(f"Parameter '{name}' back to the model's default.")
            case chat_commands.SetParameter(name, value):
                session.parameters[name] = value
                shown = ", ".join(value) if isinstance(value, list) else value
                term.say(f"Set parameter '{name}' to '{shown}'")
            case chat_commands.SetSystem(text):
                session.system = text
                term.say("Set system message." if text else "Cleared system message.")
            case chat_commands.SetOption("verbose", value):
                session.verbose = bool(value)
                term.say(f"Set '{'verbose' if value else 'quiet'}' mode.")
            case chat_commands.SetOption(_, value):
                session.format = value
                term.say("Set format to 'json' mode." if value else "Disabled format.")
            case chat_commands.Show(what):
                self.show(what)
            case chat_commands.Clear():
                session.messages.clear()
                term.say("Cleared session context")
            case chat_commands.Save(path):
                try:
                    Path(path).expanduser().write_text(session.to_json(), encoding="utf-8")
                except OSError as exc:
                    term.error(f"cannot write {path}: {exc.strerror or exc}")
                    return
                term.say(f"Saved the session to {path}")
            case chat_commands.Load(target):
                self.switch(target)

    def switch(self, target: str) -> None:
        """`/load`: a session file saved with /save, or another model (the conversation starts afresh)."""
        path = Path(target).expanduser()
        if path.is_file():
            try:
                restored = Session.from_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                self.term.error(f"cannot resume {target}: {exc}")
                return
            if self.load(restored):
                self.session = restored
                self.term.say(f"Resumed {target}: {restored.model}, {len(restored.messages)} messages")
            return
        candidate = replace(self.session, model=target, messages=[])
        if self.load(candidate):
            self.session = candidate
            self.term.say(f"Loaded {target}")

    def show(self, what: str) -> None:
        try:
            facts = show_cmd.from_server(self.server, self.session.model)
        except ServerError as exc:
            self.term.error(str(exc))
            return
        shown = facts.show
        session = self.session
        if what == "info":
            text = show_cmd.render(facts)
        elif what == "parameters":
            mine = "\n".join(f"  {name:<16}{value}" for name, value in session.parameters.items())
            theirs = "\n".join(f"  {line}" for line in (shown.get("parameters") or "").splitlines())
            text = f"Session parameters:\n{mine or '  (none)'}\nModel parameters:\n{theirs or '  (none)'}"
        elif what == "system":
            text = session.system or shown.get("system") or "No system message was specified for this model."
        elif what == "license":
            text = shown.get("license") or "No license was specified for this model."
        elif what == "template":
            text = f"({facts.template_origin})\n{facts.template}" if facts.template else "No template is known yet."
        else:  # modelfile
            text = shown.get(what) or f"No {what} was specified for this model."
        self.term.say(str(text))


def run(
    model: str = typer.Argument(..., help="Model id or alias.", autocompletion=show_cmd.complete_models),
    prompt: list[str] | None = typer.Argument(
        None, help="Answer this and exit (text piped into stdin comes first). Without it: a chat.", show_default=False
    ),
    format: str | None = typer.Option(None, "--format", help="Answer format: json, or a JSON schema."),
    keepalive: str | None = typer.Option(
        None, "--keepalive", help="How long the model stays loaded after a request (5m; 0 unloads, -1 keeps)."
    ),
    parameter: list[str] | None = typer.Option(
        None,
        "--parameter",
        "-p",
        help="A sampling parameter, NAME=VALUE (as /set parameter: temperature, top_p, top_k, min_p, num_predict, "
        "seed, stop, ...); repeatable.",
        show_default=False,
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="After each answer, print its timings: time to first token, tokens, tokens/s."
    ),
    serve: bool = typer.Option(False, "--serve", help="Start a background server (as `somner start`) if none runs."),
    url: str | None = remote.UrlOption,
    key: str | None = remote.KeyOption,
    config: Path | None = remote.ConfigOption,
    data_dir: Path | None = remote.DataDirOption,
) -> None:
    """Chat with a model in the terminal, or answer a prompt (given or piped into stdin) and exit.

    In the chat, /? lists the commands (/set parameter, /set system, /show, /load, /save, /clear, /bye), three
    double quotes begin and end a message of several lines, and Ctrl-C stops an answer (the server stops
    generating) without leaving the chat."""
    try:
        session = Session(
            model,
            parameters=parameters(parameter or []),
            format=answer_format(format),
            keep_alive=keep_alive(keepalive),
            verbose=verbose,
        )
    except ValueError as exc:
        remote.fail(str(exc), code=2)
    piped = None if sys.stdin.isatty() else sys.stdin.read()
    text = one_shot_prompt(prompt or [], piped)
    if text is not None and not text.strip():
        remote.fail("nothing to answer: the prompt is empty", code=2)
    server = remote.connect(config, data_dir, url, key, serve=serve)
    term = Terminal()
    if text is not None:
        raise typer.Exit(answer_once(server, session, text, term))
    chat = Chat(server, session, term)
    if not chat.load(session):
        raise typer.Exit(1)
    raise typer.Exit(chat.run())
