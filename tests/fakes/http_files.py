"""A real HTTP server on loopback that serves files the way model hosts do (ranges, a Hugging Face-like listing),
and can misbehave on request: drop the connection part-way, or announce more bytes than it sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)  # path -> content
    listings: dict[str, list[str]] = field(default_factory=dict)  # "org/repo" -> file names
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> close the connection after N bytes, once
    lie_length: dict[str, int] = field(default_factory=dict)  # path -> Content-Length to announce
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (path, range, auth)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            state.requests.append((path, self.headers.get("range"), self.headers.get("authorization")))
            if path.startswith("/api/models/"):
                repo = path.removeprefix("/api/models/")
                if repo not in state.listings:
                    self._send(404, b"{}")
                    return
                body = json.dumps({"siblings": [{"rfilename": f} for f in state.listings[repo]]}).encode()
                self._send(200, body, "application/json")
                return
            if "/resolve/main/" in path:
                repo, _, name = path.lstrip("/").partition("/resolve/main/")
                path = f"/{repo}/{name}"
            content = state.files.get(path)
            if content is None:
                self._send(404, b"not found")
                return
            start = 0
            status = 200
            requested = self.headers.get("range")
            if requested and requested.startswith("bytes="):
                start = int(requested.removeprefix("bytes=").split("-")[0])
                if start >= len(content):
                    self._send(416, b"")
                    return
                status = 206
            chunk = content[start:]
            self.send_response(status)
            self.send_header("content-length", str(state.lie_length.get(path, len(chunk))))
            if status == 206:
                self.send_header("content-range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.end_headers()
            limit = state.drop_after.pop(path, None)
            if limit is not None:
                self.wfile.write(chunk[:limit])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(chunk)
            if path in state.lie_length:
                self.close_connection = True

        def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(state: FileServer) -> Iterator[FileServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
