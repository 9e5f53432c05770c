"""How a presented key is checked: hashed first (SHA-256), looked up by its digest, and the stored digest compared
with `hmac.compare_digest` (constant time). Neither the database lookup nor the comparison sees the secret itself,
so neither its timing nor a quote in it (SQL injection through the bearer token) depends on what was sent."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from somner.gateway.keys import KeyRights, hash_secret, same_hash
from somner.store import keys as store_keys
from somner.store.db import Database, sqlite_url
from somner.store.keys import KeyStore

pytestmark = pytest.mark.anyio


def test_same_hash_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    original = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", spy)
    digest = hash_secret("sk-somner-abc")
    assert same_hash(digest, digest)
    assert not same_hash(digest, hash_secret("sk-somner-abd"))
    assert len(calls) == 2


async def test_a_lookup_goes_by_digest_and_ends_in_the_constant_time_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(sqlite_url(tmp_path / "keys.db"))
    await db.migrate()
    keys = KeyStore(db)
    _, secret = await keys.create_key("ann", KeyRights(), create_user=True)
    compared: list[tuple[str, str]] = []

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return same_hash(a, b)

    monkeypatch.setattr(store_keys, "same_hash", spy)
    try:
        assert await keys.find(secret) is not None
        assert compared == [(hash_secret(secret), hash_secret(secret))]
        for hostile in ("' OR '1'='1", "x' UNION SELECT secret_hash FROM api_keys --", secret[:-1], secret + "'"):
            assert await keys.find(hostile) is None
        assert all(len(a) == len(b) == 64 for a, b in compared)  # digests only, never a secret
    finally:
        await db.close()
