"""`somner users ...`, `somner keys ...`, `somner usage`: offline, on the database the server uses (found through
the same settings as `serve`: --config, --data-dir, SOMNER_DATA_DIR, SOMNER_DATABASE__URL)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from somner.cli.common import load_or_exit
from somner.errors import SomnerError
from somner.gateway.keys import MAX_DAILY_TOKENS, MAX_LIMIT, KeyRecord
from somner.settings import resolve_data_dir
from somner.store.db import Database, StoreUnavailable, sqlite_url
from somner.store.keys import KeyStore
from somner.store.usage import UsageStore

T = TypeVar("T")

users_app = typer.Typer(help="Manage users (offline, on the server's database).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys (offline, on the server's database).", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML configuration file.")
DataDirOption = typer.Option(None, "--data-dir", help="Data directory (see `somner serve --help`).")


def _run(config: Path | None, data_dir: Path | None, work: Callable[[KeyStore, UsageStore], Awaitable[T]]) -> T:
    settings = load_or_exit(config, {"data_dir": data_dir})
    directory = resolve_data_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    url = settings.database.url.get_secret_value() if settings.database.url else sqlite_url(directory / "somner.db")

    async def main() -> T:
        db = Database(url)
        try:
            await db.migrate()
            return await work(KeyStore(db), UsageStore(db))
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except SomnerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except StoreUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@users_app.command("add")
def users_add(name: str, config: Path | None = ConfigOption, data_dir: Path | None = DataDirOption) -> None:
    """Add a user."""
    _run(config, data_dir, lambda keys, _: keys.add_user(name))
    typer.echo(f"user {name} added")


@users_app.command("list")
def users_list(config: Path | None = ConfigOption, data_dir: Path | None = DataDirOption) -> None:
    """List users and how many active keys each has."""
    users = _run(config, data_dir, lambda keys, _: keys.list_users())
    rows = [["NAME", "KEYS", "CREATED"]] + [[u.name, str(u.keys), u.created_at.strftime("%Y-%m-%d")] for u in users]
    typer.echo(_table(rows))


@users_app.command("rm")
def users_rm(name: str, config: Path | None = ConfigOption, data_dir: Path | None = DataDirOption) -> None:
    """Remove a user and their keys."""
    _run(config, data_dir, lambda keys, _: keys.remove_user(name))
    typer.echo(f"user {name} removed (and their keys)")


def _scopes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in ("inference", "metrics")]
    if unknown or not chosen:
        typer.echo(f"error: unknown scope(s) {', '.join(unknown) or '(none)'}: use inference, metrics", err=True)
        raise typer.Exit(2)
    return chosen


def _models(value: str | None) -> list[str] | None:
    return [m.strip() for m in value.split(",") if m.strip()] if value else None


# The options that set a key's rights: the same (and the same checks) for `keys create` and `keys update`.
ScopesOption = typer.Option(
    None, "--scopes", help="Comma-separated scopes: inference (the default), metrics (reading /metrics)."
)
ModelsOption = typer.Option(None, "--models", help="Comma-separated models the key may use.")
RpmOption = typer.Option(None, "--rpm", min=1, max=MAX_LIMIT, help="Requests per minute.")
TpmOption = typer.Option(None, "--tpm", min=1, max=MAX_LIMIT, help="Tokens per minute (prompt + completion).")
DailyTokensOption = typer.Option(None, "--daily-tokens", min=1, max=MAX_DAILY_TOKENS, help="Tokens per UTC day.")
MaxConcurrentOption = typer.Option(None, "--max-concurrent", min=1, max=MAX_LIMIT, help="Requests at once.")
ExpiresOption = typer.Option(None, "--expires", help="Lifetime from now, e.g. 30d or 12h.")


@keys_app.command("create")
def keys_create(
    user: str = typer.Option(..., "--user", help="The key's user (created if new)."),
    admin: bool = typer.Option(False, "--admin", help="Admin scope: everything, including key management."),
    scopes: str | None = ScopesOption,
    models: str | None = ModelsOption,
    rpm: int | None = RpmOption,
    tpm: int | None = TpmOption,
    daily_tokens: int | None = DailyTokensOption,
    max_concurrent: int | None = MaxConcurrentOption,
    expires: str | None = ExpiresOption,
    name: str | None = typer.Option(None, "--name", help="A label for the key."),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Create an API key and print it (the only time it is shown)."""
    from somner.api.admin.keys import rights_for

    try:
        rights = rights_for(
            admin=admin,
            scopes=_scopes(scopes),
            models=_models(models),
            rpm=rpm,
            tpm=tpm,
            daily_tokens=daily_tokens,
            max_concurrent=max_concurrent,
            expires=expires,
        )
    except SomnerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    record, secret = _run(config, data_dir, lambda keys, _: keys.create_key(user, rights, name=name, create_user=True))
    typer.echo(f"{record.id} ({record.user}): {secret}")
    typer.echo("Store this key now: it cannot be shown again.", err=True)


def _limits(r: Any) -> str:
    parts = [f"{n}={getattr(r, n)}" for n in ("rpm", "tpm", "daily_tokens", "max_concurrent") if getattr(r, n)]
    return ",".join(parts) or "-"


@keys_app.command("list")
def keys_list(
    all_keys: bool = typer.Option(False, "--all", help="Include revoked keys."),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """List keys (prefixes only: secrets are never stored)."""
    keys = _run(config, data_dir, lambda store, _: store.list_keys(include_revoked=all_keys))
    rows = [["ID", "PREFIX", "USER", "SCOPES", "MODELS", "LIMITS", "EXPIRES", "STATE"]]
    for k in keys:
        r = k.rights
        rows.append(
            [
                k.id,
                k.prefix + "...",
                k.user,
                ",".join(sorted(r.scopes)),
                ",".join(sorted(r.models)) if r.models is not None else "all",
                _limits(r),
                r.expires_at.strftime("%Y-%m-%d %H:%M") if r.expires_at else "never",
                "revoked" if k.revoked_at else "active",
            ]
        )
    typer.echo(_table(rows))


# What `keys update --unset NAME` lifts, by the flag's name.
_UNSETTABLE = {
    "rpm": "rpm",
    "tpm": "tpm",
    "daily-tokens": "daily_tokens",
    "max-concurrent": "max_concurrent",
    "expires": "expires",
    "models": "models",
}


@keys_app.command("update")
def keys_update(
    key_id: str,
    admin: bool | None = typer.Option(None, "--admin/--no-admin", help="Give or take away the admin scope."),
    scopes: str | None = ScopesOption,
    models: str | None = ModelsOption,
    rpm: int | None = RpmOption,
    tpm: int | None = TpmOption,
    daily_tokens: int | None = DailyTokensOption,
    max_concurrent: int | None = MaxConcurrentOption,
    expires: str | None = ExpiresOption,
    unset: list[str] | None = typer.Option(
        None, "--unset", help=f"Lift a limit (repeatable): {', '.join(_UNSETTABLE)}."
    ),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Change a key's limits, quotas, expiry, scopes or models (only those given); its secret stays the same.

    A running server reads the new values within `auth.cache_ttl`."""
    from somner.api.admin.keys import KeyUpdate, updated_rights

    given = {
        "admin": admin,
        "scopes": _scopes(scopes),
        "models": _models(models),
        "rpm": rpm,
        "tpm": tpm,
        "daily_tokens": daily_tokens,
        "max_concurrent": max_concurrent,
        "expires": expires,
    }
    changes: dict[str, Any] = {field: value for field, value in given.items() if value is not None}
    for flag in unset or []:
        field = _UNSETTABLE.get(flag)
        if field is None:
            typer.echo(f"error: --unset takes {', '.join(_UNSETTABLE)}, not '{flag}'", err=True)
            raise typer.Exit(2)
        if field in changes:
            typer.echo(f"error: --{flag} and --unset {flag} contradict each other", err=True)
            raise typer.Exit(2)
        changes[field] = None
    if not changes:
        typer.echo("error: nothing to change: give a limit (--rpm, --tpm, ...) or --unset", err=True)
        raise typer.Exit(2)
    update = KeyUpdate.model_validate(changes)

    async def work(keys: KeyStore, _: UsageStore) -> KeyRecord:
        old = await keys.get(key_id)
        return await keys.update(old.id, updated_rights(old.rights, update))

    record = _run(config, data_dir, work)
    r = record.rights
    models_text = ",".join(sorted(r.models)) if r.models is not None else "all"
    expiry = r.expires_at.strftime("%Y-%m-%d %H:%M") if r.expires_at else "never"
    typer.echo(
        f"{record.id} ({record.user}) updated: scopes {','.join(sorted(r.scopes))}, models {models_text}, "
        f"limits {_limits(r)}, expires {expiry}"
    )


@keys_app.command("rotate")
def keys_rotate(key_id: str, config: Path | None = ConfigOption, data_dir: Path | None = DataDirOption) -> None:
    """Replace a key's secret (same user and limits); the old secret stops working."""
    record, secret = _run(config, data_dir, lambda keys, _: keys.rotate(key_id))
    typer.echo(f"{record.id} ({record.user}): {secret}")
    typer.echo(f"{key_id} is revoked. Store the new key now: it cannot be shown again.", err=True)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: Path | None = ConfigOption, data_dir: Path | None = DataDirOption) -> None:
    """Revoke a key."""
    _run(config, data_dir, lambda keys, _: keys.revoke(key_id))
    typer.echo(f"{key_id} revoked")


@keys_app.command("import")
def keys_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Lines key_id:api_key."),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Import keys from lines `key_id:api_key` (each key_id becomes a user with an inference key)."""
    from somner.gateway.keys import KeyRights, parse_import

    try:
        pairs = parse_import(file.read_text(encoding="utf-8"))
    except SomnerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None

    async def work(keys: KeyStore, _: UsageStore) -> int:
        for name, secret in pairs:
            await keys.create_key(name, KeyRights(), secret=secret, name=name, create_user=True)
        return len(pairs)

    count = _run(config, data_dir, work)
    typer.echo(f"imported {count} keys")


def usage(
    since: str = typer.Option("7d", "--since", help="How far back, e.g. 24h or 7d."),
    by: str = typer.Option("user", "--by", help="Group by user, key, model or day."),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Requests and tokens per user, key, model or day."""
    from somner.api.admin.usage import GROUPS, since_of

    if by not in GROUPS:
        typer.echo(f"error: --by is one of {', '.join(GROUPS)}", err=True)
        raise typer.Exit(1)
    try:
        start = since_of(since)
    except SomnerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    rows = _run(config, data_dir, lambda _, store: store.summary(start, by))  # type: ignore[arg-type]
    table = [[by.upper(), "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "ERRORS"]]
    for row in rows:
        table.append(
            [
                str(row[by]),
                str(row["requests"]),
                str(row["prompt_tokens"]),
                str(row["completion_tokens"]),
                str(row["cached_tokens"]),
                str(row["errors"]),
            ]
        )
    typer.echo(_table(table))
