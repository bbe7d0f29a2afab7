"""Schema version 2: customer and tags on events, hourly rollups built from the events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

- ``agentmeter_events`` gets ``customer_id`` and ``tags`` (canonical JSON); the
  agent / model / tool indexes (reads now come from the rollups) give way to the
  two indexes of the "recent call ids" queries.
- ``agentmeter_rollup``, ``agentmeter_rollup_latency``, ``agentmeter_rollup_tags``
  (per hour) are created and filled from the existing events with one ``GROUP BY``
  each, in the same transaction: every stored event is counted once; their daily
  twins (``*_daily``, per UTC day) are filled from the hourly rows, the global
  ones (``*_global``, per day without the session) from the daily rows.
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


_TABLES = (
    "agentmeter_rollup_tags",
    "agentmeter_rollup_latency",
    "agentmeter_rollup",
    "agentmeter_rollup_tags_daily",
    "agentmeter_rollup_latency_daily",
    "agentmeter_rollup_daily",
    "agentmeter_rollup_tags_global",
    "agentmeter_rollup_latency_global",
    "agentmeter_rollup_global",
)
GLOBAL_DIMS = tuple(d for d in DIMS if d != "session_id")
GLOBAL_LATENCY_DIMS = tuple(d for d in LATENCY_DIMS if d != "session_id")


def _create(
    suffix: str,
    period: str,
    dims: tuple[str, ...] = DIMS,
    latency_dims: tuple[str, ...] = LATENCY_DIMS,
) -> None:
    """The three rollup tables of one granularity (``hour`` or ``day`` periods; the
    global ones without the session)."""
    main, latency, tags = (
        f"agentmeter_rollup{suffix}",
        f"agentmeter_rollup_latency{suffix}",
        f"agentmeter_rollup_tags{suffix}",
    )
    op.create_table(
        main,
        sa.Column(period, sa.BigInteger, nullable=False),
        *_dims(dims),
        *_counters(),
        sa.PrimaryKeyConstraint(period, *dims, name=f"pk_{main}"),
        sqlite_with_rowid=False,
    )
    if "session_id" in dims:
        op.create_index(f"ix_{main}_session", main, ["session_id", period])
    op.create_index(f"ix_{main}_customer", main, ["customer_id", period])
    op.create_table(
        latency,
        sa.Column(period, sa.BigInteger, nullable=False),
        *_dims(latency_dims),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(period, *latency_dims, "bucket", name=f"pk_{latency}"),
        sqlite_with_rowid=False,
    )
    if "session_id" in latency_dims:
        op.create_index(f"ix_{latency}_session", latency, ["session_id", period])
    op.create_index(f"ix_{latency}_customer", latency, ["customer_id", period])
    op.create_table(
        tags,
        sa.Column("tag_key", sa.Text, nullable=False),
        sa.Column("tag_value", sa.Text, nullable=False),
        sa.Column(period, sa.BigInteger, nullable=False),
        *_dims(dims),
        *_counters(),
        sa.PrimaryKeyConstraint("tag_key", "tag_value", period, *dims, name=f"pk_{tags}"),
        sqlite_with_rowid=False,
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
    for name in _TABLES:
        if name in existing:  # development databases: rebuilt from the events below
            op.drop_table(name)
    for suffix, period in (("", "hour"), ("_daily", "day")):
        _create(suffix, period)
    _create("_global", "day", GLOBAL_DIMS, GLOBAL_LATENCY_DIMS)

    # Backfill: every stored event once, by the writer's own hour arithmetic; the
    # days from the hours (the day of an event is the day of its hour).
    dims = ", ".join(f"coalesce({d}, '')" for d in DIMS[:-1]) + ", kind"
    key = ", ".join(DIMS)
    op.execute(
        f"INSERT INTO agentmeter_rollup (hour, {key}, {COUNTER_COLS}) "
        f"SELECT {_hour(dialect, 'ts')}, {dims}, {_aggregates('')} "
        f"FROM {EVENTS} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
    tag_fn = (
        "jsonb_each_text(CAST(e.tags AS JSONB))" if dialect == "postgresql" else "json_each(e.tags)"
    )
    e_dims = ", ".join(f"coalesce(e.{d}, '')" for d in DIMS[:-1]) + ", e.kind"
    op.execute(
        f"INSERT INTO agentmeter_rollup_tags (tag_key, tag_value, hour, {key}, "
        f"{COUNTER_COLS}) SELECT t.key, t.value, {_hour(dialect, 'e.ts')}, {e_dims}, "
        f"{_aggregates('e.')} FROM {EVENTS} e, {tag_fn} AS t "
        f"WHERE e.tags IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    )
    lat_key = ", ".join(LATENCY_DIMS)
    lat_dims = ", ".join(f"coalesce({d}, '')" for d in LATENCY_DIMS)
    op.execute(
        f"INSERT INTO agentmeter_rollup_latency (hour, {lat_key}, bucket, calls) "
        f"SELECT {_hour(dialect, 'ts')}, {lat_dims}, latency_bucket, count(*) FROM {EVENTS} "
        "WHERE kind = 'tool' AND latency_bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6"
    )
    day = "hour - hour % 86400"
    merged = (
        "sum(events), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
        "sum(cache_write_tokens), sum(reasoning_tokens), sum(failed), sum(estimated), "
        "sum(cost_micros), sum(unpriced), sum(latency_ms), min(latency_min), "
        "max(latency_max), sum(tokens_saved), '', max(category_seq)"
    )
    op.execute(
        f"INSERT INTO agentmeter_rollup_daily (day, {key}, {COUNTER_COLS}) "
        f"SELECT {day}, {key}, {merged} FROM agentmeter_rollup GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    )
    op.execute(
        f"INSERT INTO agentmeter_rollup_tags_daily (tag_key, tag_value, day, {key}, "
        f"{COUNTER_COLS}) SELECT tag_key, tag_value, {day}, {key}, {merged} "
        "FROM agentmeter_rollup_tags GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
    )
    op.execute(
        f"INSERT INTO agentmeter_rollup_latency_daily (day, {lat_key}, bucket, calls) "
        f"SELECT {day}, {lat_key}, bucket, sum(calls) FROM agentmeter_rollup_latency "
        "GROUP BY 1, 2, 3, 4, 5, 6"
    )
    gkey = ", ".join(GLOBAL_DIMS)
    glat = ", ".join(GLOBAL_LATENCY_DIMS)
    op.execute(
        f"INSERT INTO agentmeter_rollup_global (day, {gkey}, {COUNTER_COLS}) "
        f"SELECT day, {gkey}, {merged} FROM agentmeter_rollup_daily "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    op.execute(
        f"INSERT INTO agentmeter_rollup_tags_global (tag_key, tag_value, day, {gkey}, "
        f"{COUNTER_COLS}) SELECT tag_key, tag_value, day, {gkey}, {merged} "
        "FROM agentmeter_rollup_tags_daily GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
    )
    op.execute(
        f"INSERT INTO agentmeter_rollup_latency_global (day, {glat}, bucket, calls) "
        f"SELECT day, {glat}, bucket, sum(calls) FROM agentmeter_rollup_latency_daily "
        "GROUP BY 1, 2, 3, 4, 5"
    )
    # The category of the last event that named one (the event id kept in category_seq).
    for table in (
        "agentmeter_rollup",
        "agentmeter_rollup_tags",
        "agentmeter_rollup_daily",
        "agentmeter_rollup_tags_daily",
        "agentmeter_rollup_global",
        "agentmeter_rollup_tags_global",
    ):
        op.execute(
            f"UPDATE {table} SET category = coalesce((SELECT c.category FROM {EVENTS} c "
            f"WHERE c.id = {table}.category_seq), '') WHERE category_seq IS NOT NULL"
        )
    op.execute("UPDATE agentmeter_schema SET version = 2")


def downgrade() -> None:
    raise NotImplementedError("agentmeter's schema is never downgraded")
