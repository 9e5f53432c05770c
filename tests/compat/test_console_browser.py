"""The web console in a real browser (Playwright driving Debian's chromium, headless) against `somner serve` on
the default model: sign in, stream an answer, load and unload a model, create / rotate / revoke a key and use
it, edit a key's limits, watch the usage chart and the live log move, a user key refused the admin pages. Every
request the browser makes is recorded: none may go to another host, and no page may break its
Content-Security-Policy.

The steps share one browser page and run in order (each builds on the one before, as a person would click
through). Screenshots of each page go to docs/console-*.png (the README shows them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from somner.console.routes import CSP
from tests.servers import ADMIN_KEY, ServeProcess

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
MODEL = "gemma-3-270m-q4_k_m"
WAIT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip(
        f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )
pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright (pip install playwright)")

from playwright.sync_api import BrowserContext, Page, Response, expect, sync_playwright  # noqa: E402


@dataclass
class Browser:
    page: Page
    context: BrowserContext
    server: ServeProcess
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # page errors and CSP violations

    def go(self, path: str) -> Response:
        response = self.page.goto(f"{self.server.url}{path}")
        assert response is not None and response.ok, path
        return response

    def shot(self, name: str, *, full_page: bool = True) -> None:
        DOCS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=full_page)

    def error_text(self) -> str:
        box = self.page.locator("#error")
        box.wait_for(state="visible", timeout=WAIT_MS)
        return str(box.inner_text())


@pytest.fixture(scope="module")
def browser(serve: ServeProcess) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        context = chromium.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        state = Browser(page=page, context=context, server=serve)
        context.on("request", lambda request: state.requests.append(request.url))
        context.on("weberror", lambda error: state.problems.append(f"page error: {error.error}"))
        context.on(
            "console",
            lambda message: state.problems.append(message.text) if "Content Security Policy" in message.text else None,
        )
        try:
            yield state
        finally:
            context.close()
            chromium.close()


def api(serve: ServeProcess, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers={"authorization": f"Bearer {key}"}, timeout=60)


def until(condition: Callable[[], bool], timeout: float = WAIT_MS / 1000) -> None:
    """Poll from the test (the pages' CSP forbids the eval that Playwright's wait_for_function needs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def sign_in(browser: Browser, key: str) -> None:
    browser.go("/ui/")
    browser.page.fill("#api-key", key)
    browser.page.click("#signin-button")


def test_a_bad_key_is_refused_with_the_apis_message(browser: Browser) -> None:
    response = browser.go("/ui/")
    headers = response.headers
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in CSP
    browser.page.fill("#api-key", "sk-somner-not-a-key")
    browser.shot("signin")
    browser.page.click("#signin-button")
    assert "key" in browser.error_text().lower()
    assert browser.page.url.endswith("/ui/")
    assert browser.page.evaluate("sessionStorage.getItem('somner.apiKey')") is None


def test_sign_in_with_an_admin_key(browser: Browser) -> None:
    sign_in(browser, ADMIN_KEY)
    browser.page.wait_for_url("**/ui/models")
    assert browser.page.locator("#who").inner_text() == "admin key"
    assert browser.context.cookies() == []  # the key lives in the tab's session storage, never in a cookie


def test_load_and_unload_a_model(browser: Browser) -> None:
    browser.go("/ui/models")
    row = browser.page.locator(f'tr[data-model="{MODEL}"]')
    row.locator(".unload").click()
    row.locator('[data-state="unloaded"]').wait_for()
    row.locator(".load").click()
    row.locator('[data-state="loaded"]').wait_for()
    with api(browser.server) as http:
        state = {m["id"]: m["state"] for m in http.get("/admin/models").json()["data"]}
    assert state[MODEL] == "loaded"
    row.locator(".keep").click()  # keep alive: "30m" by default
    expect(row).to_contain_text("in 30 min", timeout=WAIT_MS)


def test_a_bad_pull_shows_the_apis_error(browser: Browser) -> None:
    browser.page.fill("#pull-name", "not a model name at all")
    browser.page.click("#pull-button")
    assert browser.error_text()
    assert browser.page.locator("#pull-status").inner_text() == "the pull failed"


def test_stream_an_answer_in_the_playground(browser: Browser) -> None:
    browser.go("/ui/playground")
    page = browser.page
    page.locator(f'#model option[value="{MODEL}"]').wait_for(state="attached")
    page.fill("#system", "You are brief.")
    page.fill("#max_tokens", "24")
    page.fill("#seed", "7")
    page.fill("#temperature", "0.7")
    page.fill("#prompt", "The capital of France is")
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as answer:
        page.click("#send")
    assert answer.value.headers["content-type"].startswith("text/event-stream")
    done = page.locator('.message.assistant[data-done="true"]')
    done.wait_for()
    assert done.locator(".content").inner_text().strip()
    stats = done.locator(".stats").inner_text()
    assert "TTFT" in stats and "tokens/s" in stats and "completion tokens" in stats, stats
    page.click("#copy-curl")
    snippet = page.locator("#snippet").inner_text()
    assert "/v1/chat/completions" in snippet and '"seed": 7' in snippet and "$SOMNER_API_KEY" in snippet
    assert ADMIN_KEY not in snippet
    browser.shot("playground")


def test_bad_sampler_input_shows_the_apis_error(browser: Browser) -> None:
    page = browser.page
    page.fill("#temperature", "-3")
    page.fill("#prompt", "Hello")
    page.click("#send")
    assert "temperature" in browser.error_text()
    assert page.locator("#send").is_enabled()  # the page goes on working
    page.fill("#temperature", "")


def test_create_rotate_and_revoke_a_key(browser: Browser) -> None:
    page = browser.page
    browser.go("/ui/keys")
    # A bad value first: the API's own message, in the page.
    page.fill("#key-user", "console-user")
    page.fill("#key-expires", "yesterday")
    page.click("#key-create")
    assert "expires" in browser.error_text()
    page.fill("#key-expires", "30d")
    page.fill("#key-rpm", "100")
    page.click("#key-create")
    page.locator("#secret").wait_for(state="visible")
    secret = page.locator("#secret-value").inner_text()
    key_id = page.locator("#secret").get_attribute("data-key-id")
    assert secret.startswith("sk-") and key_id
    page.locator(f'tr[data-key="{key_id}"]').wait_for()
    browser.shot("keys")
    with openai.OpenAI(base_url=f"{browser.server.url}/v1", api_key=secret, max_retries=0) as client:
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert reply.usage is not None and reply.usage.completion_tokens > 0

    page.locator(f'tr[data-key="{key_id}"] .rotate').click()
    expect(page.locator("#secret-value")).not_to_have_text(secret, timeout=WAIT_MS)
    rotated = page.locator("#secret-value").inner_text()
    key_id = page.locator("#secret").get_attribute("data-key-id")  # (a rotation makes a new key)
    with api(browser.server, secret) as old, api(browser.server, rotated) as new:
        assert old.get("/v1/models").status_code == 401
        assert new.get("/v1/models").status_code == 200

    page.locator(f'tr[data-key="{key_id}"] .revoke').click()
    page.locator(f'tr[data-key="{key_id}"]').wait_for(state="detached")
    page.check("#show-revoked")
    page.locator(f'tr[data-key="{key_id}"][data-state="revoked"]').wait_for()
    with api(browser.server, rotated) as new:
        assert new.get("/v1/models").status_code == 401


def test_edit_a_keys_limits(browser: Browser) -> None:
    with api(browser.server) as http:
        created = http.post("/admin/keys", json={"user": "console-limits", "rpm": 100, "tpm": 5000}).json()
    page = browser.page
    browser.go("/ui/keys")
    row = page.locator(f'tr[data-key="{created["id"]}"]')
    row.locator(".edit").click()
    expect(page.locator("#edit-rpm")).to_have_value("100", timeout=WAIT_MS)
    page.fill("#edit-tpm", str(10**12))  # more than the key store holds: the API's message, in the page
    page.click("#edit-save")
    assert "tpm" in browser.error_text()
    page.fill("#edit-tpm", "")  # empty: no limit
    page.fill("#edit-rpm", "1")
    page.click("#edit-save")
    expect(row).to_contain_text("1 rpm", timeout=WAIT_MS)
    assert page.locator("#edit-card").is_hidden() and page.locator("#error").is_hidden()
    assert "tpm" not in row.inner_text()
    with api(browser.server, created["key"]) as http:  # the same secret, the new limit
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        refused = http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 429 and refused.headers["x-ratelimit-limit-requests"] == "1"


def test_the_usage_chart_moves_after_a_request(browser: Browser) -> None:
    page = browser.page
    browser.go("/ui/usage")
    chart = page.locator("#chart")
    chart.locator("svg polyline").first.wait_for()
    before = int(chart.get_attribute("data-total") or "0")
    with api(browser.server) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=body).status_code == 200
    page.click("#refresh")
    until(lambda: int(chart.get_attribute("data-total") or "0") > before)
    page.select_option("#by", "model")
    page.locator(f'#chart polyline[data-name="{MODEL}"]').wait_for()
    page.locator("#top-keys tbody tr td.mono").first.wait_for()
    with page.expect_download() as download:
        page.click("#export-csv")
    saved = download.value.path()
    assert download.value.suggested_filename.endswith(".csv")
    assert Path(saved).read_text(encoding="utf-8").startswith("bucket,model,requests")
    browser.shot("usage")
    browser.go("/ui/models")  # (now with the recent latency of the requests above)
    browser.page.locator(f'tr[data-model="{MODEL}"] [data-state="loaded"]').wait_for()
    expect(browser.page.locator(f'tr[data-model="{MODEL}"]')).to_contain_text("TTFT", timeout=WAIT_MS)
    browser.shot("models")


def test_a_request_appears_in_the_live_log(browser: Browser) -> None:
    page = browser.page
    browser.go("/ui/logs")
    expect(page.locator("#tail-state")).to_have_text("live", timeout=WAIT_MS)
    request_id = f"console-live-{time.time_ns()}"
    with api(browser.server) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "a private prompt"}], "max_tokens": 2}
        reply = http.post("/v1/chat/completions", json=body, headers={"x-request-id": request_id})
        assert reply.status_code == 200
    row = page.locator(f'#log tr[data-request-id="{request_id}"]')
    row.wait_for()
    assert "/v1/chat/completions" in row.inner_text() and MODEL in row.inner_text()
    assert "a private prompt" not in page.content()
    page.locator("#health-status").wait_for()
    page.locator("#figures tbody tr").nth(3).wait_for()
    browser.shot("logs", full_page=False)


def test_a_user_key_is_refused_the_admin_pages_and_api(browser: Browser) -> None:
    with api(browser.server) as http:
        user_key = http.post("/admin/keys", json={"user": "console-viewer"}).json()["key"]
    page = browser.context.new_page()  # a new tab: its own session storage
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{browser.server.url}/ui/")
        page.fill("#api-key", user_key)
        page.click("#signin-button")
        page.wait_for_url("**/ui/playground")
        assert page.locator("#who").inner_text() == "user key"
        assert page.locator('nav a[data-nav="models"]').is_hidden()
        for name in ("models", "keys", "logs"):
            page.goto(f"{browser.server.url}/ui/{name}")
            error = page.locator("#error")
            error.wait_for(state="visible")
            assert "admin" in error.inner_text(), name
        # Usage: the key's own, from /usage/series (no table of keys).
        with api(browser.server, user_key) as http:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            assert http.post("/v1/chat/completions", json=body).status_code == 200
        page.goto(f"{browser.server.url}/ui/usage")
        page.locator("#chart svg polyline").first.wait_for()
        until(lambda: page.locator("#chart").get_attribute("data-total") == "1")
        assert page.locator("#top-keys-card").is_hidden() and page.locator("#error").is_hidden()
        with api(browser.server, user_key) as http:
            for path in ("/admin/models", "/admin/keys", "/admin/usage/series", "/admin/logs/stream"):
                assert http.get(path).status_code == 403, path
            assert http.post(f"/admin/models/{MODEL}/unload").status_code == 403
    finally:
        page.close()


def test_the_browser_talked_to_the_server_only(browser: Browser) -> None:
    server = urlsplit(browser.server.url).netloc
    assert browser.requests, "no request was recorded"
    foreign = [
        url
        for url in browser.requests
        if urlsplit(url).scheme not in ("blob", "data") and urlsplit(url).netloc != server
    ]
    assert foreign == []
    assert browser.problems == []
