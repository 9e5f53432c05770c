"""API keys: their format, their hash, what a key may do (a `Principal`), and what it may delegate.

A key is `sk-somner-` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 and a short prefix
(for display) are stored; lookups go by hash, and the comparison is constant-time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from somner.errors import BadRequest, Forbidden

KEY_PREFIX = "sk-somner-"
DISPLAY_CHARS = 16  # "sk-somner-" and six characters of the secret

ADMIN = "admin"
INFERENCE = "inference"
METRICS = "metrics"  # reading /metrics (a scraper's key needs nothing else)
SCOPES = frozenset({ADMIN, INFERENCE, METRICS})


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_CHARS]


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


# The largest rpm, tpm and max_concurrent a key may have (the key store keeps them as 32-bit integers), and the
# largest daily quota (64-bit).
MAX_LIMIT = 2**31 - 1
MAX_DAILY_TOKENS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class KeyRights:
    """What a key may do; None means no limit."""

    scopes: frozenset[str] = frozenset({INFERENCE})
    models: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    max_concurrent: int | None = None
    expires_at: dt.datetime | None = None

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request, as its key describes it. `key_id` is None when auth is off."""

    key_id: str | None
    user: str | None
    prefix: str | None
    rights: KeyRights = field(default_factory=KeyRights)

    def require(self, scope: str) -> None:
        if scope not in self.rights.scopes and not self.rights.admin:
            raise Forbidden(f"This key does not have the '{scope}' scope.")

    def require_model(self, model: str) -> None:
        if not self.rights.may_use(model):
            raise Forbidden(f"This key may not use the model '{model}'.", param="model")


ANONYMOUS = Principal(key_id=None, user=None, prefix=None, rights=KeyRights(scopes=SCOPES))
"""Who is calling when auth is off: anyone may do anything."""


def _within(requested: int | None, own: int | None) -> bool:
    return own is None or (requested is not None and requested <= own)


def check_delegation(creator: KeyRights, requested: KeyRights) -> None:
    """A key may only create keys with no more rights than its own; Forbidden names what exceeds them."""
    if not creator.admin:
        raise Forbidden("Only admin keys manage keys.")
    grantable = creator.scopes | ({METRICS} if creator.admin else set())  # an admin may make scraper keys
    if not requested.scopes <= grantable:
        raise Forbidden("A key cannot grant scopes it does not have.")
    if creator.models is not None and (requested.models is None or not requested.models <= creator.models):
        raise Forbidden("A key limited to some models can only create keys limited to those models.")
    for name in ("rpm", "tpm", "daily_tokens", "max_concurrent"):
        if not _within(getattr(requested, name), getattr(creator, name)):
            raise Forbidden(f"A key cannot grant more than its own {name}.")
    if creator.expires_at is not None and (requested.expires_at is None or requested.expires_at > creator.expires_at):
        raise Forbidden("A key cannot create keys that outlive it.")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    user: str
    name: str | None
    prefix: str
    rights: KeyRights
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    def expired(self, now: dt.datetime) -> bool:
        return self.rights.expires_at is not None and self.rights.expires_at <= now


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    created_at: dt.datetime
    keys: int


def parse_import(text: str) -> list[tuple[str, str]]:
    """Lines `key_id:api_key` (blank lines and #-comments skipped); BadRequest names the first bad line."""
    pairs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        if not sep or not name.strip() or len(secret.strip()) < 16:
            raise BadRequest(f"line {number}: expected key_id:api_key with a key of at least 16 characters")
        pairs.append((name.strip(), secret.strip()))
    return pairs
