"""Process-wide logging set-up, done once by the CLI (never at import).

`configure_logging` sends every record to stderr and, for the gateway, to a rotating file under
`<data_dir>/logs/` (`<UTC timestamp>-server.log`, see `logfiles`). Lines are text, or with `log_format: json`
one JSON object per line: `ts`, `level`, `logger`, `message`, every `extra` field the caller passed (the request
logger passes request_id, route, model, status, tokens, latency_ms, ...), and `exception` with the formatted
traceback. Tracebacks go to the log only; clients never see them.

With `workers` above 1 each gateway process logs to its own file, `<UTC timestamp>-server-<n>.log` (n = 1..workers,
kept across restarts of that process), and tags every line with its number: `[gateway n]` in text,
`"gateway_process": n` in JSON, so lines interleaved on a shared stderr still say who wrote them.

With `privacy: strict` (`tracebacks=False`) no traceback reaches any handler: a record that carries one keeps its
message and names the exception's type only (an exception's message or its frames may hold request data).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Literal

import orjson

from somner.observability.logfiles import DEFAULT_KEEP, DEFAULT_MAX_BYTES, RotatingFile

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
TAGGED_FORMAT = "%(asctime)s %(levelname)-7s [gateway %(gateway_process)s] %(name)s: %(message)s"
SERVER_LOG = "server"

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Extra fields never replace the four base keys."""

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        body: dict[str, object] = {
            "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in body and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["exception"] = record.exc_text
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


def formatter_for(log_format: LogFormat, *, tagged: bool = False) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TAGGED_FORMAT if tagged else FORMAT)


class _GatewayProcessTag(logging.Filter):
    """Stamps every record with the number of the gateway process that wrote it (the JSON formatter picks the
    attribute up like any `extra` field)."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.gateway_process = self.number
        return True


class _WithoutTracebacks(logging.Filter):
    """Replaces a record's traceback with the exception's type (`privacy: strict`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text or record.stack_info:
            kind = record.exc_info[0] if record.exc_info and record.exc_info[0] is not None else None
            record.msg = record.getMessage() + (f" ({kind.__name__})" if kind is not None else "")
            record.args = None
            record.exc_info = record.exc_text = record.stack_info = None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (it may be replaced after set-up, as test runners do)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class RotatingFileHandler(logging.Handler):
    """Writes each formatted record, one line, to a `RotatingFile` (logging's lock serialises writers)."""

    def __init__(self, files: RotatingFile) -> None:
        super().__init__()
        self.files = files

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.files.write((self.format(record) + "\n").encode("utf-8", errors="replace"))
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.files.close()
        super().close()


def configure_logging(
    level: str = "info",
    *,
    log_format: LogFormat = "text",
    files: RotatingFile | None = None,
    to_stderr: bool = True,
    gateway_process: int | None = None,
    tracebacks: bool = True,
) -> None:
    """Replace the root logger's handlers: stderr (unless `to_stderr` is false) and `files` when given; with
    `gateway_process`, every line carries that number; without `tracebacks`, none is written (strict privacy).

    Handlers this replaces are closed, so calling it twice leaves no file open.
    """
    formatter = formatter_for(log_format, tagged=gateway_process is not None)
    handlers: list[logging.Handler] = []
    if to_stderr:
        handlers.append(_StderrHandler())
    if files is not None:
        handlers.append(RotatingFileHandler(files))
    for handler in handlers:
        handler.setFormatter(formatter)
        if gateway_process is not None:
            handler.addFilter(_GatewayProcessTag(gateway_process))
        if not tracebacks:
            handler.addFilter(_WithoutTracebacks())
    root = logging.getLogger()
    old, root.handlers[:] = list(root.handlers), handlers
    for handler in old:
        if isinstance(handler, RotatingFileHandler):
            handler.close()
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we debug.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(name).setLevel(quiet)


def configure_server_logging(
    level: str,
    log_dir: Path,
    *,
    log_format: LogFormat = "text",
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep: int = DEFAULT_KEEP,
    to_stderr: bool = True,
    gateway_process: int | None = None,
    tracebacks: bool = True,
) -> RotatingFile:
    """The gateway's logging: stderr plus `<log_dir>/<ts>-server.log` (`-server-<n>.log` for gateway process n of
    several), begun now. Returns the rotating file."""
    kind = SERVER_LOG if gateway_process is None else server_log_kind(gateway_process)
    files = RotatingFile(log_dir, kind, max_bytes=max_bytes, keep=keep)
    files.open()
    configure_logging(
        level,
        log_format=log_format,
        files=files,
        to_stderr=to_stderr,
        gateway_process=gateway_process,
        tracebacks=tracebacks,
    )
    return files


def server_log_kind(gateway_process: int) -> str:
    """The log file kind of gateway process `gateway_process` (see `logfiles`)."""
    return f"{SERVER_LOG}-{gateway_process}"


def close_log_files() -> None:
    """Flush and close the root logger's log files (at exit); stderr logging stays."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, RotatingFileHandler):
            root.removeHandler(handler)
            handler.close()
