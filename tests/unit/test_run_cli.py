"""`somner run`'s parts without a server: the chat's command parser and message reader, argument checks, the
session's requests, reading a streamed answer (a scripted server), the `--verbose` lines, finding the key, and
the plain progress lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from somner.cli import app, chat_client, progress, remote, run_cmd, show_cmd
from somner.cli.chat_client import Reply, Session
from somner.cli.chat_commands import (
    Bye,
    Clear,
    CommandError,
    Help,
    Load,
    MessageReader,
    Save,
    SetOption,
    SetParameter,
    SetSystem,
    Show,
    parse,
)
from somner.settings import Settings

runner = CliRunner()


# -- the chat's commands -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("/set parameter temperature 0.5", SetParameter("temperature", 0.5)),
        ("/set parameter top_k 40", SetParameter("top_k", 40)),
        ("/set parameter num_predict -1", SetParameter("num_predict", -1)),
        ("/set parameter seed 42", SetParameter("seed", 42)),
        ("/set parameter min_p 0.05", SetParameter("min_p", 0.05)),
        ("/set parameter top_p 1", SetParameter("top_p", 1.0)),
        ('/set parameter stop "<end>" "User:" ###', SetParameter("stop", ["<end>", "User:", "###"])),
        ("/set parameter seed default", SetParameter("seed", None)),
        ("/set system You are terse.", SetSystem("You are terse.")),
        ('/set system "Quoted, with spaces"', SetSystem("Quoted, with spaces")),
        ("/set system", SetSystem(None)),
        ("/set verbose", SetOption("verbose", True)),
        ("/set quiet", SetOption("verbose", False)),
        ("/set format json", SetOption("format", "json")),
        ("/set noformat", SetOption("format", None)),
        ("/show info", Show("info")),
        ("/show template", Show("template")),
        ("/load other-model", Load("other-model")),
        ("/save /tmp/chat.json", Save("/tmp/chat.json")),
        ("/clear", Clear()),
        ("  /bye  ", Bye()),
        ("/exit", Bye()),
    ],
)
def test_commands_are_understood(line: str, command: object) -> None:
    assert parse(line) == command


def test_help_and_messages() -> None:
    assert isinstance(parse("/?"), Help)
    general, parameters = parse("/help"), parse("/set parameter")
    assert isinstance(general, Help) and "/set parameter" in general.text
    assert isinstance(parameters, Help) and "num_predict" in parameters.text
    assert parse("hello there") is None
    assert parse("") is None


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("/frobnicate", "unknown command '/frobnicate'"),
        ("/set parameter temperature hot", "temperature: expected a number, got 'hot'"),
        ("/set parameter top_p 2", "top_p: expected a value between 0 and 1, got 2"),
        ("/set parameter top_k 1.5", "top_k: expected an integer"),
        ("/set parameter warmth 1", "unknown parameter 'warmth'"),
        ("/set parameter temperature", "usage: /set parameter temperature VALUE"),
        ("/set parameter temperature 1 2", "takes one value"),
        ('/set parameter stop "open', "cannot read"),
        ("/set colour red", "unknown setting 'colour'"),
        ("/set format yaml", "usage: /set format json"),
        ("/show everything", "usage: /show info"),
        ("/load", "usage: /load MODEL"),
        ("/save", "usage: /save FILE"),
    ],
)
def test_bad_commands_say_what_is_wrong(line: str, says: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(line)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def pending(reader: MessageReader) -> bool:
    return reader.pending  # (a call: mypy would otherwise keep a narrowed `reader.pending` across feed())


def test_messages_of_several_lines() -> None:
    reader = MessageReader()
    assert reader.feed("one line") == "one line"
    assert reader.feed('"""first') is None
    assert pending(reader)
    assert reader.feed("second") is None
    assert reader.feed('third"""') == "first\nsecond\nthird"
    assert not pending(reader)
    assert reader.feed('"""') is None
    assert reader.feed("  indented") is None
    assert reader.feed('"""') == "  indented"
    assert reader.feed('"""all on one line"""') == "all on one line"
    assert reader.feed('"""abandoned') is None
    reader.reset()
    assert reader.feed("/bye") == "/bye"


# -- arguments ---------------------------------------------------------------------------------------------------


def test_format_keepalive_and_parameters() -> None:
    assert run_cmd.answer_format(None) is None
    assert run_cmd.answer_format("json") == "json"
    assert run_cmd.answer_format('{"type": "object"}') == {"type": "object"}
    with pytest.raises(ValueError, match="'json' or a JSON schema"):
        run_cmd.answer_format("xml")
    assert run_cmd.keep_alive("5m") == "5m"
    assert run_cmd.keep_alive("-1") == "-1"
    with pytest.raises(ValueError, match="--keepalive: invalid duration"):
        run_cmd.keep_alive("soon")
    assert run_cmd.parameters(["temperature=0", "stop=a", "stop=b c", "seed=7"]) == {
        "temperature": 0.0,
        "stop": ["a", "b c"],
        "seed": 7,
    }
    with pytest.raises(ValueError, match="NAME=VALUE"):
        run_cmd.parameters(["temperature"])
    with pytest.raises(ValueError, match="unknown parameter"):
        run_cmd.parameters(["heat=1"])


def test_the_prompt_of_a_one_shot_run() -> None:
    assert run_cmd.one_shot_prompt([], None) is None  # a chat
    assert run_cmd.one_shot_prompt(["Why", "is", "the", "sky", "blue?"], None) == "Why is the sky blue?"
    assert run_cmd.one_shot_prompt([], "piped text\n") == "piped text"
    assert run_cmd.one_shot_prompt(["Summarize", "this."], "a document\n") == "a document\n\nSummarize this."
    assert run_cmd.one_shot_prompt([], "\n") == ""  # refused by the command


def test_bad_arguments_are_one_line_and_exit_2() -> None:
    for args in (["--format", "xml"], ["--keepalive", "soon"], ["-p", "heat=1"]):
        result = runner.invoke(app, ["run", "m", "hi", "--url", "http://127.0.0.1:9", *args])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_an_empty_piped_prompt_is_refused() -> None:
    result = runner.invoke(app, ["run", "m", "--url", "http://127.0.0.1:9"], input="\n")
    assert result.exit_code == 2
    assert result.output == "error: nothing to answer: the prompt is empty\n"


def test_a_server_that_is_down_is_one_line() -> None:
    result = runner.invoke(app, ["run", "m", "hi", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach Somner at http://127.0.0.1:9")
    assert result.output.count("\n") == 1


def test_no_server_says_how_to_start_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMNER_PORT", "9")
    result = runner.invoke(app, ["run", "m", "hi", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no Somner server is running" in result.output and "somner start" in result.output
    assert "--serve" in result.output
    assert result.output.count("\n") == 1


# -- the session's requests --------------------------------------------------------------------------------------


def test_session_requests() -> None:
    session = Session("m", system="Be brief.", parameters={"num_predict": 8}, format="json", keep_alive="0")
    session.messages.append({"role": "user", "content": "hi"})
    assert session.request() == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"num_predict": 8},
        "format": "json",
        "keep_alive": "0",
    }
    load = session.request([], stream=False)
    assert load["messages"] == [] and load["stream"] is False  # loads the model, no system message alone


def test_sessions_save_and_resume(tmp_path: Path) -> None:
    session = Session("m", system="s", parameters={"stop": ["x"]}, verbose=True)
    session.messages += [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert Session.from_json(session.to_json()) == session
    with pytest.raises(ValueError, match="not a session"):
        Session.from_json('{"model": "m"}')
    with pytest.raises(ValueError, match="messages"):
        Session.from_json(json.dumps({"somner-session": 1, "model": "m", "messages": [{"role": 1}]}))


# -- a streamed answer, from a scripted server ---------------------------------------------------------------------


def lines(*bodies: dict[str, object]) -> bytes:
    return b"".join(json.dumps(b).encode() + b"\n" for b in bodies)


FINAL = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 2_000_000_000,
    "load_duration": 1_500_000,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 40_000_000,
    "eval_count": 30,
    "eval_duration": 1_500_000_000,
}


def server_answering(handler: httpx.MockTransport) -> remote.Server:
    return remote.Server("http://somner.test", "sk-x", Settings(), Path("/nonexistent"), transport=handler)


def test_a_streamed_answer_and_its_measurements() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = lines(
            {"message": {"role": "assistant", "content": "Hel"}, "done": False},
            {"message": {"role": "assistant", "thinking": "hm"}, "done": False},
            {"message": {"role": "assistant", "content": "lo"}, "done": False},
            {"message": {"role": "assistant", "content": ""}, **FINAL},
        )
        return httpx.Response(200, content=body)

    pieces: list[tuple[str, bool]] = []
    reply = chat_client.stream(
        server_answering(httpx.MockTransport(answer)), {"model": "m"}, lambda p, t: pieces.append((p, t))
    )
    assert pieces == [("Hel", False), ("hm", True), ("lo", False)]
    assert (reply.text, reply.thinking, reply.pieces, reply.done_reason) == ("Hello", "hm", 3, "stop")
    assert reply.metrics["eval_count"] == 30 and not reply.interrupted
    assert seen[0].url.path == "/api/chat" and seen[0].headers["authorization"] == "Bearer sk-x"


def test_refusals_and_errors_in_the_stream() -> None:
    refuse = httpx.MockTransport(lambda _: httpx.Response(404, json={"error": "model 'x' not found"}))
    with pytest.raises(remote.ServerError) as info:
        chat_client.stream(server_answering(refuse), {}, lambda p, t: None)
    assert str(info.value) == "model 'x' not found [HTTP 404]"
    midway = lines({"message": {"content": "a"}, "done": False}, {"error": "the engine went away"})
    broken = httpx.MockTransport(lambda _: httpx.Response(200, content=midway))
    with pytest.raises(remote.ServerError, match="the engine went away"):
        chat_client.stream(server_answering(broken), {}, lambda p, t: None)


class Interrupted(httpx.SyncByteStream):
    """Two lines, then Ctrl-C while waiting for the third; records that the response was closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield lines({"message": {"content": "one "}, "done": False})
        yield lines({"message": {"content": "two"}, "done": False})
        raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True


def test_ctrl_c_ends_the_answer_and_closes_the_response() -> None:
    body = Interrupted()
    server = server_answering(httpx.MockTransport(lambda _: httpx.Response(200, stream=body)))
    reply = chat_client.stream(server, {}, lambda p, t: None)
    assert reply.interrupted and reply.text == "one two" and reply.pieces == 2
    assert body.closed  # (the real transport closes the connection: the server cancels the generation)


def test_verbose_lines() -> None:
    metrics = {name: value for name, value in FINAL.items() if isinstance(value, int) and name != "done"}
    reply = Reply(text="x", pieces=30, metrics=metrics, first_token_s=0.0425, elapsed_s=2.0)
    assert chat_client.stats(reply).splitlines() == [
        "total duration:       2.000s",
        "load duration:        1.500ms",
        "time to first token:  42.500ms",
        "prompt eval count:    12 token(s)",
        "prompt eval duration: 40.000ms",
        "prompt eval rate:     300.00 tokens/s",
        "eval count:           30 token(s)",
        "eval duration:        1.500s",
        "eval rate:            20.00 tokens/s",
    ]
    cut = Reply(text="x", pieces=11, interrupted=True, first_token_s=0.5, elapsed_s=1.5)
    assert chat_client.stats(cut).splitlines() == [
        "total duration:       1.500s",
        "time to first token:  500.000ms",
        "eval count:           11 token(s) (stopped: counted here)",
        "eval rate:            10.00 tokens/s",
    ]
    assert chat_client.duration(0.000563) == "563µs"


# -- finding the key ---------------------------------------------------------------------------------------------


def test_the_key_and_where_it_may_go(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("sk-somner-from-file\n")
    settings = Settings()
    env = {"SOMNER_API_KEY": "sk-somner-from-env"}
    assert remote.resolve_key("sk-given", settings, tmp_path, local=True, environ=env) == "sk-given"
    assert remote.resolve_key(None, settings, tmp_path, local=False, environ=env) == "sk-somner-from-env"
    assert remote.resolve_key(None, settings, tmp_path, local=True, environ={}) == "sk-somner-from-file"
    admin = {"SOMNER_ADMIN_KEY": "sk-somner-admin-env"}
    assert remote.resolve_key(None, settings, tmp_path, local=True, environ=admin) == "sk-somner-admin-env"
    # The local admin key never goes to a server elsewhere.
    assert remote.resolve_key(None, settings, tmp_path, local=False, environ=admin) is None
    assert remote.resolve_key(None, settings, tmp_path / "none", local=True, environ={}) is None
    assert remote.is_loopback_url("http://127.0.0.1:8000") and remote.is_loopback_url("http://[::1]:8000")
    assert remote.is_loopback_url("http://localhost:8000")
    assert not remote.is_loopback_url("https://llm.example.com")


def test_error_bodies_of_every_dialect() -> None:
    assert remote.error_text({"error": "ollama says"}) == "ollama says"
    assert remote.error_text({"error": {"message": "openai\nsays"}}) == "openai says"
    assert remote.error_text({"detail": "tabby says"}) == "tabby says"
    assert remote.error_text(["no"]) is None
    response = httpx.Response(401, json={"error": {"message": "Invalid API key."}})
    assert remote.refusal(response) == "Invalid API key. (pass --key or set SOMNER_API_KEY) [HTTP 401]"
    assert remote.refusal(httpx.Response(502, text="Bad gateway\nmore")) == "Bad gateway [HTTP 502]"
    no_ollama = httpx.Response(
        404, json={"error": "No such endpoint: POST /api/chat"}, request=httpx.Request("POST", "http://s/api/chat")
    )
    assert "add `ollama` to its api_servers" in remote.refusal(no_ollama)


# -- progress ----------------------------------------------------------------------------------------------------


def test_plain_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    line = progress.transfer_line("pull x", 12 * 1024**2, 1200 * 1024**2, 4.0)
    assert line == "pull x: 12.0 MiB of 1.2 GiB (1%), 3.0 MiB/s, 6:36 left"
    assert progress.transfer_line("pull x", 2048, None, 2.0) == "pull x: 2.0 KiB, 1.0 KiB/s"
    assert progress.clock(3725) == "1:02:05"
    with progress.transfer("pull x") as update:  # not a terminal here: plain lines on stderr
        update(10, 100)
        update(100, 100)
    with progress.step("loading m"):
        pass
    with progress.step("silent", plain_line=False):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "pull x..."
    assert err[1].startswith("pull x: 100 B in ")
    assert err[2:] == ["loading m..."]


# -- the command line --------------------------------------------------------------------------------------------


def test_help_lists_the_terminal_commands_and_completion() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("run", "show", "--install-completion", "Ollama", "Anthropic"):
        assert word in result.output
    serve = runner.invoke(app, ["serve", "--help"])
    assert "OpenAI, Ollama, KoboldAI, Anthropic and TabbyAPI" in " ".join(serve.output.split())
    run = runner.invoke(app, ["run", "--help"])
    for option in ("--format", "--keepalive", "--verbose", "--serve", "--parameter", "--url", "--key"):
        assert option in run.output


def test_models_can_be_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("alpha", "beta"):
        (models / f"{name}.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("SOMNER_DATA_DIR", str(tmp_path))
    assert show_cmd.complete_models("") == ["alpha", "beta"]
    assert show_cmd.complete_models("al") == ["alpha"]
