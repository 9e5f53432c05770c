"""Network hardening in the app: the Host check against DNS rebinding, encoded bodies and their decoded size,
slow bodies, and no way for a request to make the server connect somewhere (SSRF)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from somner.api.dialects import dialect_of
from tests.api.conftest import running
from tests.api.shapes import assert_dialect_error, assert_path_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

# One generation route per dialect, with a small valid body.
GENERATION: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}),
    "anthropic": (
        "/v1/messages",
        {"model": "alpha", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "ollama": ("/api/chat", {"model": "alpha", "stream": False, "messages": [{"role": "user", "content": "hi"}]}),
    "kobold": ("/api/v1/generate", {"model": "alpha", "prompt": "hi", "max_length": 4}),
    "tabby": ("/v1/token/encode", {"model": "alpha", "text": "hi"}),
}


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST:8000", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("somner.lan", True),  # configured in auth.allowed_hosts
        ("evil.example", False),
        ("evil.example:8000", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("somner.lan.evil.example", False),
        ("[::2]:8000", False),
        ("[::1]evil.example", False),
        ("[::1]:8000.evil.example", False),
        ("localhost:8000:evil.example", False),
        ("localhost:port", False),
        ("localhost@evil.example", False),
        ("", False),
    ],
)
async def test_host_check_against_dns_rebinding_on_loopback(
    tmp_path: Path, farm: FakeFarm, host: str, allowed: bool
) -> None:
    async with running(tmp_path, farm, auth={"allowed_hosts": ["somner.lan"]}) as (_, client):
        for path in ("/v1/models", "/api/tags", "/v1/messages", "/api/v1/model", "/v1/model/list", "/health"):
            reply = await client.get(path, headers={"host": host})
            if allowed:
                assert reply.status_code != 403, (path, reply.text)
            else:
                assert_path_error(reply, 403)


async def test_no_host_check_when_listening_beyond_loopback(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, host="0.0.0.0") as (_, client):
        assert (await client.get("/v1/models", headers={"host": "llm.example.com"})).status_code == 200


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw"])
@pytest.mark.parametrize("dialect", sorted(GENERATION))
async def test_gzip_and_deflate_bodies_are_decoded(tmp_path: Path, farm: FakeFarm, dialect: str, coding: str) -> None:
    path, body = GENERATION[dialect]
    raw = orjson.dumps(body)
    async with running(tmp_path, farm) as (_, client):
        reply = await client.post(path, content=_encode(raw, coding), headers=_coding_header(coding))
        assert reply.status_code == 200, reply.text


def _encode(raw: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(raw)
    if coding == "deflate":
        return zlib.compress(raw)
    squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return squeezer.compress(raw) + squeezer.flush()


def _coding_header(coding: str) -> dict[str, str]:
    return {"content-type": "application/json", "content-encoding": coding.removesuffix("-raw")}


@pytest.mark.parametrize("dialect", sorted(GENERATION))
async def test_decompression_bomb_is_refused_with_413(tmp_path: Path, farm: FakeFarm, dialect: str) -> None:
    """64 KiB is the body limit here (tests/api/conftest.py): 100 MiB of zeros compresses to ~100 KiB of gzip,
    so the bomb is made from a 1 MiB one (about 1 KiB on the wire)."""
    path, _ = GENERATION[dialect]
    bomb = gzip.compress(b"0" * (1024 * 1024))
    assert len(bomb) < 64 * 1024
    async with running(tmp_path, farm) as (_, client):
        reply = await client.post(path, content=bomb, headers=_coding_header("gzip"))
        assert_dialect_error(reply, dialect, 413)
        # Both layers of a double encoding are held to the limit.
        double = gzip.compress(bomb)
        reply = await client.post(path, content=double, headers={"content-encoding": "gzip, gzip"})
        assert_dialect_error(reply, dialect, 413)
        path_ok, body = GENERATION[dialect]
        assert (await client.post(path_ok, json=body)).status_code == 200  # and the server keeps serving


@pytest.mark.parametrize("dialect", sorted(GENERATION))
async def test_bad_encodings_are_4xx_in_the_dialects_shape(tmp_path: Path, farm: FakeFarm, dialect: str) -> None:
    path, body = GENERATION[dialect]
    raw = orjson.dumps(body)
    async with running(tmp_path, farm) as (_, client):
        for coding in ("br", "zstd", "compress", "x-unknown"):
            reply = await client.post(path, content=raw, headers={"content-encoding": coding})
            assert_dialect_error(reply, dialect, 415)
        not_gzip = await client.post(path, content=raw, headers={"content-encoding": "gzip"})
        assert_dialect_error(not_gzip, dialect, 400)
        cut = await client.post(path, content=gzip.compress(raw)[:-12], headers={"content-encoding": "gzip"})
        assert_dialect_error(cut, dialect, 400)
        identity = await client.post(path, content=raw, headers={"content-encoding": "identity"})
        assert identity.status_code == 200


@pytest.mark.parametrize("dialect", sorted(GENERATION))
async def test_a_body_sent_too_slowly_gets_408(tmp_path: Path, farm: FakeFarm, dialect: str) -> None:
    path, body = GENERATION[dialect]
    raw = orjson.dumps(body)

    async def trickle() -> AsyncIterator[bytes]:
        for byte in raw:
            yield bytes([byte])
            await asyncio.sleep(0.05)

    async with running(tmp_path, farm, limits={"body_timeout": 0.2}) as (_, client):
        reply = await client.post(path, content=trickle(), headers={"content-type": "application/json"})
        assert_dialect_error(reply, dialect, 408)
        assert (await client.post(path, json=body)).status_code == 200
    assert dialect_of(path) == dialect


# -- SSRF: nothing a request says makes the server open a connection --


@pytest.fixture
def canary() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket standing in for an internal service; a connection to it would be SSRF."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", listener
    finally:
        listener.close()


def _connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def test_requests_cannot_name_an_upstream_or_make_the_server_fetch(
    tmp_path: Path, farm: FakeFarm, canary: tuple[str, socket.socket]
) -> None:
    url, listener = canary
    redirect = {"base_url": url, "api_base": url, "upstream": url, "url": url, "endpoint": url, "host": url}
    image = {"type": "image_url", "image_url": {"url": f"{url}/cat.png"}}
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {**GENERATION["openai"][1], **redirect}),
        ("/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": [image]}]}),
        ("/v1/completions", {"model": "alpha", "prompt": "hi", **redirect}),
        ("/v1/embeddings", {"model": "alpha", "input": "hi", **redirect}),
        (
            "/v1/responses",
            {
                "model": "alpha",
                "input": [{"role": "user", "content": [{"type": "input_image", "image_url": f"{url}/cat.png"}]}],
                **redirect,
            },
        ),
        ("/v1/messages", {**GENERATION["anthropic"][1], **redirect}),
        (
            "/v1/messages",
            {
                "model": "alpha",
                "max_tokens": 4,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": f"{url}/cat.png"}}]}
                ],
            },
        ),
        ("/api/chat", {**GENERATION["ollama"][1], **redirect}),
        ("/api/generate", {"model": "alpha", "prompt": "hi", "stream": False, **redirect}),
        ("/api/v1/generate", {**GENERATION["kobold"][1], **redirect}),
        ("/v1/model/load", {"model_name": url, **redirect}),
        ("/v1/model/load", {"model_name": "alpha", **redirect}),
    ]
    async with running(tmp_path, farm) as (_, admin):
        for path, body in bodies:
            reply = await admin.post(path, json=body)
            assert reply.status_code < 500, (path, reply.text)
        # Pulling from a URL is an admin's act (Ollama's /api/pull); an inference key cannot.
        key = (await admin.post("/admin/keys", json={"user": "inference"})).json()["key"]
        pulled = await admin.post(
            "/api/pull", json={"model": f"{url}/x.gguf", "stream": False}, headers={"authorization": f"Bearer {key}"}
        )
        assert_path_error(pulled, 403)
        await asyncio.sleep(0.05)
    assert _connections(listener) == 0
    assert all(backend.spec.id in ("alpha", "beta") for backend in farm.backends)  # (the configured ones only)


# The one module of the request path that may connect out: image URLs, only to hosts in `limits.image_hosts` (an
# admin's list, empty by default), without following redirects. Anything new here needs the same kind of reason.
_OUTBOUND_ALLOWED = {"gateway/images.py"}


def test_only_configured_code_opens_connections() -> None:
    """The request path (api, wire, core, gateway) holds no network client but the allowed ones: an outgoing
    connection can only come from a backend built from the configuration (models/backends), an admin's pull
    (models/pull), or an image on a host an admin allowed."""
    root = Path(__file__).parents[2] / "src" / "somner"
    clients = ("import httpx", "from httpx", "urllib.request", "http.client", "open_connection", "create_connection")
    offenders = {
        str(path.relative_to(root))
        for package in ("api", "wire", "core", "gateway")
        for path in (root / package).rglob("*.py")
        if any(client in path.read_text(encoding="utf-8") for client in clients)
    }
    assert offenders <= _OUTBOUND_ALLOWED


async def test_image_urls_are_fetched_only_from_allowed_hosts(
    tmp_path: Path, farm: FakeFarm, canary: tuple[str, socket.socket]
) -> None:
    url, listener = canary
    port = url.rsplit(":", 1)[1]
    urls = [
        f"{url}/cat.png",
        f"http://localhost:{port}/cat.png",
        f"http://[::1]:{port}/cat.png",
        f"http://images.example@127.0.0.1:{port}/cat.png",  # (the host is what follows the @)
        f"http://127.0.0.1:{port}#@images.example/cat.png",
        "file:///etc/passwd",
    ]
    async with running(tmp_path, farm, limits={"image_hosts": ["images.example", "*.cdn.example"]}) as (_, client):
        for image_url in urls:
            content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "hi"}]
            body = {"model": "alpha", "messages": [{"role": "user", "content": content}]}
            reply = await client.post("/v1/chat/completions", json=body)
            assert_path_error(reply, 400)
            refused = "invalid_value" if image_url.startswith("file:") else "image_url_not_allowed"
            assert reply.json()["error"]["code"] == refused, reply.text
    assert _connections(listener) == 0
