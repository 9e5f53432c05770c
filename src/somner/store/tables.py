"""The schema (SQLAlchemy Core). Changes go through a new Alembic migration in `store/migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public: shown in lists, used to revoke and rotate
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(128)),
    Column("prefix", String(24), nullable=False),  # the first characters of the secret, for display
    Column("secret_hash", String(64), nullable=False, unique=True),  # SHA-256 hex; the secret itself is never kept
    Column("scopes", String(64), nullable=False),
    Column("models", Text),  # JSON list of allowed model names, or NULL for all
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("daily_tokens", BigInteger),
    Column("max_concurrent", Integer),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("record_id", String(32), nullable=False, unique=True),  # replays of a spooled record are no-ops
    Column("request_id", String(128)),  # the X-Request-Id (clients may reuse theirs)
    Column("time", DateTime(timezone=True), nullable=False),
    Column("user_name", String(128)),
    Column("key_id", String(32)),
    Column("model", String(128)),
    Column("dialect", String(16), nullable=False),
    Column("route", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("ttft_ms", Float),
    Column("latency_ms", Float, nullable=False),
    Column("bytes_in", Integer, nullable=False),
    Column("bytes_out", Integer, nullable=False),
    Column("disconnected", Boolean, nullable=False),
    Column("prompt_text", Text),  # only with log_requests: true
    Column("completion_text", Text),
    # (The usage report's covering index, migration 0002: time, then what its queries group and sum.)
    Index(
        "ix_usage_time_report",
        "time",
        "key_id",
        "model",
        "user_name",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "ttft_ms",
    ),
    Index("ix_usage_key_time", "key_id", "time"),
)
