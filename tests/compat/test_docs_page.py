"""`/docs` in a real browser (Playwright driving Debian's chromium, headless) against `somner serve`: the page
renders every operation of `/openapi.json`, shows a request body's schema when opened, filters, asks no other
host for anything, and breaks nothing in its Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.servers import ServeProcess

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists():
    pytest.skip(
        f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )
pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright (pip install playwright)")

from playwright.sync_api import expect, sync_playwright  # noqa: E402


def test_docs_page_renders_the_document(serve: ServeProcess) -> None:
    document = httpx.get(f"{serve.url}/openapi.json", timeout=30).json()
    operations = sum(len(item) for item in document["paths"].values())
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        context = chromium.new_context()
        context.on("request", lambda request: requests.append(request.url))
        context.on("weberror", lambda error: problems.append(f"page error: {error.error}"))
        context.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            response = page.goto(f"{serve.url}/docs")  # no key: the page and the document are public
            assert response is not None and response.ok
            page.locator("details").nth(operations - 1).wait_for(state="attached")
            assert page.locator("details").count() == operations
            assert "Somner" in page.locator("#info").inner_text()
            chat = page.locator("details", has_text="/v1/chat/completions").first
            chat.locator("summary").click()  # (the page renders an operation on its toggle event, just after)
            expect(chat).to_contain_text("Request body")
            expect(chat).to_contain_text("messages")  # the schema, resolved from components
            page.fill("#filter", "anthropic messages")
            visible = page.locator("details:visible")
            assert 1 <= visible.count() < operations
        finally:
            context.close()
            chromium.close()
    assert problems == []
    assert {urlsplit(url).netloc for url in requests} == {urlsplit(serve.url).netloc}
