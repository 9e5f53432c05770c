"""The usage report's covering index: time first, then every column the console's usage queries group or sum, so
that they read the index alone (see `store/usage_report.py`). It replaces the plain index on time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = [
    "time",
    "key_id",
    "model",
    "user_name",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
]


def upgrade() -> None:
    op.create_index("ix_usage_time_report", "usage", COLUMNS)
    op.drop_index("ix_usage_time", table_name="usage")


def downgrade() -> None:
    op.create_index("ix_usage_time", "usage", ["time"])
    op.drop_index("ix_usage_time_report", table_name="usage")
