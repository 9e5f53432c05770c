"""The web console in process: its pages and files (public, with the security headers, nothing from another
host), and the admin API it adds: usage series / top / errors (CSV too), the live request log, load with
keep_alive. Bad inputs answer 4xx in the OpenAI error shape; user keys are refused."""

from __future__ import annotations

import re
from importlib import resources

import httpx
import orjson
import pytest

from somner.console.routes import CSP, PAGES
from somner.services import Services
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

PAGE_PATHS = ["/ui/", *(f"/ui/{page.name}" for page in PAGES)]


def anonymous(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=client._transport, base_url="http://localhost")


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "unsafe" not in CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert "set-cookie" not in response.headers


async def test_pages_are_public_with_security_headers_and_only_local_assets(client: httpx.AsyncClient) -> None:
    async with anonymous(client) as browser:
        for path in PAGE_PATHS:
            page = await browser.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            assert_security_headers(page)
            html = page.text
            assert "<script>" not in html and " style=" not in html and "on" + "click=" not in html  # no inline code
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert assets and all(a.startswith("/ui") for a in assets), assets
            for asset in assets:
                if asset.startswith("/ui/static/"):
                    served = await browser.get(asset)
                    assert served.status_code == 200, asset
                    assert_security_headers(served)
        redirect = await browser.get("/ui")
        assert redirect.is_redirect and redirect.headers["location"].endswith("/ui/")


def test_static_files_name_no_other_host() -> None:
    """No file the console ships makes the browser reach another host (the SVG namespace is a name, not a
    request)."""
    folder = resources.files("somner.console")
    for sub in ("static", "templates"):
        for entry in (folder / sub).iterdir():
            text = entry.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), entry.name
            if entry.name.endswith(".css"):
                assert "@import" not in text and "url(" not in text, entry.name


async def test_unknown_pages_and_files_are_404(client: httpx.AsyncClient) -> None:
    async with anonymous(client) as browser:
        for path in ("/ui/nope", "/ui/static/nope.js", "/ui/static/..%2F__init__.py", "/ui/static/../routes.py"):
            reply = await browser.get(path)
            assert reply.status_code == 404, path
        assert (await browser.post("/ui/playground")).status_code == 405


async def test_console_api_calls_still_need_a_key(client: httpx.AsyncClient) -> None:
    async with anonymous(client) as browser:
        for path in ("/admin/usage/series", "/admin/usage/top", "/admin/usage/errors", "/admin/logs/stream"):
            reply = await browser.get(path)
            assert reply.status_code == 401, path
            assert reply.json()["error"]["type"]


async def _user_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    key = (await client.post("/admin/keys", json={"user": "someone"})).json()["key"]
    return httpx.AsyncClient(
        transport=client._transport, base_url="http://localhost", headers={"authorization": f"Bearer {key}"}
    )


async def test_user_keys_are_refused_the_admin_api_behind_the_pages(client: httpx.AsyncClient) -> None:
    async with await _user_client(client) as user:
        assert (await user.get("/v1/models")).status_code == 200
        for path in (
            "/admin/models",
            "/admin/keys",
            "/admin/users",
            "/admin/usage/series",
            "/admin/usage/top",
            "/admin/usage/errors",
            "/admin/logs/stream",
            "/admin/backends",
        ):
            reply = await user.get(path)
            assert reply.status_code == 403, path
            assert reply.json()["error"]["message"]
        assert (await user.post("/admin/models/alpha/load")).status_code == 403


def chat(model: str = "alpha") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "x y"}], "max_tokens": 4}


async def test_usage_series_top_errors_and_csv(client: httpx.AsyncClient) -> None:
    for model in ("alpha", "alpha", "beta"):
        assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat("nope"))).status_code == 404

    series = (await client.get("/admin/usage/series", params={"bucket": "hour", "by": "model"})).json()
    assert series["bucket"] == "hour" and series["by"] == "model"
    by_model = {row["model"]: row for row in series["data"]}
    assert by_model["alpha"]["requests"] == 2 and by_model["beta"]["requests"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", by_model["alpha"]["bucket"])
    assert by_model["alpha"]["completion_tokens"] > 0 and by_model["alpha"]["avg_latency_ms"] is not None

    daily = (await client.get("/admin/usage/series", params={"bucket": "day", "since": "7d"})).json()["data"]
    assert len(daily) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d", daily[0]["bucket"])
    assert daily[0]["requests"] == sum(row["requests"] for row in series["data"])

    top = (await client.get("/admin/usage/top", params={"by": "model", "limit": "1"})).json()["data"]
    assert [row["model"] for row in top] == ["alpha"]

    errors = (await client.get("/admin/usage/errors")).json()["data"]
    assert all(row["status"] >= 400 for row in errors)

    csv = await client.get("/admin/usage/series", params={"by": "model", "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    lines = csv.text.strip().splitlines()
    assert lines[0].split(",")[:3] == ["bucket", "model", "requests"]
    assert len(lines) == 1 + len(series["data"])


async def test_a_key_sees_its_own_usage_only(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/chat/completions", json=chat("alpha"))).status_code == 200  # the admin's
    async with await _user_client(client) as user:
        assert (await user.post("/v1/chat/completions", json=chat("beta"))).status_code == 200
        assert (await user.post("/v1/chat/completions", json=chat("nope"))).status_code == 404
        own = (await user.get("/usage/series", params={"by": "model"})).json()["data"]
        assert [(row["model"], row["requests"]) for row in own] == [("beta", 1)]
        csv = await user.get("/usage/series", params={"format": "csv", "bucket": "day"})
        assert csv.text.startswith("bucket,requests") and len(csv.text.strip().splitlines()) == 2
        assert (await user.get("/usage/errors")).json()["data"] == []  # (a 404 before admission is no usage)
        for params in ({"by": "key"}, {"by": "user"}, {"bucket": "minute"}):
            reply = await user.get("/usage/series", params=params)
            assert reply.status_code == 400 and reply.json()["error"]["param"] in params
        assert (await user.get("/usage/errors", params={"limit": "-1"})).status_code == 400
    mine = (await client.get("/usage/series", params={"by": "model"})).json()["data"]
    assert [(row["model"], row["requests"]) for row in mine] == [("alpha", 1)]
    everyone = (await client.get("/admin/usage/series", params={"by": "model"})).json()["data"]
    assert sorted(row["model"] for row in everyone) == ["alpha", "beta"]
    async with anonymous(client) as nobody:
        assert (await nobody.get("/usage/series")).status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/admin/usage/series", {"bucket": "week"}, "bucket"),
        ("/admin/usage/series", {"by": "colour"}, "by"),
        ("/admin/usage/series", {"format": "xml"}, "format"),
        ("/admin/usage/series", {"since": "yesterday"}, "since"),
        ("/admin/usage/series", {"since": "-1h"}, "since"),
        ("/admin/usage/top", {"limit": "0"}, "limit"),
        ("/admin/usage/top", {"limit": "many"}, "limit"),
        ("/admin/usage/top", {"by": "day"}, "by"),
        ("/admin/usage/errors", {"limit": "100000"}, "limit"),
        ("/admin/logs/stream", {"replay": "maybe"}, "replay"),
    ],
)
async def test_bad_report_parameters_are_400s(
    client: httpx.AsyncClient, path: str, params: dict[str, str], param: str
) -> None:
    reply = await client.get(path, params=params)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == param and error["message"]
    assert (await client.get("/admin/usage/series")).status_code == 200  # and the server goes on


async def test_the_log_stream_replays_requests_without_text_and_ends_on_drain(
    client: httpx.AsyncClient, services: Services
) -> None:
    secret = "a very private prompt"
    body = {"model": "alpha", "messages": [{"role": "user", "content": secret}], "max_tokens": 4}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert (await client.get("/admin/models")).status_code == 200
    assert (await client.get("/ui/playground")).status_code == 200  # the console's own pages stay out of it
    services.request_feed.close()  # as at the start of a drain: a tail ends after what it has
    reply = await client.get("/admin/logs/stream")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    chat_event = next(e for e in events if e["route"] == "/v1/chat/completions")
    assert chat_event["model"] == "alpha" and chat_event["status"] == 200 and chat_event["completion_tokens"] > 0
    assert {"time", "request_id", "latency_ms", "key_prefix", "method"} <= set(chat_event)
    assert any(e["route"] == "/admin/models" for e in events)
    assert secret not in reply.text and "x y" not in reply.text
    assert not any(e["route"].startswith("/admin/logs") or e["route"] == "unmatched" for e in events)


async def test_load_with_keep_alive(client: httpx.AsyncClient, services: Services, farm: FakeFarm) -> None:
    kept = (await client.post("/admin/models/alpha/load", json={"keep_alive": -1})).json()
    assert kept["state"] == "loaded" and kept["keep_loaded"] is True and kept["progress"] is None
    timed = (await client.post("/admin/models/beta/load", json={"keep_alive": "10m"})).json()
    assert timed["keep_loaded"] is False and timed["expires_at"] is not None
    for bad in ({"keep_alive": "soon"}, {"keep_alive": [1]}, {"ttl": 3}):
        reply = await client.post("/admin/models/alpha/load", json=bad)
        assert reply.status_code == 400, bad
        assert reply.json()["error"]["message"]
    reply = await client.post("/admin/models/alpha/load", content=b"{not json")
    assert reply.status_code == 400
    assert (await client.get("/admin/models")).status_code == 200
