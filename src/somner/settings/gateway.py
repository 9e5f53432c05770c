"""The gateway's sections: who may ask (`auth`), how much and when (`limits`), where records go (`database`),
where replicas share their counters (`redis`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from somner.settings.types import Duration, Section


class AuthSettings(Section):
    enabled: bool = Field(
        default=True,
        description=(
            "Require an API key on every route but /ping, /health and /ready. Turning it off is refused unless "
            "Somner listens on loopback only (or `somner serve --i-know-auth-is-off` is given)."
        ),
    )
    cache_ttl: Duration = Field(
        default=5.0,
        ge=0,
        description="How long a key lookup is trusted before the database is asked again (a revocation elsewhere "
        "takes effect within this time).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted in the Host header besides localhost and loopback addresses, when listening "
        "on loopback (a guard against DNS rebinding).",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API (CORS is off when empty)."
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="The first admin key, instead of a generated one (usually from SOMNER_AUTH__ADMIN_KEY or "
        "SOMNER_ADMIN_KEY in containers). Must start with 'sk-somner-'.",
    )


class LimitSettings(Section):
    max_concurrent: int = Field(default=32, ge=1, description="Requests served at once, over all keys.")
    max_queue: int = Field(default=256, ge=0, description="Requests waiting for a turn; more get a 503.")
    queue_timeout: Duration = Field(default=60.0, gt=0, description="Longest wait for a turn before a 503.")
    max_headers: int = Field(default=100, ge=8, description="Most request headers accepted (431 above).")
    max_header_bytes: int = Field(default=16384, ge=1024, description="Largest total size of request headers.")
    header_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="Longest time a client may take to send a request's headers, counted from its connection or "
        "the first byte of the request (slow clients holding connections open are closed with a 408).",
    )
    body_timeout: Duration = Field(
        default=60.0,
        gt=0,
        description="Longest time a client may take to send a request's body once its headers are in (408 after).",
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Ceiling on max_tokens a request may ask for.")
    max_messages: int = Field(default=1024, ge=1, description="Most chat messages in one request.")
    max_images: int = Field(default=8, ge=0, description="Most images in one chat request (vision models).")
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="Largest image file, in bytes.")
    max_image_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        description="Largest image, in pixels (width x height, as its header declares), refused before decoding.",
    )
    image_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts whose http(s) image URLs the gateway fetches for chat requests ('*.example.com' for a "
        "domain and its subdomains). Empty: images come as data URLs or base64 only (fetching arbitrary URLs "
        "would let clients reach the server's own network).",
    )


class DatabaseSettings(Section):
    url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL: postgresql+asyncpg://user:password@host/db for PostgreSQL. Default: SQLite "
        "at <data_dir>/somner.db.",
    )
    batch_interval: Duration = Field(
        default=0.5, gt=0, description="Usage records are written in batches at least this often."
    )


class RedisSettings(Section):
    url: SecretStr | None = Field(
        default=None,
        description="redis://[:password@]host:port/db (rediss:// for TLS). When set, rate limits, token quotas and "
        "per-key concurrency are kept in Redis, so several replicas enforce one limit; unset, they stay in this "
        "process's memory. Keys without limits never touch Redis.",
    )
    on_error: Literal["closed", "open"] = Field(
        default="closed",
        description="When Redis cannot be reached: 'closed' refuses requests of keys that have limits with a 503 "
        "(code limits_unavailable, Retry-After); 'open' admits them unchecked and logs a warning once per outage.",
    )
    key_prefix: str = Field(
        default="somner", min_length=1, description="Prefix of every Redis key Somner writes (to share a Redis)."
    )
    connect_timeout: Duration = Field(default=1.0, gt=0, description="Longest wait to connect to Redis.")
    timeout: Duration = Field(default=1.0, gt=0, description="Longest wait for one Redis command.")
    lease_ttl: Duration = Field(
        default=30.0,
        gt=0,
        description="A concurrency slot is renewed while its request runs and expires this long after a replica "
        "stops renewing it (a crashed replica cannot keep a key's slots).",
    )
