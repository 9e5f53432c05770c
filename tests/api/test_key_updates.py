"""`PATCH /admin/keys/{key_id}`: a key's limits, quotas, expiry, scopes and models changed in place (same id, same
secret), with the checks of `POST /admin/keys`, and enforced from the key's next request. On SQLite and on
PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, running
from tests.api.shapes import assert_path_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio


def chat(content: str = "one two three") -> dict[str, Any]:
    return {"model": "alpha", "messages": [{"role": "user", "content": content}]}


def as_key(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def make_key(client: httpx.AsyncClient, **rights: Any) -> dict[str, Any]:
    response = await client.post("/admin/keys", json={"user": rights.pop("user", "alice"), **rights})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def patch(client: httpx.AsyncClient, key_id: str, body: object, **kwargs: Any) -> httpx.Response:
    return await client.patch(f"/admin/keys/{key_id}", json=body, **kwargs)


async def test_new_limits_apply_from_the_next_request(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (_, client):
        key = await make_key(client, rpm=2, tpm=1000)
        headers = as_key(key["key"])
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=chat(), headers=headers)).status_code == 200
        refused = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert_path_error(refused, 429)
        # The key is in the lookup cache with rpm=2: the update must reach it at once.
        updated = await patch(client, key["id"], {"rpm": 3})
        assert updated.status_code == 200, updated.text
        body = updated.json()
        assert (body["id"], body["prefix"], body["rpm"], body["tpm"]) == (key["id"], key["prefix"], 3, 1000)
        assert "key" not in body  # the secret is never shown again
        allowed = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["x-ratelimit-limit-requests"] == "3"
        assert_path_error(await client.post("/v1/chat/completions", json=chat(), headers=headers), 429)
        # null lifts a limit.
        lifted = await patch(client, key["id"], {"rpm": None})
        assert lifted.json()["rpm"] is None and lifted.json()["tpm"] == 1000
        reply = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert reply.status_code == 200 and "x-ratelimit-limit-requests" not in reply.headers
        # A daily quota below what the key used today refuses it at once.
        assert (await patch(client, key["id"], {"daily_tokens": 5})).status_code == 200
        over = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert "Daily quota of 5 tokens" in assert_path_error(over, 429)
        # Scopes: a key updated to metrics only may no longer ask for completions.
        assert (await patch(client, key["id"], {"scopes": ["metrics"], "daily_tokens": None})).status_code == 200
        assert_path_error(await client.post("/v1/chat/completions", json=chat(), headers=headers), 403)
        assert (await client.get("/metrics", headers=headers)).status_code == 200


async def test_what_is_not_sent_stays(tmp_path: Path, farm: FakeFarm, database_url: str | None) -> None:
    async with running(tmp_path, farm, database_url) as (services, client):
        key = await make_key(client, name="ci", models=["alpha"], tpm=100, max_concurrent=2, expires="30d")
        body = (await patch(client, key["id"], {"rpm": 7, "max_concurrent": 4})).json()
        for same in ("user", "name", "models", "tpm", "expires_at", "scopes", "created_at"):
            assert body[same] == key[same], same
        assert (body["rpm"], body["max_concurrent"]) == (7, 4)
        stored = await services.keys.get(key["id"])  # written, not only answered
        assert (stored.rights.rpm, stored.rights.max_concurrent, stored.rights.tpm) == (7, 4, 100)
        listed = {k["id"]: k for k in (await client.get("/admin/keys")).json()["data"]}
        assert listed[key["id"]] == body

        forever = (await patch(client, key["id"], {"expires": None, "models": None})).json()
        assert forever["expires_at"] is None and forever["models"] is None and forever["rpm"] == 7
        soon = (await patch(client, key["id"], {"expires": "1h"})).json()
        left = dt.datetime.fromisoformat(soon["expires_at"]) - dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)
        promoted = (await patch(client, key["id"], {"admin": True})).json()
        assert promoted["scopes"] == ["admin", "inference"]
        assert (await client.get("/admin/keys", headers=as_key(key["key"]))).status_code == 200
        demoted = (await patch(client, key["id"], {"admin": False})).json()
        assert demoted["scopes"] == ["inference"]
        assert_path_error(await client.get("/admin/keys", headers=as_key(key["key"])), 403)


async def test_bad_updates_are_refused_with_the_apis_error(
    tmp_path: Path, farm: FakeFarm, database_url: str | None
) -> None:
    async with running(tmp_path, farm, database_url) as (services, client):
        key = await make_key(client, rpm=5)
        for bad, param in (
            ({"rpm": 0}, "rpm"),
            ({"rpm": "lots"}, "rpm"),
            ({"tpm": 10**12}, "tpm"),
            ({"max_concurrent": -1}, "max_concurrent"),
            ({"daily_tokens": 2**63}, "daily_tokens"),
            ({"expires": "never"}, "expires"),
            ({"expires": "0s"}, "expires"),
            ({"expires": 10**30}, "expires"),  # (past what a date holds: a 400, as on creation, not a 500)
            ({"scopes": ["admin"]}, "scopes"),
            ({"admin": None}, "admin"),
            ({"user": "mallory"}, "user"),  # a key's user is not changed here
        ):
            message = assert_path_error(await patch(client, key["id"], bad), 400)
            assert param in message, (bad, message)
        assert "Nothing to change" in assert_path_error(await patch(client, key["id"], {}), 400)
        assert_path_error(await client.post("/admin/keys", json={"user": "x", "expires": "999999999d"}), 400)
        assert_path_error(await client.patch(f"/admin/keys/{key['id']}", content=b"{rpm: 5"), 400)
        assert_path_error(await patch(client, key["id"], [5]), 400)
        assert_path_error(await patch(client, "key_000000000000", {"rpm": 5}), 404)
        assert (await services.keys.get(key["id"])).rights.rpm == 5  # nothing above changed it

        revoked = await make_key(client)
        assert (await client.delete(f"/admin/keys/{revoked['id']}")).status_code == 200
        assert "revoked" in assert_path_error(await patch(client, revoked["id"], {"rpm": 5}), 400)

        # The admin key cannot take its own admin scope away (it would lock itself out).
        own = next(k for k in (await client.get("/admin/keys")).json()["data"] if "admin" in k["scopes"])
        assert ADMIN_KEY.startswith(own["prefix"])
        assert_path_error(await patch(client, own["id"], {"admin": False}), 400)
        kept = await patch(client, own["id"], {"scopes": ["inference"], "rpm": 1000})  # (admin stays unless sent)
        assert kept.status_code == 200 and "admin" in kept.json()["scopes"]


async def test_only_admins_update_keys_and_never_beyond_their_own_rights(
    tmp_path: Path, farm: FakeFarm, database_url: str | None
) -> None:
    async with running(tmp_path, farm, database_url) as (services, client):
        plain = await make_key(client, rpm=5)
        for caller in (plain, await make_key(client, scopes=["metrics"])):
            refused = await patch(client, plain["id"], {"rpm": 500}, headers=as_key(caller["key"]))
            assert "admin" in assert_path_error(refused, 403)
        narrow = await make_key(client, admin=True, models=["alpha"], rpm=10)
        as_narrow = as_key(narrow["key"])
        within = await make_key(client, models=["alpha"], rpm=5)
        assert (await patch(client, within["id"], {"rpm": 8}, headers=as_narrow)).status_code == 200
        for beyond in ({"rpm": 50}, {"rpm": None}, {"models": ["alpha", "beta"]}, {"models": None}):
            assert_path_error(await patch(client, within["id"], beyond, headers=as_narrow), 403)
        # A key with more rights than the caller's cannot be touched by it, not even to lower them.
        assert_path_error(await patch(client, plain["id"], {"rpm": 1}, headers=as_narrow), 403)
        assert (await services.keys.get(plain["id"])).rights.rpm == 5
        assert (await services.keys.get(within["id"])).rights.rpm == 8


async def test_a_cross_origin_admin_client_may_send_patch(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm, auth={"cors_origins": ["https://ops.example"]}) as (_, client):
        preflight = await client.options(
            "/admin/keys/key_000000000000",
            headers={"origin": "https://ops.example", "access-control-request-method": "PATCH"},
        )
        assert preflight.status_code == 200, preflight.text
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
