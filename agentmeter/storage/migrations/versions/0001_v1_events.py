"""Schema version 1: the events table and the schema-version table (agentmeter 0.1).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A database written by agentmeter 0.1 has exactly these tables but no Alembic
version table: it is stamped at this revision before the upgrade runs.
Frozen: a revision never imports agentmeter's live schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agentmeter_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("call_id", sa.Text, nullable=False),
        sa.Column("ts", sa.Float(precision=53), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("model", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_micros", sa.BigInteger),
        sa.Column("latency_ms", sa.Float(precision=53)),
        sa.Column("session_id", sa.Text),
        sa.Column("agent_id", sa.Text),
        sa.Column("scope_path", sa.Text),
        sa.Column("tool", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("estimated", sa.SmallInteger, nullable=False),
        sa.Column("tokens_saved", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.Text),
        sa.Column("latency_bucket", sa.Integer),
    )
    op.create_index("ix_agentmeter_events_ts", "agentmeter_events", ["ts"])
    op.create_index("ix_agentmeter_events_session", "agentmeter_events", ["session_id", "ts"])
    op.create_index("ix_agentmeter_events_agent", "agentmeter_events", ["agent_id"])
    op.create_index("ix_agentmeter_events_model", "agentmeter_events", ["model"])
    op.create_index("ix_agentmeter_events_tool", "agentmeter_events", ["tool"])
    op.create_index("ux_agentmeter_events_call_id", "agentmeter_events", ["call_id"], unique=True)
    schema = op.create_table("agentmeter_schema", sa.Column("version", sa.Integer, nullable=False))
    op.bulk_insert(schema, [{"version": 1}])


def downgrade() -> None:
    raise NotImplementedError("agentmeter's schema is never downgraded")
