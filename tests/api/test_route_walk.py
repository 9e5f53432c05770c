"""The route walk: every route in the app's table is either on the documented public list (the README's "Public
routes": the guard's `PUBLIC_PATHS` and the console's pages under /ui) or refuses a missing, an invalid and a
revoked key with a 401 in its dialect's error shape. A new route is walked without being named here."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from somner.api.guard import PUBLIC_PATHS, is_console
from somner.api.openapi.document import flat_routes
from somner.app import create_app
from somner.settings import Settings
from tests.api.conftest import running
from tests.api.shapes import assert_path_error
from tests.fakes.backends import FakeFarm

pytestmark = pytest.mark.anyio

_PARAM = re.compile(r"\{([^}:]+)(:[^}]+)?\}")
# Keys that are not keys: wrong secrets, and the shapes injection attempts take (LiteLLM's CVE-2026-42208 came in
# through the bearer token); the secret is hashed before any lookup, so none of them can reach a query as text.
_INVALID_KEYS = (
    "sk-somner-" + "0" * 48,
    "' OR '1'='1' --",
    "sk-somner-x'; DROP TABLE api_keys; --",
    "%00sk-somner-null",
    "é" * 64,
)


def _walk() -> list[tuple[str, str]]:
    """(method, concrete path) for every route of an app with every dialect (HEAD where only Starlette adds it
    is the GET route again)."""
    app = create_app(Settings(data_dir=Path("/nonexistent-route-walk")))
    found: list[tuple[str, str]] = []
    for full_path, route in flat_routes(app.routes):  # (routes inside a Mount too)
        if route.methods:
            path = _PARAM.sub(lambda match: "walk-" + match.group(1), full_path)
            found += [(method, path) for method in sorted(route.methods) if method != "HEAD" or len(route.methods) == 1]
    return found


ROUTES = _walk()


def test_the_walk_sees_every_dialect() -> None:
    paths = {path for _, path in ROUTES}
    assert {"/v1/chat/completions", "/v1/messages", "/api/chat", "/api/v1/generate", "/v1/model/load"} <= paths
    assert "/admin/keys/walk-key_id/revoke" in paths
    assert len(ROUTES) > 80


async def _refusals(client: httpx.AsyncClient, headers: dict[bytes, bytes]) -> list[str]:
    """Every non-public route asked with these headers; what did not answer 401 in its dialect's shape."""
    wrong: list[str] = []
    for method, path in ROUTES:
        if path in PUBLIC_PATHS or is_console(path):
            continue
        reply = await client.request(method, path, headers=headers, content=b"{}")
        try:
            assert_path_error(reply, 401)
        except AssertionError as exc:
            wrong.append(f"{method} {path}: {reply.status_code} {exc}")
    return wrong


async def test_every_route_but_the_public_ones_refuses_a_missing_invalid_or_revoked_key(
    tmp_path: Path, farm: FakeFarm
) -> None:
    async with running(tmp_path, farm) as (_, admin):
        anonymous = httpx.AsyncClient(transport=admin._transport, base_url="http://localhost")
        assert await _refusals(anonymous, {}) == []
        assert await _refusals(anonymous, {b"authorization": b"Bearer"}) == []  # a scheme without a key
        for key in _INVALID_KEYS:
            for header in ("authorization", "x-api-key", "x-admin-key"):
                value = f"Bearer {key}" if header == "authorization" else key
                encoded = {header.encode(): value.encode("utf-8")}  # (raw bytes: not every key is ASCII)
                assert await _refusals(anonymous, encoded) == [], (header, key)
        # A revoked key: it worked (and is in the lookup cache) until the admin API revoked it.
        created = (await admin.post("/admin/keys", json={"user": "walker", "admin": True})).json()
        revoked = {b"authorization": f"Bearer {created['key']}".encode()}
        assert (await anonymous.get("/v1/models", headers=revoked)).status_code == 200
        assert (await admin.post(f"/admin/keys/{created['id']}/revoke")).status_code == 200
        assert await _refusals(anonymous, revoked) == []
        assert farm.starts == 0  # nothing refused reached an engine


async def test_public_routes_answer_without_a_key(tmp_path: Path, farm: FakeFarm) -> None:
    async with running(tmp_path, farm) as (_, admin):
        anonymous = httpx.AsyncClient(transport=admin._transport, base_url="http://localhost")
        for path in sorted(PUBLIC_PATHS):
            reply = await anonymous.get(path)
            assert reply.status_code in (200, 503), (path, reply.status_code)  # (/ready may be 503: not ready)
        # /metrics is public only when configured so.
        assert (await anonymous.get("/metrics")).status_code == 401
    async with running(tmp_path / "public", farm, metrics_public=True) as (_, admin):
        anonymous = httpx.AsyncClient(transport=admin._transport, base_url="http://localhost")
        assert (await anonymous.get("/metrics")).status_code == 200


def test_the_public_list_is_the_documented_one() -> None:
    """The README's list and the guard's are the same list."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Public routes", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"`(/[^`\s]*)`", section))
    assert documented == set(PUBLIC_PATHS) | {"/metrics", "/ui"}
