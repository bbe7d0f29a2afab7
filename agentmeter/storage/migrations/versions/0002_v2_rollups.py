"""Schema version 2: customer and tags on events, hourly rollups built from the events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

- ``agentmeter_events`` gets ``customer_id`` and ``tags`` (canonical JSON); the
  agent / model / tool indexes (reads now come from the rollups) give way to the
  two indexes of the "recent call ids" queries.
- ``agentmeter_rollup``, ``agentmeter_rollup_latency``, ``agentmeter_rollup_tags``
  are created and filled from the existing events with one ``GROUP BY`` each, in
  the same transaction: every stored event is counted once.
- ``agentmeter_schema.version`` becomes 2.

Frozen: a revision never imports agentmeter's live schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EVENTS = "agentmeter_events"
DIMS = ("customer_id", "session_id", "agent_id", "model", "provider", "tool", "kind")
LATENCY_DIMS = ("customer_id", "session_id", "agent_id", "tool")


def _dims(names: tuple[str, ...]) -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column(n, sa.Text, nullable=False, server_default="") for n in names]


def _counters() -> list[sa.Column]:  # type: ignore[type-arg]
    big = [
        "events",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "failed",
        "estimated",
        "cost_micros",
        "unpriced",
    ]
    return [
        *(sa.Column(n, sa.BigInteger, nullable=False, server_default="0") for n in big),
        sa.Column("latency_ms", sa.Float(precision=53), nullable=False, server_default="0"),
        sa.Column("latency_min", sa.Float(precision=53)),
        sa.Column("latency_max", sa.Float(precision=53)),
        sa.Column("tokens_saved", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("category", sa.Text, nullable=False, server_default=""),
        sa.Column("category_seq", sa.BigInteger),
    ]


def _hour(dialect: str, ts: str) -> str:
    """floor(ts / 3600) * 3600 as an integer -- the writer's arithmetic."""
    if dialect == "postgresql":
        return f"CAST(floor({ts} / 3600) AS BIGINT) * 3600"
    return f"(CAST({ts} / 3600 AS INTEGER) - ({ts} / 3600 < CAST({ts} / 3600 AS INTEGER))) * 3600"


def _aggregates(e: str) -> str:
    return (
        f"count(*), sum({e}input_tokens), sum({e}output_tokens), sum({e}cache_read_tokens), "
        f"sum({e}cache_write_tokens), sum({e}reasoning_tokens), "
        f"sum(CASE WHEN {e}status = 'error' THEN 1 ELSE 0 END), sum({e}estimated), "
        f"sum(coalesce({e}cost_micros, 0)), "
        f"sum(CASE WHEN {e}cost_micros IS NULL THEN 1 ELSE 0 END), "
        f"sum(coalesce({e}latency_ms, 0)), min({e}latency_ms), max({e}latency_ms), "
        f"sum({e}tokens_saved), '', max(CASE WHEN {e}category <> '' THEN {e}id END)"
    )


COUNTER_COLS = (
    "events, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "reasoning_tokens, failed, estimated, cost_micros, unpriced, latency_ms, latency_min, "
    "latency_max, tokens_saved, category, category_seq"
)


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    insp = sa.inspect(bind)
    cols = {c["name"] for c in insp.get_columns(EVENTS)}
    for name in ("customer_id", "tags"):
        if name not in cols:  # (development databases of the 0.2 cycle already have them)
            op.add_column(EVENTS, sa.Column(name, sa.Text))
    indexes = {i["name"] for i in insp.get_indexes(EVENTS)}
    for old in (
        "ix_agentmeter_events_agent",
        "ix_agentmeter_events_model",
        "ix_agentmeter_events_tool",
    ):
        if old in indexes:
            op.drop_index(old, table_name=EVENTS)
    if "ix_agentmeter_events_tool_session" not in indexes:
        op.create_index("ix_agentmeter_events_tool_session", EVENTS, ["tool", "session_id", "id"])
    if "ix_agentmeter_events_customer" not in indexes:
        op.create_index("ix_agentmeter_events_customer", EVENTS, ["customer_id", "tool", "id"])
    existing = set(insp.get_table_names())
    for name in ("agentmeter_rollup_tags", "agentmeter_rollup_latency", "agentmeter_rollup"):
        if name in existing:  # development databases: rebuilt from the events below
            op.drop_table(name)

    op.create_table(
        "agentmeter_rollup",
        sa.Column("hour", sa.BigInteger, nullable=False),
        *_dims(DIMS),
        *_counters(),
        sa.PrimaryKeyConstraint("hour", *DIMS, name="pk_agentmeter_rollup"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_agentmeter_rollup_session", "agentmeter_rollup", ["session_id", "hour"])
    op.create_index("ix_agentmeter_rollup_customer", "agentmeter_rollup", ["customer_id", "hour"])
    op.create_table(
        "agentmeter_rollup_latency",
        sa.Column("hour", sa.BigInteger, nullable=False),
        *_dims(LATENCY_DIMS),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(
            "hour", *LATENCY_DIMS, "bucket", name="pk_agentmeter_rollup_latency"
        ),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_agentmeter_rollup_latency_session", "agentmeter_rollup_latency", ["session_id", "hour"]
    )
    op.create_index(
        "ix_agentmeter_rollup_latency_customer",
        "agentmeter_rollup_latency",
        ["customer_id", "hour"],
    )
    op.create_table(
        "agentmeter_rollup_tags",
        sa.Column("tag_key", sa.Text, nullable=False),
        sa.Column("tag_value", sa.Text, nullable=False),
        sa.Column("hour", sa.BigInteger, nullable=False),
        *_dims(DIMS),
        *_counters(),
        sa.PrimaryKeyConstraint(
            "tag_key", "tag_value", "hour", *DIMS, name="pk_agentmeter_rollup_tags"
        ),
        sqlite_with_rowid=False,
    )

    # Backfill: every stored event once, by the writer's own hour arithmetic.
    dims = ", ".join(f"coalesce({d}, '')" for d in DIMS[:-1]) + ", kind"
    op.execute(
        f"INSERT INTO agentmeter_rollup (hour, {', '.join(DIMS)}, {COUNTER_COLS}) "
        f"SELECT {_hour(dialect, 'ts')}, {dims}, {_aggregates('')} "
        f"FROM {EVENTS} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
    tag_fn = (
        "jsonb_each_text(CAST(e.tags AS JSONB))" if dialect == "postgresql" else "json_each(e.tags)"
    )
    e_dims = ", ".join(f"coalesce(e.{d}, '')" for d in DIMS[:-1]) + ", e.kind"
    op.execute(
        f"INSERT INTO agentmeter_rollup_tags (tag_key, tag_value, hour, {', '.join(DIMS)}, "
        f"{COUNTER_COLS}) SELECT t.key, t.value, {_hour(dialect, 'e.ts')}, {e_dims}, "
        f"{_aggregates('e.')} FROM {EVENTS} e, {tag_fn} AS t "
        f"WHERE e.tags IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    )
    for table in ("agentmeter_rollup", "agentmeter_rollup_tags"):
        op.execute(
            f"UPDATE {table} SET category = coalesce((SELECT c.category FROM {EVENTS} c "
            f"WHERE c.id = {table}.category_seq), '') WHERE category_seq IS NOT NULL"
        )
    lat_dims = ", ".join(f"coalesce({d}, '')" for d in LATENCY_DIMS)
    op.execute(
        f"INSERT INTO agentmeter_rollup_latency (hour, {', '.join(LATENCY_DIMS)}, bucket, calls) "
        f"SELECT {_hour(dialect, 'ts')}, {lat_dims}, latency_bucket, count(*) FROM {EVENTS} "
        "WHERE kind = 'tool' AND latency_bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6"
    )
    op.execute("UPDATE agentmeter_schema SET version = 2")


def downgrade() -> None:
    raise NotImplementedError("agentmeter's schema is never downgraded")
