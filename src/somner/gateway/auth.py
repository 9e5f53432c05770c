"""Who is calling: the API key from the request's headers, checked against the key store.

Accepted: `Authorization: Bearer KEY` (OpenAI and Ollama clients), `x-api-key: KEY` (Anthropic and TabbyAPI
clients), `x-admin-key: KEY` (TabbyAPI's admin calls; it wins when a client sends several, as in TabbyAPI).
Lookups are cached for `cache_ttl` seconds, so a key revoked on another replica stops working within that time;
a revocation through this process takes effect at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping

from somner.errors import Unauthorized, Unavailable
from somner.gateway.keys import KeyRecord, Principal, hash_secret
from somner.store.db import StoreUnavailable
from somner.store.keys import KeyStore


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    admin_key = headers.get("x-admin-key")
    if admin_key and admin_key.strip():
        return admin_key.strip()
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


log = logging.getLogger(__name__)


class Authenticator:
    def __init__(self, keys: KeyStore, cache_ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lookups: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthorized(
                "Missing API key: send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY').", code="missing_api_key"
            )
        digest = hash_secret(secret)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.cache_ttl:
            record = cached[1]
        else:
            record = await self._look_up(secret, digest, now)
        if record is None:
            raise Unauthorized("Invalid API key.")
        if record.revoked_at is not None:
            raise Unauthorized("This API key has been revoked.", code="revoked_api_key")
        if record.expired(dt.datetime.now(dt.UTC)):
            raise Unauthorized("This API key has expired.", code="expired_api_key")
        return Principal(key_id=record.id, user=record.user, prefix=record.prefix, rights=record.rights)

    async def _look_up(self, secret: str, digest: str, now: float) -> KeyRecord | None:
        """One store lookup per key at a time: when a busy key's cache entry expires, the requests in flight all
        wait for the one lookup instead of each querying the database (a stampede every `cache_ttl`)."""
        pending = self._lookups.get(digest)
        if pending is None:
            pending = self._lookups[digest] = asyncio.ensure_future(self.keys.find(secret))
            pending.add_done_callback(lambda done: self._settled(digest, done))
        try:
            record = await asyncio.shield(pending)
        except StoreUnavailable as exc:
            log.error("cannot check an API key: %s", exc)
            raise Unavailable("The key store is unavailable.", headers={"Retry-After": "5"}) from exc
        self._cache[digest] = (now, record)
        if len(self._cache) > 10_000:
            self._cache.clear()
        return record

    def _settled(self, digest: str, done: asyncio.Future[KeyRecord | None]) -> None:
        self._lookups.pop(digest, None)
        if not done.cancelled():
            done.exception()  # (retrieved here too, in case every waiter was cancelled meanwhile)

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached lookups (of one key, or all): after a revocation or rotation through this process."""
        if key_id is None:
            self._cache.clear()
            return
        for digest, (_, record) in list(self._cache.items()):
            if record is not None and record.id == key_id:
                del self._cache[digest]
