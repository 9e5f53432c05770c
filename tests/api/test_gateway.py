"""The gateway over fake engines, on SQLite and on PostgreSQL: keys and scopes on every route, rate limits,
the fair queue, usage records."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from somner.api.guard import PUBLIC_PATHS
from somner.app import create_app
from somner.gateway.keys import KeyRights
from somner.services import Services
from tests.api.conftest import ADMIN_KEY, running
from tests.api.shapes import assert_path_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


def chat(model: str = "alpha", content: str = "one two three", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def make_key(client: httpx.AsyncClient, **rights: Any) -> str:
    response = await client.post("/admin/keys", json={"user": rights.pop("user", "alice"), **rights})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def as_key(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code


async def test_every_route_but_the_public_ones_needs_a_key(
    tmp_path: Path, farm: FakeFarm, database_url: str | None
) -> None:
    async with running(tmp_path, farm, database_url) as (services, _client):
        app = create_app(services.settings, services=services)
        anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
        checked = 0
        async with anonymous:
            for route in app.routes:
                if isinstance(route, Mount) and route.path == "/ui":
                    continue  # the web console's pages: public, holding no data (tests/api/test_console.py)
                assert isinstance(route, Route)
                path = re.sub(r"\{[^}]+\}", "alpha", route.path)
                for method in sorted(route.methods or []):
                    if method == "HEAD":
                        continue
                    response = await anonymous.request(method, path)
                    checked += 1
                    if route.path in PUBLIC_PATHS:
                        assert response.status_code == 200, (method, path)
                    else:
                        assert_path_error(response, 401)
        assert checked > 20
        assert farm.starts == 0


async def test_bad_keys_scopes_and_model_limits(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (services, client):
        inference = await make_key(client)
        limited = await make_key(client, models=["alpha"])
        revoked_response = await client.post("/admin/keys", json={"user": "bob"})
        revoked_id, revoked = revoked_response.json()["id"], revoked_response.json()["key"]
        _record, expired = await services.keys.create_key(
            "carol", KeyRights(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)), create_user=True
        )
        assert (await client.post(f"/admin/keys/{revoked_id}/revoke")).status_code == 200

        assert_error(
            await client.post("/v1/chat/completions", json=chat(), headers=as_key("sk-somner-nope")),
            401,
            "invalid_api_key",
        )
        assert_error(
            await client.post("/v1/chat/completions", json=chat(), headers=as_key(revoked)), 401, "revoked_api_key"
        )
        assert_error(
            await client.post("/v1/chat/completions", json=chat(), headers=as_key(expired)), 401, "expired_api_key"
        )
        assert_error(await client.get("/admin/models", headers=as_key(inference)), 403, "permission_denied")
        assert_error(await client.post("/admin/keys", json={"user": "x"}, headers=as_key(inference)), 403)
        assert (await client.post("/v1/chat/completions", json=chat(), headers=as_key(inference))).status_code == 200
        # x-api-key works too (Anthropic clients)
        assert (
            await client.post(
                "/v1/chat/completions", json=chat(), headers={"authorization": "", "x-api-key": inference}
            )
        ).status_code == 200

        assert (
            await client.post("/v1/chat/completions", json=chat("alpha"), headers=as_key(limited))
        ).status_code == 200
        denied = await client.post("/v1/chat/completions", json=chat("beta"), headers=as_key(limited))
        assert_error(denied, 403, "permission_denied")
        assert denied.json()["error"]["param"] == "model"
        listed = (await client.get("/v1/models", headers=as_key(limited))).json()["data"]
        assert [m["id"] for m in listed] == ["alpha"]
        assert_error(await client.get("/v1/models/beta", headers=as_key(limited)), 403)


async def test_keys_cannot_grant_more_than_they_have(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (_, client):
        narrow_admin = await make_key(client, admin=True, models=["alpha"], rpm=10)
        headers = as_key(narrow_admin)
        for body in (
            {"user": "x"},
            {"user": "x", "models": ["alpha", "beta"], "rpm": 5},
            {"user": "x", "models": ["alpha"], "rpm": 50},
        ):
            assert_error(await client.post("/admin/keys", json=body, headers=headers), 403)
        ok = await client.post("/admin/keys", json={"user": "x", "models": ["alpha"], "rpm": 5}, headers=headers)
        assert ok.status_code == 201
        assert ok.json()["key"].startswith("sk-somner-")
        assert len(ok.json()["key"]) >= len("sk-somner-") + 43  # 256 random bits
        assert_error(await client.post("/admin/keys", json={"user": "x", "rpm": "lots"}), 400, "invalid_type")
        assert_error(await client.post("/admin/keys", json={"user": "x", "expires": "never"}), 400)
        # Limits the key store cannot hold are refused up front (PostgreSQL keeps rpm/tpm as 32-bit integers).
        too_big = await client.post("/admin/keys", json={"user": "x", "tpm": 10**12})
        assert_error(too_big, 400)
        assert "tpm" in too_big.json()["error"]["message"]
        big = await client.post("/admin/keys", json={"user": "x", "tpm": 2**31 - 1, "daily_tokens": 10**12})
        assert big.status_code == 201, big.text


async def test_no_secret_is_stored_in_clear(
    tmp_path: Path, farm: FakeFarm, database_url: str | None, request: pytest.FixtureRequest
) -> None:
    async with running(tmp_path, farm, database_url) as (_services, client):
        secrets_made = [ADMIN_KEY, await make_key(client), await make_key(client, admin=True)]
        rotated = await client.post(f"/admin/keys/{(await client.get('/admin/keys')).json()['data'][1]['id']}/rotate")
        secrets_made.append(rotated.json()["key"])
        await client.post("/v1/chat/completions", json=chat())
        listing = (await client.get("/admin/keys?all=true")).text
        if database_url is None:
            stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("somner.db*"))
            text = stored.decode("latin-1")
        else:
            text = request.getfixturevalue("postgres").dump(database_url)
    for secret in secrets_made:
        assert secret not in text
        assert secret not in listing
    assert secrets_made[1][:16] in text  # the display prefix is kept, and only it


async def test_requests_per_minute_are_exact_under_concurrency(
    tmp_path: Path, farm: FakeFarm, database_url: str | None
) -> None:
    async with running(tmp_path, farm, database_url, limits={"max_concurrent": 64}) as (_, client):
        key = await make_key(client, rpm=10)
        responses = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=chat(), headers=as_key(key)) for _ in range(50))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    refused = next(r for r in responses if r.status_code == 429)
    assert_error(refused, 429, "rate_limit_exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "10"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "10"


async def test_tokens_per_minute_and_daily_quota(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (_, client):
        tpm = await make_key(client, tpm=10)
        first = await client.post("/v1/chat/completions", json=chat(content="a b c d e f g h"), headers=as_key(tpm))
        assert first.json()["usage"]["total_tokens"] == 9  # 1 prompt "token" + 8 words in the fake engine
        assert (
            await client.post("/v1/chat/completions", json=chat(content="a"), headers=as_key(tpm))
        ).status_code == 200
        limited = await client.post("/v1/chat/completions", json=chat(), headers=as_key(tpm))
        assert_error(limited, 429)
        assert "tokens per minute" in limited.json()["error"]["message"]
        assert limited.headers["x-ratelimit-remaining-tokens"] == "0"
        daily = await make_key(client, daily_tokens=5)
        assert (
            await client.post("/v1/chat/completions", json=chat(content="a b c d e f"), headers=as_key(daily))
        ).status_code == 200
        over = await client.post("/v1/chat/completions", json=chat(content="a"), headers=as_key(daily))
        assert_error(over, 429)
        assert "Daily quota" in over.json()["error"]["message"]
        assert int(over.headers["retry-after"]) <= 86400


async def test_concurrency_refusals_spend_no_quota(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    settings = {"limits": {"max_concurrent": 1, "max_queue": 0}}
    async with running(tmp_path, farm, database_url, **settings) as (_, client):
        key = await make_key(client, rpm=3)
        slow = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat(content="SLOW " * 20), headers=as_key(key))
        )
        await asyncio.sleep(0.2)
        busy = [await client.post("/v1/chat/completions", json=chat(), headers=as_key(key)) for _ in range(5)]
        assert all(r.status_code == 503 and int(r.headers["retry-after"]) >= 1 for r in busy)
        assert (await slow).status_code == 200
        remaining = [await client.post("/v1/chat/completions", json=chat(), headers=as_key(key)) for _ in range(3)]
        assert [r.status_code for r in remaining] == [200, 200, 429]  # the 503s did not use up the rpm


async def test_a_queue_is_fair_across_keys(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    settings = {"limits": {"max_concurrent": 1, "max_queue": 100}}
    async with running(tmp_path, farm, database_url, **settings) as (_, client):
        a, b = await make_key(client, user="a"), await make_key(client, user="b")
        order: list[str] = []

        async def send(who: str, key: str) -> None:
            response = await client.post("/v1/chat/completions", json=chat(content="SLOW x y"), headers=as_key(key))
            assert response.status_code == 200
            order.append(who)

        flood = [asyncio.create_task(send("a", a)) for _ in range(40)]
        await asyncio.sleep(0.3)
        await send("b", b)
        await asyncio.gather(*flood)
    assert order.index("b") < 10, order


async def test_one_usage_record_per_admitted_request(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (services, client):
        key = await make_key(client, user="dora")
        contents = ["a b c", "FAIL_BEFORE x", "a b FAIL_MIDWAY d", "BOOM"] * 5
        responses = []
        for i, content in enumerate(contents):
            responses.append(
                await client.post(
                    "/v1/chat/completions", json=chat(content=content, stream=i % 2 == 1), headers=as_key(key)
                )
            )
        assert_error(
            await client.post("/v1/chat/completions", json=chat("nope"), headers=as_key(key)), 404
        )  # not admitted
        await services.recorder.flush()
        records = [r for r in await services.usage.all() if r.key_id is not None and r.user_name == "dora"]
    assert len(records) == len(contents) == 20
    by_content = sorted((r.status, r.completion_tokens) for r in records)
    assert by_content.count((200, 3)) == 5
    assert sum(1 for status, _ in by_content if status == 502) == 10  # FAIL_BEFORE and FAIL_MIDWAY
    assert sum(1 for status, _ in by_content if status == 500) == 5  # BOOM
    midway = [r for r in records if r.status == 502 and r.completion_tokens == 2]
    assert len(midway) == 5  # two tokens were relayed before the engine failed
    assert all(r.prompt_text is None and r.completion_text is None for r in records)
    assert all(r.dialect == "openai" and r.route == "chat" and r.model == "alpha" for r in records)
    assert all(r.latency_ms > 0 and r.bytes_in > 0 for r in records)


async def test_request_logging_is_opt_in(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url, log_requests=True) as (services, client):
        await client.post("/v1/chat/completions", json=chat(content="hello there"))
        await client.post("/v1/chat/completions", json=chat(content="hello again", stream=True))
        await services.recorder.flush()
        records = await services.usage.all()
    assert [r.completion_text for r in records] == ["hello there", "hello again"]
    assert all(r.prompt_text and "hello" in r.prompt_text for r in records)


async def test_usage_summary(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (_, client):
        key = await make_key(client, user="erin")
        for model in ("alpha", "alpha", "beta"):
            await client.post("/v1/chat/completions", json=chat(model, "a b"), headers=as_key(key))
        by_model = (await client.get("/admin/usage?by=model&since=1h")).json()["data"]
        assert [(r["model"], r["requests"], r["completion_tokens"]) for r in by_model] == [
            ("alpha", 2, 4),
            ("beta", 1, 2),
        ]
        by_user = {r["user"]: r["requests"] for r in (await client.get("/admin/usage?by=user")).json()["data"]}
        assert by_user["erin"] == 3
        by_day = (await client.get("/admin/usage?by=day")).json()["data"]
        assert by_day[0]["day"] == dt.datetime.now(dt.UTC).date().isoformat()
        assert_error(await client.get("/admin/usage?by=planet"), 400)
        assert_error(await client.get("/admin/usage?since=soon"), 400)


async def test_revocation_applies_at_once_on_this_server(
    tmp_path: Path, farm: FakeFarm, database_url: str | None
) -> None:
    async with running(tmp_path, farm, database_url) as (_, client):
        created = (await client.post("/admin/keys", json={"user": "frank"})).json()
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=as_key(created["key"]))
        ).status_code == 200
        await client.delete(f"/admin/keys/{created['id']}")
        assert_error(
            await client.post("/v1/chat/completions", json=chat(), headers=as_key(created["key"])),
            401,
            "revoked_api_key",
        )
        rotated = (await client.post("/admin/keys", json={"user": "frank"})).json()
        new = (await client.post(f"/admin/keys/{rotated['id']}/rotate")).json()
        assert_error(await client.post("/v1/chat/completions", json=chat(), headers=as_key(rotated["key"])), 401)
        assert (await client.post("/v1/chat/completions", json=chat(), headers=as_key(new["key"]))).status_code == 200


async def test_users_and_imports(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (_, client):
        assert (await client.post("/admin/users", json={"name": "gina"})).status_code == 201
        assert_error(await client.post("/admin/users", json={"name": "gina"}), 400)
        imported = await client.post(
            "/admin/keys/import",
            content=b"# seed keys\nteam-a:secret-aaaaaaaaaaaaaaaa\n\nteam-b:secret-bbbbbbbbbbbbbbbb\n",
        )
        assert imported.status_code == 201
        assert [k["user"] for k in imported.json()["data"]] == ["team-a", "team-b"]
        assert (
            await client.post("/v1/chat/completions", json=chat(), headers=as_key("secret-aaaaaaaaaaaaaaaa"))
        ).status_code == 200
        assert_error(await client.post("/admin/keys/import", content=b"no colon here\n"), 400)
        users = {u["name"]: u["keys"] for u in (await client.get("/admin/users")).json()["data"]}
        assert users["team-a"] == 1 and users["gina"] == 0
        assert (await client.delete("/admin/users/team-a")).status_code == 200
        assert_error(
            await client.post("/v1/chat/completions", json=chat(), headers=as_key("secret-aaaaaaaaaaaaaaaa")), 401
        )
        assert_error(await client.delete("/admin/users/nobody"), 404)


async def test_first_start_makes_an_admin_key(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    from somner.services import build_services
    from somner.settings import Settings

    (tmp_path / "data" / "models").mkdir(parents=True)
    database = {"database": {"url": database_url}} if database_url is not None else {}
    settings = Settings(data_dir=tmp_path / "data", **database)  # type: ignore[arg-type]
    services: Services = build_services(settings, factory=farm.factory)
    await services.start()
    try:
        key_file = tmp_path / "data" / "admin.key"
        secret = key_file.read_text().strip()
        assert secret.startswith("sk-somner-")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        principal = await services.auth.authenticate(secret)
        assert principal.rights.admin
    finally:
        await services.stop()
    services = build_services(settings, factory=farm.factory)
    await services.start()  # not again: the store already has a key
    await services.stop()
    assert key_file.read_text().strip() == secret


async def test_hosts_cors_and_auth_off(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    settings: dict[str, Any] = {"auth": {"cors_origins": ["https://app.example"], "allowed_hosts": ["somner.lan"]}}
    async with running(tmp_path, farm, database_url, **settings) as (_, client):
        rebinding = await client.get("/v1/models", headers={"host": "evil.example"})
        assert_error(rebinding, 403, "host_not_allowed")
        assert (await client.get("/v1/models", headers={"host": "somner.lan:8000"})).status_code == 200
        preflight = await client.options(
            "/v1/chat/completions",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.get("/v1/models", headers={"origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers
    async with running(tmp_path / "open", farm, database_url, auth={"enabled": False}) as (_, client):
        anonymous = await client.post("/v1/chat/completions", json=chat(), headers={"authorization": ""})
        assert anonymous.status_code == 200


async def test_size_limits(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    settings: dict[str, Any] = {"limits": {"max_tokens": 100, "max_messages": 3, "max_headers": 20}}
    async with running(tmp_path, farm, database_url, **settings) as (_, client):
        assert_error(await client.post("/v1/chat/completions", json=chat(max_tokens=500)), 400)
        many = {"model": "alpha", "messages": [{"role": "user", "content": "x"}] * 4}
        assert_error(await client.post("/v1/chat/completions", json=many), 400)
        crowded = {f"x-filler-{i}": "y" for i in range(30)}
        assert_error(await client.get("/v1/models", headers=crowded), 431)
    assert farm.starts == 0
