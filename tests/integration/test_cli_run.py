"""`somner run` and `somner show` as subprocesses against a real `somner serve` on the default model: one-shot
answers (a prompt, piped stdin), a chat driven through a pseudo-terminal (`/set parameter`, a message of several
lines, Ctrl-C in the middle of an answer, `/bye`), the bad inputs, and `--serve`.

The default model is a base model: left alone it talks until its context is full, which is what the Ctrl-C test
needs; every other answer is kept short by the model's defaults (`max_tokens`, in its per-model file)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from somner.cli.daemon_cmd import DaemonRecord, write_state
from somner.store.db import Database, sqlite_url
from somner.store.usage import UsageRecord, UsageStore
from tests.conftest import link_model
from tests.servers import ADMIN_KEY, ServeProcess, free_port, start_serve

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m-q4_k_m"
SHORT = 12  # the model's default max_tokens on these servers
ENGINE = {"SOMNER_ENGINE__THREADS": "2", "SOMNER_ENGINE__PARALLEL": "2", "SOMNER_ENGINE__CTX": "2048"}
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r|[\u2800-\u28ff]")


def prepare(data_dir: Path, model_path: Path) -> Path:
    link_model(model_path, data_dir / "models")
    (data_dir / "models" / f"{MODEL}.yaml").write_text(f"defaults: {{max_tokens: {SHORT}}}\n")
    return data_dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[ServeProcess]:
    """A server of these tests' own (they read its worker's counters and its usage records)."""
    data_dir = prepare(tmp_path_factory.mktemp("run-data"), model_path)
    running = start_serve(data_dir, env=ENGINE)
    try:
        yield running
    finally:
        running.stop()


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMNER_")}
    return {**env, "NO_COLOR": "", **extra}


def somner(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "somner", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or environment(),
        timeout=180,
        check=False,
    )


def against(server: ServeProcess) -> list[str]:
    return ["--url", server.url, "--key", ADMIN_KEY]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command prints (nothing on stdout)."""
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- the server's side -------------------------------------------------------------------------------------------


def worker_stats(server: ServeProcess) -> dict[str, int]:
    """The engine counters of the server's worker (found among its children by its `--socket` argument)."""
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.process.pid and b"--socket" in argv:
            socket = argv[argv.index(b"--socket") + 1].decode()
            with httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://worker") as client:
                stats: dict[str, int] = client.get("/stats").json()["engine"]
                return stats
    raise AssertionError("the server runs no worker")


def usage_records(data_dir: Path) -> list[UsageRecord]:
    async def read() -> list[UsageRecord]:
        db = Database(sqlite_url(data_dir / "somner.db"))
        try:
            return await UsageStore(db).all()
        finally:
            await db.close()

    return asyncio.run(read())


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


# -- a pseudo-terminal -------------------------------------------------------------------------------------------


class Terminal:
    """`somner` on a pseudo-terminal that is its controlling terminal, so that ^C is a SIGINT as at a keyboard."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "somner", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm"},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509 - no threads to fear here
        )
        os.close(slave)
        self.fd = master
        self.raw = ""
        self.seen = 0  # expect() looks only past what earlier calls matched

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.fd, 65536).decode(errors="replace")
            except OSError:  # the child closed the terminal
                time.sleep(timeout)

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.text, self.seen)
            if found is not None:
                self.seen = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout}s in:\n{self.text[-3000:]}")
            self._read(0.05)

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.process.wait(timeout=1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)


# -- the tests ---------------------------------------------------------------------------------------------------


def test_one_shot_with_a_prompt(server: ServeProcess) -> None:
    result = somner("run", MODEL, "Tell", "me", "about", "the", "sea.", "--verbose", *against(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and result.stdout.endswith("\n")
    assert "\x1b" not in result.stdout  # not a terminal: the answer alone
    for label in ("time to first token:", "prompt eval rate:", f"eval count:           {SHORT} token(s)"):
        assert label in result.stderr, result.stderr


def test_piped_stdin_to_the_server_somner_start_recorded(server: ServeProcess) -> None:
    # As `somner start` leaves it: somner.json names the running server; the key comes from SOMNER_API_KEY.
    record = DaemonRecord(pid=server.process.pid, host="127.0.0.1", port=server.port, started_at=time.time())
    write_state(server.data_dir, record)
    env = environment(SOMNER_API_KEY=ADMIN_KEY)
    result = somner("run", MODEL, "--data-dir", str(server.data_dir), stdin="The capital of France is\n", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    shown = somner("show", MODEL, "--data-dir", str(server.data_dir), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["url"] == server.url


def test_a_chat_on_a_terminal(server: ServeProcess, tmp_path: Path) -> None:
    cancelled_before = worker_stats(server)["cancelled"] if _has_worker(server) else 0
    cut_before = sum(r.status == 499 for r in usage_records(server.data_dir))
    terminal = Terminal("run", MODEL, *against(server), env=environment())
    try:
        terminal.expect(r">>> ")
        terminal.line("/set parameter num_predict 2000")
        terminal.expect(r"Set parameter 'num_predict' to '2000'")
        terminal.line("/set parameter temperature 0.8")
        terminal.expect(r"Set parameter 'temperature' to '0.8'")
        terminal.line("/set parameter seed 7")  # (the same long answer every time)
        terminal.expect(r"Set parameter 'seed' to '7'")
        terminal.line("/set verbose")
        terminal.expect(r"Set 'verbose' mode.")
        terminal.expect(r">>> ")
        terminal.line('"""Write a very long story')
        terminal.expect(r"\.\.\. ")
        terminal.line('about a lighthouse."""')
        terminal.expect(r'lighthouse\."""\n')
        terminal.expect(r"(\S+\s+){12}", timeout=90)  # the answer is streaming
        # Ctrl-C in the middle of the answer: the answer stops, the server stops generating, the chat goes on.
        terminal.send("\x03")
        stats = terminal.expect(r"eval count:\s+(\d+) token\(s\) \(stopped: counted here\)", timeout=10)
        terminal.expect(r">>> ")
        took = wait_until(lambda: worker_stats(server)["active"] == 0, timeout=5)
        assert took < 2.0
        engine = worker_stats(server)
        assert engine["cancelled"] == cancelled_before + 1
        time.sleep(0.5)
        assert worker_stats(server)["generated_tokens"] == engine["generated_tokens"]  # nothing more generated
        models = httpx.get(f"{server.url}/admin/models", headers=server.headers).json()["data"]
        assert {m["id"]: m["in_flight"] for m in models}[MODEL] == 0
        wait_until(lambda: sum(r.status == 499 for r in usage_records(server.data_dir)) > cut_before, timeout=10)
        cut = max((r for r in usage_records(server.data_dir) if r.status == 499), key=lambda r: r.time)
        assert cut.route == "chat" and cut.dialect == "ollama"
        assert int(stats.group(1)) <= cut.completion_tokens < 500  # far fewer than the 2000 asked for

        terminal.line("/frobnicate")
        terminal.expect(r"error: unknown command '/frobnicate' \(type /\? for the commands\)\n")
        saved = tmp_path / "chat.json"
        terminal.line(f"/save {saved}")
        terminal.expect(r"Saved the session to ")
        assert [m["role"] for m in json.loads(saved.read_text())["messages"]] == ["user", "assistant"]
        terminal.line("/clear")
        terminal.expect(r"Cleared session context")
        terminal.line(f"/load {saved}")
        terminal.expect(rf"Resumed .*chat\.json: {MODEL}, 2 messages")
        terminal.line("/show info")
        terminal.expect(r"architecture\s+gemma3")
        terminal.line("/set parameter num_predict 4")
        terminal.expect(r">>> ")
        terminal.line("Hello")
        terminal.expect(r"eval count:\s+4 token\(s\)\n", timeout=60)  # answered in full: the chat went on
        terminal.expect(r">>> ")
        terminal.line("/bye")
        assert terminal.wait() == 0
    finally:
        terminal.close()


def test_ctrl_c_ends_a_one_shot_answer(server: ServeProcess) -> None:
    args = ("run", MODEL, "Write", "a", "long", "story.", "-p", "num_predict=2000", "-p", "seed=7", *against(server))
    terminal = Terminal(*args, env=environment())
    try:
        terminal.expect(r"(\S+\s+){8}", timeout=90)
        terminal.send("\x03")
        assert terminal.wait() == 130  # as a shell reports a command ended by Ctrl-C
    finally:
        terminal.close()
    assert wait_until(lambda: worker_stats(server)["active"] == 0, timeout=5) < 2.0


def _has_worker(server: ServeProcess) -> bool:
    try:
        worker_stats(server)
    except AssertionError:
        return False
    return True


def test_show_against_the_server(server: ServeProcess) -> None:
    human = somner("show", MODEL, *against(server))
    assert human.returncode == 0, human.stderr
    for expected in (
        "architecture        gemma3",
        "quantization        Q4_K_M",
        "context length      32768",
        "completion",
        "Serving",
        f"num_predict     {SHORT}",
        "built-in gemma",
        "Config entry",
    ):
        assert expected in human.stdout, expected
    facts = json.loads(somner("show", MODEL, "--json", *against(server)).stdout)
    assert facts["source"] == "server" and facts["architecture"] == "gemma3"
    assert facts["defaults"] == {"num_predict": SHORT}
    assert facts["serving"]["context_length"] == 2048 and facts["serving"]["parallel"] == 2
    assert facts["entry"]["defaults"] == {"max_tokens": SHORT}


def test_bad_inputs_are_one_line_and_fail(server: ServeProcess) -> None:
    unknown = somner("run", "no-such-model", "Hi", *against(server))
    assert unknown.returncode == 1
    assert "no-such-model" in one_line(unknown) and "[HTTP 404]" in unknown.stderr
    wrong_key = somner("run", MODEL, "Hi", "--url", server.url, "--key", "sk-somner-wrong")
    assert wrong_key.returncode == 1
    assert "Invalid API key" in one_line(wrong_key) and "--key" in wrong_key.stderr
    down = somner("run", MODEL, "Hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "cannot reach Somner" in one_line(down)
    nothing = somner(
        "run",
        MODEL,
        "Hi",
        env=environment(SOMNER_DATA_DIR=str(server.data_dir / "elsewhere"), SOMNER_PORT=str(free_port())),
    )
    assert nothing.returncode == 1
    assert "no Somner server is running" in one_line(nothing) and "somner start" in nothing.stderr
    unknown_show = somner("show", "no-such-model", *against(server))
    assert unknown_show.returncode == 1
    assert "no-such-model" in one_line(unknown_show)
    # In a chat, an unknown model ends it before the first prompt.
    terminal = Terminal("run", "no-such-model", *against(server), env=environment())
    try:
        terminal.expect(r"error: The model 'no-such-model' does not exist")
        assert terminal.wait() == 1
    finally:
        terminal.close()


def test_serve_starts_a_background_server(tmp_path: Path, model_path: Path) -> None:
    data_dir = prepare(tmp_path / "data", model_path)
    env = environment(SOMNER_PORT=str(free_port()), **ENGINE)
    try:
        first = somner("run", MODEL, "Hi", "--serve", "--data-dir", str(data_dir), env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() and "Somner started" not in first.stdout  # stdout is the answer alone
        assert "Somner started" in first.stderr
        assert (data_dir / "admin.key").is_file()  # the new server's key, found there by the client
        again = somner("run", MODEL, "Hi", "--data-dir", str(data_dir), env=env)  # now found through its record
        assert again.returncode == 0, again.stderr
    finally:
        stopped = somner("stop", "--data-dir", str(data_dir), env=env)
    assert stopped.returncode == 0, stopped.stderr
