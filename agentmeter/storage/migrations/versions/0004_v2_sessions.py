"""Schema version 2, continued: per-session totals, whole-history customer and tool rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

- ``agentmeter_sessions`` (one row per session: the tracker's counters of its
  events, ``events``, ``tokens`` -- input + output of every kind, the order of
  ``by("session")`` -- and the first / last event time),
  ``agentmeter_customer_sessions`` (the same per customer x session, without the
  times) and ``agentmeter_session_counts`` (sessions per customer; ``''``: every
  session), indexed so that the largest sessions and their number are read in
  the time of a page, not of the number of sessions.
- Filled from the daily rollup rows (one ``GROUP BY`` over days x keys, through
  the session index) and the events' (session, time) index for the first and
  last times: never a pass over the events.
- ``agentmeter_rollup_all_by_customer``, ``agentmeter_rollup_all_by_tool`` and
  ``agentmeter_rollup_latency_all_by_tool``: the daily ``by_customer`` /
  ``by_tool`` rows summed over all days (``day`` = 0), for reads without a time
  range; filled from those daily rows.
- The schema version stays 2 (version 2 is not released before this revision).

Frozen: a revision never imports agentmeter's live schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

EVENTS = "agentmeter_events"
DAILY = "agentmeter_rollup_daily"
LLM = "('chat', 'completion', 'image', 'audio', 'other')"
FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "llm_calls",
    "failed_llm_calls",
    "estimated_calls",
    "cost_micros",
    "unpriced_calls",
    "llm_latency_ms",
    "embedding_tokens",
    "embedding_calls",
    "tool_calls",
    "failed_tool_calls",
    "tool_duration_ms",
    "cache_hits",
    "cache_misses",
    "tokens_saved",
)
FLOATS = ("llm_latency_ms", "tool_duration_ms")


def _when(cond: str, col: str) -> str:
    return f"sum(CASE WHEN {cond} THEN {col} ELSE 0 END)"


# The tracker's counters from rollup rows, as UsageStore reads them (its _usage_cols).
SUMS = {
    "input_tokens": _when(f"kind IN {LLM}", "input_tokens"),
    "output_tokens": "sum(output_tokens)",
    "cache_read_tokens": "sum(cache_read_tokens)",
    "cache_write_tokens": "sum(cache_write_tokens)",
    "reasoning_tokens": "sum(reasoning_tokens)",
    "llm_calls": _when(f"kind IN {LLM}", "events"),
    "failed_llm_calls": _when(f"kind IN {LLM}", "failed"),
    "estimated_calls": "sum(estimated)",
    "cost_micros": "sum(cost_micros)",
    "unpriced_calls": _when(f"kind IN {LLM} OR kind = 'embedding'", "unpriced"),
    "llm_latency_ms": _when(f"kind IN {LLM}", "latency_ms"),
    "embedding_tokens": _when("kind = 'embedding'", "input_tokens"),
    "embedding_calls": _when("kind = 'embedding'", "events"),
    "tool_calls": _when("kind = 'tool'", "events"),
    "failed_tool_calls": _when("kind = 'tool'", "failed"),
    "tool_duration_ms": _when("kind = 'tool'", "latency_ms"),
    "cache_hits": _when("kind = 'cache_hit'", "events"),
    "cache_misses": _when("kind = 'cache_miss'", "events"),
    "tokens_saved": "sum(tokens_saved)",
}
NAMES = (
    "agentmeter_sessions",
    "agentmeter_customer_sessions",
    "agentmeter_session_counts",
    "agentmeter_rollup_all_by_customer",
    "agentmeter_rollup_all_by_tool",
    "agentmeter_rollup_latency_all_by_tool",
)
COUNTER_COLS = (
    "events, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "reasoning_tokens, failed, estimated, cost_micros, unpriced, latency_ms, latency_min, "
    "latency_max, tokens_saved, category, category_seq"
)
MERGED = (
    "sum(events), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
    "sum(cache_write_tokens), sum(reasoning_tokens), sum(failed), sum(estimated), "
    "sum(cost_micros), sum(unpriced), sum(latency_ms), min(latency_min), "
    "max(latency_max), sum(tokens_saved), '', max(category_seq)"
)


def _rollup_counters() -> list[sa.Column]:  # type: ignore[type-arg]
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


def _alltime(name: str, dims: tuple[str, ...], latency: bool) -> None:
    """A whole-history table (``day`` = 0) summing the daily ``by_<name>`` rows."""
    main, source = f"agentmeter_rollup_all_by_{name}", f"agentmeter_rollup_by_{name}"
    key = (*dims, "kind")
    op.create_table(
        main,
        sa.Column("day", sa.BigInteger, nullable=False),
        *(sa.Column(d, sa.Text, nullable=False, server_default="") for d in key),
        *_rollup_counters(),
        sa.PrimaryKeyConstraint("day", *key, name=f"pk_{main}"),
        sqlite_with_rowid=False,
    )
    if "customer_id" in dims:
        op.create_index(f"ix_{main}_customer", main, ["customer_id", "day"])
    cols = ", ".join(key)
    op.execute(
        f"INSERT INTO {main} (day, {cols}, {COUNTER_COLS}) "
        f"SELECT 0, {cols}, {MERGED} FROM {source} GROUP BY {cols}"
    )
    op.execute(
        f"UPDATE {main} SET category = coalesce((SELECT c.category FROM {EVENTS} c "
        f"WHERE c.id = {main}.category_seq), '') WHERE category_seq IS NOT NULL"
    )
    if latency:
        lat, lsource = (
            f"agentmeter_rollup_latency_all_by_{name}",
            f"agentmeter_rollup_latency_by_{name}",
        )
        op.create_table(
            lat,
            sa.Column("day", sa.BigInteger, nullable=False),
            *(sa.Column(d, sa.Text, nullable=False, server_default="") for d in dims),
            sa.Column("bucket", sa.Integer, nullable=False),
            sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
            sa.PrimaryKeyConstraint("day", *dims, "bucket", name=f"pk_{lat}"),
            sqlite_with_rowid=False,
        )
        lcols = ", ".join((*dims, "bucket"))
        op.execute(
            f"INSERT INTO {lat} (day, {lcols}, calls) "
            f"SELECT 0, {lcols}, sum(calls) FROM {lsource} GROUP BY {lcols}"
        )


def _table(name: str, key: tuple[str, ...], times: bool) -> None:
    op.create_table(
        name,
        *(sa.Column(k, sa.Text, nullable=False, server_default="") for k in key),
        sa.Column("events", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
        *(
            sa.Column(
                f,
                sa.Float(precision=53) if f in FLOATS else sa.BigInteger,
                nullable=False,
                server_default="0",
            )
            for f in FIELDS
        ),
        *(
            [
                sa.Column("first_seen", sa.Float(precision=53)),
                sa.Column("last_seen", sa.Float(precision=53)),
            ]
            if times
            else []
        ),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )
    op.create_index(f"ix_{name}_order", name, [*key[:-1], sa.text("tokens DESC"), "session_id"])
    cols = ", ".join((*key, "events", "tokens", *FIELDS))
    sums = ", ".join(SUMS[f] for f in FIELDS)
    keyed = " AND ".join(f"{k} <> ''" for k in key)  # rows without a session: not a session
    op.execute(
        f"INSERT INTO {name} ({cols}) SELECT {', '.join(key)}, sum(events), "
        f"sum(input_tokens + output_tokens), {sums} FROM {DAILY} "
        f"WHERE {keyed} GROUP BY {', '.join(key)}"
    )


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name in NAMES:
        if name in existing:  # an incomplete database rebuilt: from the rollups again
            op.drop_table(name)
    _alltime("customer", ("customer_id",), latency=False)
    _alltime("tool", ("tool",), latency=True)
    _table("agentmeter_sessions", ("session_id",), times=True)
    _table("agentmeter_customer_sessions", ("customer_id", "session_id"), times=False)
    # Two seeks per session in the events' (session_id, ts) index.
    for col, fn in (("first_seen", "min"), ("last_seen", "max")):
        op.execute(
            f"UPDATE agentmeter_sessions SET {col} = (SELECT {fn}(e.ts) FROM {EVENTS} e "
            "WHERE e.session_id = agentmeter_sessions.session_id)"
        )
    op.create_table(
        "agentmeter_session_counts",
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("sessions", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("customer_id", name="pk_agentmeter_session_counts"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO agentmeter_session_counts (customer_id, sessions) "
        "SELECT '', count(*) FROM agentmeter_sessions"
    )
    op.execute(
        "INSERT INTO agentmeter_session_counts (customer_id, sessions) "
        "SELECT customer_id, count(*) FROM agentmeter_customer_sessions GROUP BY customer_id"
    )


def downgrade() -> None:
    raise NotImplementedError("agentmeter's schema is never downgraded")
