"""`somner run`'s conversation with the server: a session (model, settings, messages), its requests, and the
streamed answers with their measurements.

It speaks Ollama's `/api/chat` rather than OpenAI's `/v1/chat/completions`, for three reasons: the session's
settings are Ollama's option names (`num_predict`, `top_k`, `min_p`, `seed`, `stop`), which that endpoint takes as
they are, with `format` and `keep_alive` as fields of their own; its last line carries Ollama's measurements
(load, prompt and generation durations and counts), which are exactly what `--verbose` prints, measured by the
server rather than guessed from the client's side; and a request without messages loads the model and nothing
else, which is how the chat loads it (with a spinner) before the first prompt. The price: `ollama` must be among
the server's `api_servers` (it is by default).

Stopping: an interrupted answer (Ctrl-C) closes its HTTP connection; the gateway notices that its client left and
cancels the generation in the engine, as for any client that goes away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from somner.cli.remote import Server, ServerError, error_text, refusal, unreachable

SESSION_MARK = "somner-session"


@dataclass
class Session:
    """One chat: the model, the settings the person chose, and the conversation so far."""

    model: str
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    format: str | dict[str, Any] | None = None
    keep_alive: str | None = None
    verbose: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)

    def request(self, messages: list[dict[str, str]] | None = None, *, stream: bool = True) -> dict[str, Any]:
        """The `/api/chat` body for the conversation (or for `messages`: an empty list only loads the model)."""
        turns = self.messages if messages is None else messages
        if turns and self.system:
            turns = [{"role": "system", "content": self.system}, *turns]
        body: dict[str, Any] = {"model": self.model, "messages": turns, "stream": stream}
        if self.parameters:
            body["options"] = dict(self.parameters)
        if self.format is not None:
            body["format"] = self.format
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    def to_json(self) -> str:
        return json.dumps({SESSION_MARK: 1, **asdict(self)}, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Session:
        """A session saved by `/save`. Raises ValueError for anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get(SESSION_MARK) != 1:
            raise ValueError("not a session saved by somner run's /save")
        messages = data.get("messages", [])
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError("its messages are not a list of {role, content}")
        parameters = data.get("parameters") or {}
        if not isinstance(data.get("model"), str) or not isinstance(parameters, dict):
            raise ValueError("it names no model, or its parameters are not a mapping")
        return cls(
            model=data["model"],
            system=data.get("system") if isinstance(data.get("system"), str) else None,
            parameters=parameters,
            format=data.get("format") if isinstance(data.get("format"), str | dict) else None,
            keep_alive=str(data["keep_alive"]) if data.get("keep_alive") is not None else None,
            verbose=bool(data.get("verbose", False)),
            messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        )


@dataclass
class Reply:
    """One answer as it arrived: the text, whether Ctrl-C cut it short, and its measurements."""

    text: str = ""
    thinking: str = ""
    pieces: int = 0
    interrupted: bool = False
    done_reason: str | None = None
    metrics: dict[str, int] = field(default_factory=dict)  # Ollama's: *_duration in ns, *_count in tokens
    first_token_s: float | None = None  # measured here: request sent → first piece of text
    elapsed_s: float = 0.0


OnText = Callable[[str, bool], None]
"""Called with each piece of the answer as it arrives, and whether it is reasoning (`thinking`) or the answer."""

_METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def load(server: Server, session: Session) -> None:
    """Load the session's model (a chat request without messages); ServerError if the server refuses."""
    server.request("POST", "/api/chat", json=session.request([], stream=False))


def _line(raw: str) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def stream(server: Server, body: dict[str, Any], on_text: OnText) -> Reply:
    """Send one chat request and pass its answer to `on_text` as it streams. Ctrl-C (KeyboardInterrupt) ends it
    early, closing the connection so that the server stops generating; the reply says `interrupted`. Raises
    ServerError for a refusal, or an error the server reports in the middle of the answer."""
    reply = Reply()
    started = time.perf_counter()
    try:
        with server.client() as http, http.stream("POST", "/api/chat", json=body) as response:
            if response.status_code >= 400:
                raise ServerError(refusal(response), response.status_code)
            for raw in response.iter_lines():
                data = _line(raw) if raw.strip() else None
                if data is None:
                    continue
                if "error" in data:
                    raise ServerError(error_text(data) or "the server ended the answer with an error")
                message = data.get("message") if isinstance(data.get("message"), dict) else {}
                for key, thinking in (("thinking", True), ("content", False)):
                    piece = message.get(key) if isinstance(message, dict) else None
                    if isinstance(piece, str) and piece:
                        if reply.first_token_s is None:
                            reply.first_token_s = time.perf_counter() - started
                        reply.pieces += 1
                        if thinking:
                            reply.thinking += piece
                        else:
                            reply.text += piece
                        on_text(piece, thinking)
                if data.get("done"):
                    reply.done_reason = str(data.get("done_reason") or "stop")
                    reply.metrics = {k: int(data[k]) for k in _METRICS if isinstance(data.get(k), int | float)}
                    break
    except KeyboardInterrupt:
        # Leaving the `with` blocks closed the half-read response and its connection: the server sees its
        # client gone and cancels the generation.
        reply.interrupted = True
    except httpx.HTTPError as exc:
        raise ServerError(unreachable(server.url, exc)) from None
    reply.elapsed_s = time.perf_counter() - started
    return reply


def duration(seconds: float) -> str:
    """A duration the way Ollama's verbose output writes them: 563µs, 66.613ms, 5.058s."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3f}ms"
    return f"{seconds:.3f}s"


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds:.2f} tokens/s" if seconds > 0 else "-"


def stats(reply: Reply) -> str:
    """`--verbose`'s lines after an answer, Ollama's (from the server's measurements), plus the time to the first
    token as this client saw it. An interrupted answer has no measurements from the server: its counts are the
    pieces received and its times this side's clock."""
    rows: list[tuple[str, str]] = []
    metrics = reply.metrics
    if "total_duration" in metrics:
        rows.append(("total duration", duration(metrics["total_duration"] / 1e9)))
        rows.append(("load duration", duration(metrics.get("load_duration", 0) / 1e9)))
    else:
        rows.append(("total duration", duration(reply.elapsed_s)))
    if reply.first_token_s is not None:
        rows.append(("time to first token", duration(reply.first_token_s)))
    if "prompt_eval_count" in metrics:
        prompt_s = metrics.get("prompt_eval_duration", 0) / 1e9
        rows.append(("prompt eval count", f"{metrics['prompt_eval_count']} token(s)"))
        rows.append(("prompt eval duration", duration(prompt_s)))
        rows.append(("prompt eval rate", _rate(metrics["prompt_eval_count"], prompt_s)))
    if "eval_count" in metrics:
        eval_s = metrics.get("eval_duration", 0) / 1e9
        rows.append(("eval count", f"{metrics['eval_count']} token(s)"))
        rows.append(("eval duration", duration(eval_s)))
        rows.append(("eval rate", _rate(metrics["eval_count"], eval_s)))
    else:
        generating = reply.elapsed_s - (reply.first_token_s or 0.0)
        note = " (stopped: counted here)" if reply.interrupted else ""
        rows.append(("eval count", f"{reply.pieces} token(s){note}"))
        rows.append(("eval rate", _rate(max(reply.pieces - 1, 0), generating)))
    return "\n".join(f"{label + ':':<22}{value}" for label, value in rows)
