"""Users and API keys in the database. Secrets are hashed before they get here and never come back out."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from somner.errors import BadRequest, NotFound
from somner.gateway.keys import (
    KeyRecord,
    KeyRights,
    UserRecord,
    display_prefix,
    hash_secret,
    new_key_id,
    new_secret,
    same_hash,
)
from somner.store.db import Database, StoreUnavailable, as_utc, utcnow
from somner.store.tables import api_keys, users


def _record(row: RowMapping) -> KeyRecord:
    models = json.loads(row["models"]) if row["models"] else None
    return KeyRecord(
        id=row["id"],
        user=row["user_name"],
        name=row["name"],
        prefix=row["prefix"],
        rights=KeyRights(
            scopes=frozenset(s for s in row["scopes"].split(",") if s),
            models=frozenset(models) if models is not None else None,
            rpm=row["rpm"],
            tpm=row["tpm"],
            daily_tokens=row["daily_tokens"],
            max_concurrent=row["max_concurrent"],
            expires_at=as_utc(row["expires_at"]),
        ),
        created_at=as_utc(row["created_at"]) or utcnow(),
        revoked_at=as_utc(row["revoked_at"]),
    )


def _rights_columns(rights: KeyRights) -> dict[str, Any]:
    """The columns that hold a key's rights (what `_record` reads back)."""
    return {
        "scopes": ",".join(sorted(rights.scopes)),
        "models": json.dumps(sorted(rights.models)) if rights.models is not None else None,
        "rpm": rights.rpm,
        "tpm": rights.tpm,
        "daily_tokens": rights.daily_tokens,
        "max_concurrent": rights.max_concurrent,
        "expires_at": rights.expires_at,
    }


_KEY_COLUMNS = [c for c in api_keys.c if c.name != "secret_hash"]


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users --

    async def add_user(self, name: str) -> UserRecord:
        if not name or len(name) > 128 or not name.isprintable():
            raise BadRequest("A user name is 1-128 printable characters.", param="name")
        try:
            async with self.db.connect() as connection:
                await connection.execute(insert(users).values(name=name, created_at=utcnow()))
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise BadRequest(f"The user '{name}' already exists.", param="name") from None
            raise
        return UserRecord(name=name, created_at=utcnow(), keys=0)

    async def list_users(self) -> list[UserRecord]:
        query = (
            select(users.c.name, users.c.created_at, func.count(api_keys.c.id).label("keys"))
            .select_from(
                users.outerjoin(api_keys, (api_keys.c.user_id == users.c.id) & api_keys.c.revoked_at.is_(None))
            )
            .group_by(users.c.id, users.c.name, users.c.created_at)
            .order_by(users.c.name)
        )
        async with self.db.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [UserRecord(r["name"], as_utc(r["created_at"]) or utcnow(), int(r["keys"])) for r in rows]

    async def remove_user(self, name: str) -> None:
        async with self.db.connect() as connection:
            user_id = await self._user_id(connection, name)
            await connection.execute(delete(api_keys).where(api_keys.c.user_id == user_id))
            await connection.execute(delete(users).where(users.c.id == user_id))

    @staticmethod
    async def _user_id(connection: AsyncConnection, name: str) -> int:
        result = await connection.execute(select(users.c.id).where(users.c.name == name))
        user_id = result.scalar()
        if user_id is None:
            raise NotFound(f"There is no user '{name}'.", param="user")
        return int(user_id)

    # -- keys --

    async def create_key(
        self,
        user: str,
        rights: KeyRights,
        *,
        secret: str | None = None,
        name: str | None = None,
        create_user: bool = False,
    ) -> tuple[KeyRecord, str]:
        """A new key for `user`; returns the record and the secret (shown once, never stored)."""
        secret = secret or new_secret()
        key_id = new_key_id()
        now = utcnow()
        async with self.db.connect() as connection:
            try:
                user_id = await self._user_id(connection, user)
            except NotFound:
                if not create_user:
                    raise
                await connection.execute(insert(users).values(name=user, created_at=now))
                user_id = await self._user_id(connection, user)
            await connection.execute(
                insert(api_keys).values(
                    id=key_id,
                    user_id=user_id,
                    name=name,
                    prefix=display_prefix(secret),
                    secret_hash=hash_secret(secret),
                    **_rights_columns(rights),
                    created_at=now,
                )
            )
        record = await self.get(key_id)
        return record, secret

    def _select(self) -> Select[Any]:
        return select(*_KEY_COLUMNS, users.c.name.label("user_name")).select_from(
            api_keys.join(users, api_keys.c.user_id == users.c.id)
        )

    async def get(self, key_id: str) -> KeyRecord:
        async with self.db.connect() as connection:
            row = (await connection.execute(self._select().where(api_keys.c.id == key_id))).mappings().first()
        if row is None:
            raise NotFound(f"There is no key '{key_id}'.", param="key")
        return _record(row)

    async def list_keys(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        query = self._select().order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.db.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def find(self, secret: str) -> KeyRecord | None:
        """The key whose secret this is (revoked and expired ones included: the caller says why they fail)."""
        digest = hash_secret(secret)
        query = self._select().add_columns(api_keys.c.secret_hash).where(api_keys.c.secret_hash == digest)
        async with self.db.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is None or not same_hash(row["secret_hash"], digest):
            return None
        return _record(row)

    async def revoke(self, key_id: str) -> KeyRecord:
        async with self.db.connect() as connection:
            result = await connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        if result.rowcount == 0:
            await self.get(key_id)  # NotFound if it never existed
        return await self.get(key_id)

    async def update(self, key_id: str, rights: KeyRights) -> KeyRecord:
        """New rights (limits, quotas, expiry, scopes, models) for an active key; its secret, user and name stay."""
        async with self.db.connect() as connection:
            result = await connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(**_rights_columns(rights))
            )
        if result.rowcount == 0:
            await self.get(key_id)  # NotFound if it never existed
            raise BadRequest(f"The key '{key_id}' is revoked; create a new one instead.", param="key")
        return await self.get(key_id)

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret with the same user and rights; the old key is revoked."""
        old = await self.get(key_id)
        if old.revoked_at is not None:
            raise BadRequest(f"The key '{key_id}' is revoked; create a new one instead.", param="key")
        record, secret = await self.create_key(old.user, old.rights, name=old.name)
        await self.revoke(key_id)
        return record, secret

    async def count_active(self) -> int:
        async with self.db.connect() as connection:
            result = await connection.execute(
                select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
            )
        return int(result.scalar() or 0)
