"""The running server a command talks to: where it is, which key it gets, and its refusals as one line.

Where: `--url`; else the background server `somner start` recorded in the data directory (`somner.json`, while
its pid runs); else the configured host and port (a `somner serve` in the foreground).

Which key: `--key`; else `SOMNER_API_KEY`; else the configured first admin key (`auth.admin_key`,
`SOMNER_ADMIN_KEY`); else `<data_dir>/admin.key`. The last two are this machine's own secrets, so they are only
sent to a server on this machine (the recorded one, or a loopback address): `--url https://elsewhere` never gets
the local admin key, only a key given for it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
import typer

from somner.cli.common import load_or_exit
from somner.cli.daemon_cmd import ServeOptions, local_url, read_record, running_pid, start_server
from somner.settings import Settings, resolve_data_dir

API_KEY_VARIABLE = "SOMNER_API_KEY"
ADMIN_KEY_FILE = "admin.key"
_PING_TIMEOUT = 2.0
# Generous reads: a first request may wait for its model to load (or for room in the queue) before any byte.
TIMEOUT = httpx.Timeout(10.0, read=600.0)

UrlOption = typer.Option(
    None, "--url", help="Server address (default: the server `somner start` runs, else the configured host and port)."
)
KeyOption = typer.Option(
    None,
    "--key",
    help=f"API key (default: ${API_KEY_VARIABLE}, else the local admin key for a server on this machine).",
    show_default=False,
)
ConfigOption = typer.Option(None, "--config", "-c", help="YAML configuration file.")
DataDirOption = typer.Option(None, "--data-dir", help="Data directory (see `somner serve --help`).")


class ServerError(Exception):
    """The server refused (an HTTP error with its own message) or did not answer; `str()` is the line to show."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Server:
    """A server to talk to: its address, and the key sent with every request (None: send none)."""

    url: str
    key: str | None
    settings: Settings
    data_dir: Path
    recorded: bool = False  # found through `somner start`'s record
    transport: httpx.BaseTransport | None = None  # (tests: a scripted server)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    def client(self, timeout: httpx.Timeout = TIMEOUT) -> httpx.Client:
        """A fresh client per call: an interrupted stream's connection is closed with it, never reused."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, transport=self.transport)

    def request(self, method: str, path: str, json: object = None, params: dict[str, str] | None = None) -> Any:
        """One request; the JSON answer, or ServerError with the server's own message."""
        with self.client() as http:
            try:
                response = http.request(method, path, json=json, params=params)
            except httpx.HTTPError as exc:
                raise ServerError(unreachable(self.url, exc)) from None
        if response.status_code >= 400:
            raise ServerError(refusal(response), response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{self.url}{path} answered something that is not JSON") from None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_url(settings: Settings) -> str:
    return local_url(settings.host, settings.port)


def recorded_url(data_dir: Path) -> str | None:
    """The address of the background server running on `data_dir`, if one runs."""
    pid = running_pid(data_dir)
    record = read_record(data_dir) if pid is not None else None
    return record.url if record is not None and record.pid == pid else None


def resolve_key(
    given: str | None, settings: Settings, data_dir: Path, *, local: bool, environ: Mapping[str, str] | None = None
) -> str | None:
    """The key to send (see the module's note for the order); None when there is none."""
    env = os.environ if environ is None else environ
    for candidate in (given, env.get(API_KEY_VARIABLE)):
        if candidate and candidate.strip():
            return candidate.strip()
    if not local:
        return None
    configured = settings.auth.admin_key.get_secret_value() if settings.auth.admin_key else env.get("SOMNER_ADMIN_KEY")
    if configured and configured.strip():
        return configured.strip()
    try:
        return (data_dir / ADMIN_KEY_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None  # no file, or not ours to read: try without a key (a server with auth off needs none)


def locate(config: Path | None, data_dir: Path | None, url: str | None) -> tuple[Settings, Path, str | None, bool]:
    """Settings, data directory, the server's address (None: nothing recorded and the configured address does not
    answer) and whether that address came from `somner start`'s record."""
    settings = load_or_exit(config, {"data_dir": data_dir})
    directory = resolve_data_dir(settings)
    if url:
        return settings, directory, url.rstrip("/"), False
    recorded = recorded_url(directory)
    if recorded is not None:
        return settings, directory, recorded, True
    configured = configured_url(settings)
    return settings, directory, configured if answers(configured) else None, False


def answers(url: str) -> bool:
    """Whether a server answers at `url` (`/ping` needs no key)."""
    try:
        return httpx.get(f"{url}/ping", timeout=_PING_TIMEOUT).status_code < 500
    except httpx.HTTPError:
        return False


def connect(
    config: Path | None, data_dir: Path | None, url: str | None, key: str | None, *, serve: bool = False
) -> Server:
    """The server to talk to; with `serve`, a background server is started when none runs. Exits with one line
    when there is none."""
    settings, directory, found, recorded = locate(config, data_dir, url)
    if found is None and serve:
        options = ServeOptions(config=str(config.absolute()) if config else None, data_dir=str(directory.absolute()))
        found, recorded = start_server(options, 120.0, announce_on_stderr=True).url, True
    if found is None:
        fail(
            f"no Somner server is running (data directory {directory}, address {configured_url(settings)}): start "
            "one with `somner start` (or pass --serve), or name one with --url"
        )
    return server_at(found, key, settings, directory, recorded=recorded)


def server_at(url: str, key: str | None, settings: Settings, data_dir: Path, *, recorded: bool = False) -> Server:
    """The server at `url`, with the key it gets (the local admin key only for a server on this machine)."""
    local = recorded or is_loopback_url(url)
    return Server(url, resolve_key(key, settings, data_dir, local=local), settings, data_dir, recorded)


def unreachable(url: str, exc: BaseException) -> str:
    return f"cannot reach Somner at {url} ({exc.__class__.__name__}); is it running? (`somner start` runs one)"


def refusal(response: httpx.Response) -> str:
    """A refused request as one line: the server's message (every dialect's error shape), with the status."""
    try:
        response.read()
        body: Any = response.json()
    except (ValueError, httpx.HTTPError):
        body = None
    text = error_text(body)
    if text is None:
        lines = response.text.strip().splitlines()
        text = lines[0] if lines else response.reason_phrase
    hint = ""
    try:
        path = response.request.url.path
    except RuntimeError:  # (a response built without its request)
        path = ""
    if response.status_code == 404 and path.startswith("/api/") and text.startswith("No such endpoint"):
        hint = " (this server does not serve Ollama's API, which run and show use: add `ollama` to its api_servers)"
    elif response.status_code == 401:
        hint = f" (pass --key or set {API_KEY_VARIABLE})"
    elif response.status_code == 403:
        hint = " (the key lacks the right: an admin key may be needed)"
    return f"{text}{hint} [HTTP {response.status_code}]"


def error_text(body: object) -> str | None:
    """The message in an error body: Ollama's `{"error": "..."}`, OpenAI's and Anthropic's `{"error": {"message":
    ...}}`, TabbyAPI's `{"detail": ...}`."""
    if not isinstance(body, dict):
        return None
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        error = error.get("message")
    return " ".join(error.split()) if isinstance(error, str) and error.strip() else None


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one line on stderr."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
