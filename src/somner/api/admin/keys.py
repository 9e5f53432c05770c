"""Users and API keys over HTTP (admin keys only): the same operations as `somner users|keys ...`.

A key can never create a key with more rights than its own, nor change a key's rights beyond its own.
Secrets appear once, in the answer that creates them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from somner.api.body import read_body
from somner.api.handlers import services_of
from somner.api.openai.routes import openai_endpoint
from somner.api.principal import require_admin
from somner.durations import parse_duration
from somner.errors import BadRequest
from somner.gateway.keys import (
    ADMIN,
    INFERENCE,
    MAX_DAILY_TOKENS,
    MAX_LIMIT,
    KeyRecord,
    KeyRights,
    UserRecord,
    check_delegation,
    parse_import,
)
from somner.wire.body import validation_error

_MAX_BODY = 1024 * 1024


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=128)


class KeyRightsFields(BaseModel):
    """The fields that set a key's rights: the same, with the same checks, when a key is created and updated."""

    model_config = ConfigDict(extra="forbid", strict=True)
    admin: bool = False
    scopes: list[Literal["inference", "metrics"]] | None = None  # default: inference
    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    daily_tokens: int | None = Field(default=None, ge=1, le=MAX_DAILY_TOKENS)
    max_concurrent: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    expires: str | int | None = None  # a duration from now: "30d", "12h", or seconds


class KeyCreate(KeyRightsFields):
    user: str = Field(min_length=1, max_length=128)
    name: str | None = None


class KeyUpdate(KeyRightsFields):
    """`PATCH /admin/keys/{key_id}`: only the fields sent change; null lifts a limit (no rpm, no expiry, all
    models; scopes back to the default)."""


def rights_for(
    *,
    admin: bool,
    models: list[str] | None,
    rpm: int | None,
    tpm: int | None,
    daily_tokens: int | None,
    max_concurrent: int | None,
    expires: str | int | None,
    scopes: list[str] | None = None,
) -> KeyRights:
    """The rights of a new key. `scopes` (default: inference) are what it may do; `admin` adds everything."""
    expires_at = None
    if expires is not None:
        try:
            seconds = parse_duration(expires)
        except ValueError as exc:
            raise BadRequest(f"Invalid value for 'expires': {exc}", param="expires") from None
        if seconds <= 0:
            raise BadRequest("'expires' must lie in the future.", param="expires")
        try:
            expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        except OverflowError:  # (past the year 9999)
            raise BadRequest("'expires' lies too far in the future.", param="expires") from None
    return KeyRights(
        scopes=frozenset(scopes if scopes is not None else {INFERENCE}) | ({ADMIN, INFERENCE} if admin else set()),
        models=frozenset(models) if models is not None else None,
        rpm=rpm,
        tpm=tpm,
        daily_tokens=daily_tokens,
        max_concurrent=max_concurrent,
        expires_at=expires_at,
    )


def updated_rights(old: KeyRights, changes: KeyUpdate) -> KeyRights:
    """`old` with the fields sent in `changes`, through the same checks as a new key's (`rights_for`)."""
    sent = changes.model_fields_set
    if not sent:
        fields = ", ".join(KeyUpdate.model_fields)
        raise BadRequest(f"Nothing to change: send at least one of {fields}.")

    def value(name: str, current: Any) -> Any:
        return getattr(changes, name) if name in sent else current

    rights = rights_for(
        admin=value("admin", old.admin),
        scopes=value("scopes", sorted(old.scopes - {ADMIN})),
        models=value("models", sorted(old.models) if old.models is not None else None),
        rpm=value("rpm", old.rpm),
        tpm=value("tpm", old.tpm),
        daily_tokens=value("daily_tokens", old.daily_tokens),
        max_concurrent=value("max_concurrent", old.max_concurrent),
        expires=value("expires", None),
    )
    return rights if "expires" in sent else dataclasses.replace(rights, expires_at=old.expires_at)


def key_json(record: KeyRecord, secret: str | None = None) -> dict[str, Any]:
    rights = record.rights
    body: dict[str, Any] = {
        "id": record.id,
        "user": record.user,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": sorted(rights.scopes),
        "models": sorted(rights.models) if rights.models is not None else None,
        "rpm": rights.rpm,
        "tpm": rights.tpm,
        "daily_tokens": rights.daily_tokens,
        "max_concurrent": rights.max_concurrent,
        "expires_at": rights.expires_at.isoformat() if rights.expires_at else None,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }
    if secret is not None:
        body["key"] = secret  # shown this once
    return body


def user_json(record: UserRecord) -> dict[str, Any]:
    return {"name": record.name, "created_at": record.created_at.isoformat(), "keys": record.keys}


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _body(request: Request) -> bytes:
    return await read_body(request, _MAX_BODY, services_of(request).settings.limits.body_timeout)


async def _parsed(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await _body(request))
    except ValidationError as exc:
        raise validation_error(exc) from None


@openai_endpoint
async def list_users(request: Request) -> Response:
    require_admin(request)
    users = await services_of(request).keys.list_users()
    return _json({"object": "list", "data": [user_json(u) for u in users]})


@openai_endpoint
async def add_user(request: Request) -> Response:
    require_admin(request)
    body: UserCreate = await _parsed(request, UserCreate)
    return _json(user_json(await services_of(request).keys.add_user(body.name)), 201)


@openai_endpoint
async def remove_user(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    await services.keys.remove_user(request.path_params["name"])
    services.auth.forget()
    return _json({"deleted": request.path_params["name"]})


@openai_endpoint
async def list_keys(request: Request) -> Response:
    require_admin(request)
    keys = await services_of(request).keys.list_keys(include_revoked=request.query_params.get("all") == "true")
    return _json({"object": "list", "data": [key_json(k) for k in keys]})


@openai_endpoint
async def create_key(request: Request) -> Response:
    principal = require_admin(request)
    body: KeyCreate = await _parsed(request, KeyCreate)
    rights = rights_for(
        admin=body.admin,
        scopes=list(body.scopes) if body.scopes is not None else None,
        models=body.models,
        rpm=body.rpm,
        tpm=body.tpm,
        daily_tokens=body.daily_tokens,
        max_concurrent=body.max_concurrent,
        expires=body.expires,
    )
    check_delegation(principal.rights, rights)
    record, secret = await services_of(request).keys.create_key(body.user, rights, name=body.name, create_user=True)
    return _json(key_json(record, secret), 201)


@openai_endpoint
async def rotate_key(request: Request) -> Response:
    principal = require_admin(request)
    services = services_of(request)
    old = await services.keys.get(request.path_params["key_id"])
    check_delegation(principal.rights, old.rights)
    record, secret = await services.keys.rotate(old.id)
    services.auth.forget(old.id)
    return _json(key_json(record, secret))


@openai_endpoint
async def update_key(request: Request) -> Response:
    principal = require_admin(request)
    body: KeyUpdate = await _parsed(request, KeyUpdate)
    services = services_of(request)
    old = await services.keys.get(request.path_params["key_id"])
    check_delegation(principal.rights, old.rights)
    rights = updated_rights(old.rights, body)
    check_delegation(principal.rights, rights)
    if old.id == principal.key_id and not rights.admin:
        raise BadRequest("A key cannot take away its own admin scope: use another admin key.", param="admin")
    record = await services.keys.update(old.id, rights)
    services.auth.forget(old.id)  # the next request with this key reads its new rights
    return _json(key_json(record))


@openai_endpoint
async def revoke_key(request: Request) -> Response:
    require_admin(request)
    services = services_of(request)
    record = await services.keys.revoke(request.path_params["key_id"])
    services.auth.forget(record.id)
    return _json(key_json(record))


@openai_endpoint
async def import_keys(request: Request) -> Response:
    principal = require_admin(request)
    check_delegation(principal.rights, KeyRights())
    pairs = parse_import((await _body(request)).decode("utf-8", errors="replace"))
    services = services_of(request)
    created = []
    for name, secret in pairs:
        record, _ = await services.keys.create_key(name, KeyRights(), secret=secret, name=name, create_user=True)
        created.append(key_json(record))
    return _json({"object": "list", "data": created}, 201)


def key_routes() -> list[BaseRoute]:
    return [
        Route("/admin/users", list_users, methods=["GET"]),
        Route("/admin/users", add_user, methods=["POST"]),
        Route("/admin/users/{name}", remove_user, methods=["DELETE"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys/import", import_keys, methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
        Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
        Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
    ]
