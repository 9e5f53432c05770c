"""Vision: the default model with a tiny random-weight projector (`mmproj`) built in the test reads images, in the
engine and through every dialect; limits, bad images and images sent to a text-only model are 400s that say why."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from somner.core import IMAGE_MARKER, ChatRequest, Image, Message, SamplingParams
from somner.errors import BadRequest
from somner.settings import Settings
from tests.conftest import link_model
from tests.fakes.mmproj_files import IMAGE_TOKENS, make_mmproj, png
from tests.inprocess import NO_AUTH, ThreadedGateway
from tests.integration.conftest import EngineHarness, text_of

pytestmark = pytest.mark.integration

TEXT_MODEL = "gemma-3-270m-q4_k_m"
VISION_MODEL = "gemma-vision"
QUESTION = "What is in this picture?"
RED, BLUE = png(60, 40, seed=1), png(60, 40, seed=2)
FRAMING = 2  # <start_of_image> and <end_of_image> around an image's tokens (Gemma 3)


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mmproj(tmp_path_factory.mktemp("projector") / "mmproj.gguf")


# -- the engine ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(model_path: Path, projector: Path) -> Iterator[EngineHarness]:
    harness = EngineHarness(model_path, ctx=1024, parallel=2, threads=2, batch=256, mmproj=projector)
    yield harness
    harness.close()


def ask(harness: EngineHarness, image: bytes | None) -> tuple[int, str]:
    content = f"{IMAGE_MARKER}{QUESTION}" if image is not None else QUESTION
    images = [Image(data=image)] if image is not None else []
    sampling = SamplingParams(max_tokens=10, temperature=0.0)
    request = ChatRequest(model="g", messages=[Message(role="user", content=content, images=images)], sampling=sampling)
    job = harness.submit(harness.engine.chat_jobs(request)[0])
    chunks = harness.chunks(job)
    usage = chunks[-1].usage
    assert usage is not None
    return usage.prompt_tokens, text_of(chunks)


def test_an_image_takes_its_tokens_and_changes_the_output_deterministically(engine: EngineHarness) -> None:
    text_only, plain = ask(engine, None)
    with_red, red = ask(engine, RED)
    assert with_red == text_only + IMAGE_TOKENS + FRAMING
    assert ask(engine, RED) == (with_red, red)
    with_blue, blue = ask(engine, BLUE)
    assert with_blue == with_red and blue != red  # (the same length: only the picture differs)
    assert red != plain


def test_the_prefix_cache_keeps_prompts_that_differ_only_in_their_image_apart(engine: EngineHarness) -> None:
    """Each answer is the same whichever image the engine saw before (its cache holds the other's prompt)."""
    fresh = {name: ask(engine, image)[1] for name, image in (("red", RED), ("blue", BLUE))}
    for name, image in (("blue", BLUE), ("red", RED), ("red", RED), ("blue", BLUE)):
        assert ask(engine, image)[1] == fresh[name]


def test_the_choices_of_one_request_share_its_image(engine: EngineHarness) -> None:
    """With `n`, the first choice prefills the prompt, image included, and the others copy its cache."""
    alone = ask(engine, RED)[1]
    message = Message(role="user", content=f"{IMAGE_MARKER}{QUESTION}", images=[Image(data=RED)])
    request = ChatRequest(model="g", messages=[message], sampling=SamplingParams(max_tokens=10, temperature=0.0), n=2)
    jobs = [engine.submit(job) for job in engine.engine.chat_jobs(request)]
    assert [text_of(engine.chunks(job)) for job in jobs] == [alone, alone]


def test_bad_images_are_refused_before_anything_runs(engine: EngineHarness) -> None:
    def job(image: bytes, content: str = f"{IMAGE_MARKER}hi") -> None:
        message = Message(role="user", content=content, images=[Image(data=image)])
        engine.engine.chat_jobs(ChatRequest(model="g", messages=[message]))

    with pytest.raises(BadRequest, match="could not be read"):
        job(b"definitely not an image")
    with pytest.raises(BadRequest, match="could not be read"):
        job(RED[:60])  # (a PNG header, cut short)
    with pytest.raises(BadRequest, match="image places"):
        job(RED, content="no marker")


def test_a_text_only_engine_refuses_images(model_path: Path) -> None:
    harness = EngineHarness(model_path, ctx=512, parallel=1, threads=2, batch=128)
    try:
        message = Message(role="user", content=f"{IMAGE_MARKER}hi", images=[Image(data=RED)])
        with pytest.raises(BadRequest, match="reads text only"):
            harness.engine.chat_jobs(ChatRequest(model="g", messages=[message]))
    finally:
        harness.close()


# -- the dialects ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_path: Path, projector: Path) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("vision-data")
    served = link_model(model_path, data / "models")
    settings = Settings(
        data_dir=data,
        engine={"parallel": 2, "threads": 2, "ctx": 1024},  # type: ignore[arg-type]
        auth=NO_AUTH,  # type: ignore[arg-type]
        limits={  # type: ignore[arg-type]
            "max_images": 2,
            "max_image_bytes": 64 * 1024,
            "max_image_pixels": 500 * 500,
            "image_hosts": ["127.0.0.1"],
        },
        models=[{"id": VISION_MODEL, "path": str(served), "mmproj": str(projector)}],  # type: ignore[list-item]
    )
    with ThreadedGateway(settings) as gateway, httpx.Client(base_url=gateway.url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A local web server with one image, `/red.png` (127.0.0.1 is an allowed image host of `client`)."""

    class Images(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/red.png"
            self.send_response(200 if found else 404)
            self.send_header("content-type", "image/png")
            self.end_headers()
            self.wfile.write(RED if found else b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_images_are_fetched_from_allowed_hosts_only(client: httpx.Client, image_server: str) -> None:
    def by_url(url: str) -> httpx.Response:
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
        body = {"model": VISION_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
        return client.post("/v1/chat/completions", json={**body, "temperature": 0})

    expected = answer_of(openai_chat(client, RED))
    fetched = by_url(f"{image_server}/red.png")
    assert fetched.status_code == 200, fetched.text
    assert answer_of(fetched) == expected
    missing = by_url(f"{image_server}/none.png")
    assert missing.status_code == 400 and "answered 404" in error_text(missing)
    other = by_url(image_server.replace("127.0.0.1", "localhost") + "/red.png")
    assert other.status_code == 400 and "localhost, which this server does not fetch" in error_text(other)


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def openai_chat(
    client: httpx.Client, *images: bytes, model: str = VISION_MODEL, text: str = QUESTION
) -> httpx.Response:
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(image)}"}} for image in images
    ]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
        "max_tokens": 8,
        "temperature": 0,
    }
    return client.post("/v1/chat/completions", json=body)


def ollama_chat(client: httpx.Client, *images: bytes, model: str = VISION_MODEL) -> httpx.Response:
    message = {"role": "user", "content": QUESTION, "images": [b64(image) for image in images]}
    body = {
        "model": model,
        "messages": [message],
        "stream": False,
        "options": {"num_predict": 8, "temperature": 0, "repeat_penalty": 1.0},
    }
    return client.post("/api/chat", json=body)


def anthropic_messages(client: httpx.Client, *images: bytes, model: str = VISION_MODEL) -> httpx.Response:
    blocks: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(image)}}
        for image in images
    ]
    content = [*blocks, {"type": "text", "text": QUESTION}]
    body = {"model": model, "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": content}]}
    return client.post("/v1/messages", json=body)


def responses(client: httpx.Client, *images: bytes, model: str = VISION_MODEL) -> httpx.Response:
    parts: list[dict[str, Any]] = [
        {"type": "input_image", "image_url": f"data:image/png;base64,{b64(image)}"} for image in images
    ]
    content = [*parts, {"type": "input_text", "text": QUESTION}]
    body = {"model": model, "max_output_tokens": 8, "temperature": 0, "input": [{"role": "user", "content": content}]}
    return client.post("/v1/responses", json=body)


def answer_of(response: httpx.Response) -> str:
    body = response.json()
    if "choices" in body:
        return str(body["choices"][0]["message"]["content"])
    if "message" in body:
        return str(body["message"]["content"])
    if "content" in body:
        return "".join(block["text"] for block in body["content"] if block["type"] == "text")
    return "".join(part["text"] for item in body["output"] for part in item.get("content", []))


def test_every_dialect_reads_the_same_image_the_same_way(client: httpx.Client) -> None:
    red = openai_chat(client, RED)
    assert red.status_code == 200, red.text
    text_only = openai_chat(client).json()["usage"]["prompt_tokens"]
    assert red.json()["usage"]["prompt_tokens"] == text_only + IMAGE_TOKENS + FRAMING
    blue = openai_chat(client, BLUE)
    assert answer_of(blue) != answer_of(red)
    for call in (ollama_chat, anthropic_messages, responses):
        # (each right after the same OpenAI request, so both find the prompt before the image cached: llama.cpp
        # rounds by batch shape, and a near-tie could otherwise break another way)
        expected = answer_of(openai_chat(client, RED))
        response = call(client, RED)
        assert response.status_code == 200, f"{call.__name__}: {response.text}"
        assert answer_of(response) == expected, call.__name__


def test_the_vision_model_lists_vision(client: httpx.Client) -> None:
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert "vision" in cards[VISION_MODEL]["capabilities"]
    assert "vision" not in cards[TEXT_MODEL]["capabilities"]
    assert "vision" in client.post("/api/show", json={"model": VISION_MODEL}).json()["capabilities"]
    assert "vision" in client.get("/v1/model", params={"model": VISION_MODEL}).json()["capabilities"]


def error_text(response: httpx.Response) -> str:
    error = response.json()["error"]
    return error if isinstance(error, str) else str(error["message"])


@pytest.mark.parametrize("call", [openai_chat, ollama_chat, anthropic_messages, responses])
def test_images_to_a_text_only_model_are_400s_in_each_dialects_shape(client: httpx.Client, call: Any) -> None:
    response = call(client, RED, model=TEXT_MODEL)
    assert response.status_code == 400, response.text
    assert "reads text only" in error_text(response)


LARGE = png(200, 200, seed=3)  # (over 64 KiB of random pixels)
HUGE = png(600, 600, seed=None)  # (a few KiB, 360000 pixels)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ((RED, BLUE, RED), "at most 2 are allowed"),
        ((LARGE,), "bytes; at most 65536"),
        ((HUGE,), "600x600 pixels; at most 250000"),
        ((b"GIF89a\x01",), "not a PNG, JPEG, GIF or BMP"),  # (too short for its size)
        ((b"GIF89a width height",), "pixels; at most 250000"),  # (a header is read as written)
        ((b"plain text",), "not a PNG, JPEG, GIF or BMP"),
        ((RED[:60],), "could not be read"),
    ],
)
@pytest.mark.parametrize("call", [openai_chat, ollama_chat, anthropic_messages, responses])
def test_bad_images_are_400s_that_name_the_problem(
    client: httpx.Client, call: Any, images: tuple[bytes, ...], message: str
) -> None:
    response = call(client, *images)
    assert response.status_code == 400, response.text
    assert message in error_text(response)


def test_image_transport_problems_are_400s(client: httpx.Client) -> None:
    def part(url: str) -> dict[str, Any]:
        return {
            "model": VISION_MODEL,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
        }

    refused = client.post("/v1/chat/completions", json=part("http://169.254.169.254/latest/meta-data"))
    assert refused.status_code == 400 and "169.254.169.254, which this server does not fetch" in error_text(refused)
    assert client.post("/v1/chat/completions", json=part("data:image/png;base64,%%%")).status_code == 400
    assert client.post("/v1/chat/completions", json=part("ftp://example.com/x.png")).status_code == 400
    bad = {"model": VISION_MODEL, "messages": [{"role": "user", "content": "hi", "images": ["***"]}], "stream": False}
    assert client.post("/api/chat", json=bad).status_code == 400
    marker = openai_chat(client, RED, text=f"look {IMAGE_MARKER} here")
    assert marker.status_code == 400 and IMAGE_MARKER in error_text(marker)
    assert openai_chat(client, RED).status_code == 200  # (and the server still serves)
