"""Key format, hashing and delegation (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from somner.errors import BadRequest, Forbidden
from somner.gateway.keys import (
    ADMIN,
    INFERENCE,
    KeyRights,
    check_delegation,
    display_prefix,
    hash_secret,
    new_secret,
    parse_import,
)

ADMIN_RIGHTS = KeyRights(scopes=frozenset({ADMIN, INFERENCE}))


def test_secrets_are_long_random_and_hashed() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("sk-somner-") and len(s) == len("sk-somner-") + 43 for s in secrets)
    secret = next(iter(secrets))
    assert len(hash_secret(secret)) == 64 and secret not in hash_secret(secret)
    assert display_prefix(secret) == secret[:16]


def test_delegation_never_widens_rights() -> None:
    now = dt.datetime.now(dt.UTC)
    narrow = KeyRights(scopes=frozenset({ADMIN, INFERENCE}), models=frozenset({"a"}), rpm=10, expires_at=now)
    check_delegation(ADMIN_RIGHTS, KeyRights(rpm=5))
    check_delegation(narrow, KeyRights(models=frozenset({"a"}), rpm=10, expires_at=now))
    for wider in (
        KeyRights(models=frozenset({"a"}), expires_at=now),  # no rpm is more than 10
        KeyRights(models=frozenset({"a", "b"}), rpm=1, expires_at=now),
        KeyRights(rpm=1, expires_at=now),  # all models
        KeyRights(models=frozenset({"a"}), rpm=1),  # never expires
        KeyRights(models=frozenset({"a"}), rpm=1, expires_at=now + dt.timedelta(days=1)),
    ):
        with pytest.raises(Forbidden):
            check_delegation(narrow, wider)
    with pytest.raises(Forbidden, match="Only admin"):
        check_delegation(KeyRights(), KeyRights())
    with pytest.raises(Forbidden, match="scopes"):
        check_delegation(KeyRights(scopes=frozenset({ADMIN})), KeyRights(scopes=frozenset({ADMIN, INFERENCE})))


def test_import_lines() -> None:
    text = "# keys\nteam-a:0123456789abcdef\n\n  team-b : fedcba9876543210xx \n"
    assert parse_import(text) == [("team-a", "0123456789abcdef"), ("team-b", "fedcba9876543210xx")]
    for bad in ("no-colon", ":secretsecretsecret", "x:short"):
        with pytest.raises(BadRequest, match="line 1"):
            parse_import(bad)
