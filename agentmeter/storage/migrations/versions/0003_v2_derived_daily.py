"""Schema version 2, continued: daily rollups with fewer dimensions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- ``agentmeter_rollup_total`` (per day and kind), ``agentmeter_rollup_by_customer``,
  ``_by_agent``, ``_by_model`` (model, provider), ``_by_tool`` and
  ``agentmeter_rollup_latency_by_tool``: a read that needs only these dimensions
  reads a few rows per day, however many sessions, agents or models there are.
  Created (again, on development databases that have them) and filled from the
  daily rows in the same transaction: a ``GROUP BY`` over days x keys, not over
  the events, so a database of any size upgrades in moments.
- The global tables (``*_global``) of revision 0002 are created and filled the
  same way when missing (development databases written before they existed).
- The schema version stays 2 (version 2 is not released before this revision).

Frozen: a revision never imports agentmeter's live schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EVENTS = "agentmeter_events"
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
GLOBAL = ("customer_id", "agent_id", "model", "provider", "tool", "kind")
GLOBAL_LATENCY = ("customer_id", "agent_id", "tool")
# name -> (main key, latency key or None): rebuilt by this revision.
NEW: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "total": (("kind",), None),
    "by_customer": (("customer_id", "kind"), None),
    "by_agent": (("agent_id", "kind"), None),
    "by_model": (("model", "provider", "kind"), None),
    "by_tool": (("tool", "kind"), ("tool",)),
}


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


def _main(name: str, dims: tuple[str, ...], *, tags: bool = False) -> None:
    """A daily main (or tag) table keyed by ``dims``, filled from the daily rows."""
    pre = ("tag_key", "tag_value") if tags else ()
    op.create_table(
        name,
        *(sa.Column(c, sa.Text, nullable=False) for c in pre),
        sa.Column("day", sa.BigInteger, nullable=False),
        *_dims(dims),
        *_counters(),
        sa.PrimaryKeyConstraint(*pre, "day", *dims, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )
    if "customer_id" in dims and not tags:
        op.create_index(f"ix_{name}_customer", name, ["customer_id", "day"])
    key = ", ".join((*pre, "day", *dims))
    source = "agentmeter_rollup_tags_daily" if tags else "agentmeter_rollup_daily"
    op.execute(
        f"INSERT INTO {name} ({key}, {COUNTER_COLS}) "
        f"SELECT {key}, {MERGED} FROM {source} GROUP BY {key}"
    )
    # The category of the last event that named one (the event id kept in category_seq).
    op.execute(
        f"UPDATE {name} SET category = coalesce((SELECT c.category FROM {EVENTS} c "
        f"WHERE c.id = {name}.category_seq), '') WHERE category_seq IS NOT NULL"
    )


def _latency(name: str, dims: tuple[str, ...]) -> None:
    """A daily latency-bucket table keyed by ``dims``, filled from the daily rows."""
    op.create_table(
        name,
        sa.Column("day", sa.BigInteger, nullable=False),
        *_dims(dims),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("day", *dims, "bucket", name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )
    if "customer_id" in dims:
        op.create_index(f"ix_{name}_customer", name, ["customer_id", "day"])
    key = ", ".join(("day", *dims, "bucket"))
    op.execute(
        f"INSERT INTO {name} ({key}, calls) SELECT {key}, sum(calls) "
        f"FROM agentmeter_rollup_latency_daily GROUP BY {key}"
    )


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "agentmeter_rollup_global" not in existing:
        for name in ("agentmeter_rollup_tags_global", "agentmeter_rollup_latency_global"):
            if name in existing:
                op.drop_table(name)
        _main("agentmeter_rollup_global", GLOBAL)
        _main("agentmeter_rollup_tags_global", GLOBAL, tags=True)
        _latency("agentmeter_rollup_latency_global", GLOBAL_LATENCY)
    for level, (dims, latency) in NEW.items():
        names = [f"agentmeter_rollup_{level}"]
        if latency is not None:
            names.append(f"agentmeter_rollup_latency_{level}")
        for name in names:
            if name in existing:  # development databases: rebuilt from the daily rows
                op.drop_table(name)
        _main(f"agentmeter_rollup_{level}", dims)
        if latency is not None:
            _latency(f"agentmeter_rollup_latency_{level}", latency)


def downgrade() -> None:
    raise NotImplementedError("agentmeter's schema is never downgraded")
