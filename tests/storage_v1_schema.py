"""agentmeter 0.1's storage schema (schema version 1), to make real version-1 databases.

Everything between the two ``# ---- v1`` markers is ``agentmeter/storage/schema.py``
of commit 8440651 verbatim, except its ``from __future__`` line (it must open a
file) and its two relative imports, made absolute.
:func:`write_v1` is the version-1 ``SQLSink``'s insert (``_build_insert``) for
SQLite and PostgreSQL, verbatim, run on a version-1 ``ensure_schema``.
"""
# ruff: noqa
# mypy: ignore-errors
# fmt: off

# ---- v1 (agentmeter/storage/schema.py @ 8440651)
"""The database schema: one row per metered call, plus a schema-version table.

Tables (SQLAlchemy Core, portable across SQLite and PostgreSQL):

- ``agentmeter_events``: one row per recorded call (LLM, embedding, tool, cache
  hit/miss) with the fields of :class:`~agentmeter.UsageEvent`; ``ts`` is the
  time in epoch seconds, ``cost_micros`` integer micro-USD (``NULL`` = unpriced),
  ``latency_bucket`` the bucket of ``agentmeter._latency`` for tool durations so
  that percentiles can be read back with a ``GROUP BY`` (see :mod:`.query`).
  Indexed on time, (session, time), agent, model and tool -- no more: every
  index costs the writer about a sixth of its per-row time.
- ``agentmeter_schema``: a single row with the schema version. A database written
  by a newer agentmeter is refused with a clear error instead of being misread.
"""



import json
from typing import Any

from agentmeter._latency import bucket
import sqlalchemy as sa

__all__ = [
    "COLUMNS",
    "EVENTS",
    "LLM_KINDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SchemaError",
    "check_schema",
    "ensure_schema",
    "metadata",
    "to_row",
]

SCHEMA_VERSION = 1
LLM_KINDS: tuple[str, ...] = ("chat", "completion", "image", "audio", "other")

metadata = sa.MetaData()

EVENTS = sa.Table(
    "agentmeter_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("ts", sa.Float(precision=53), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("provider", sa.Text),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cache_read_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cache_write_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost_micros", sa.BigInteger),
    sa.Column("latency_ms", sa.Float(precision=53)),
    sa.Column("session_id", sa.Text),
    sa.Column("agent_id", sa.Text),
    sa.Column("scope_path", sa.Text),
    sa.Column("tool", sa.Text),
    sa.Column("category", sa.Text),
    sa.Column("status", sa.Text, nullable=False, default="ok"),
    sa.Column("error", sa.Text),
    sa.Column("estimated", sa.SmallInteger, nullable=False, default=0),
    sa.Column("tokens_saved", sa.BigInteger, nullable=False, default=0),
    sa.Column("metadata", sa.Text),
    sa.Column("latency_bucket", sa.Integer),
    sa.Index("ix_agentmeter_events_ts", "ts"),
    sa.Index("ix_agentmeter_events_session", "session_id", "ts"),
    sa.Index("ix_agentmeter_events_agent", "agent_id"),
    sa.Index("ix_agentmeter_events_model", "model"),
    sa.Index("ix_agentmeter_events_tool", "tool"),
    # One row per call: a batch retried after a commit whose reply was lost (or a
    # spill file replayed twice) inserts nothing new (see SQLSink's ON CONFLICT).
    sa.Index("ux_agentmeter_events_call_id", "call_id", unique=True),
)

SCHEMA = sa.Table(
    "agentmeter_schema",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

# Insert order: every column but the autoincrement id.
COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENTS.columns if c.name != "id")


class SchemaError(RuntimeError):
    """The database is not an agentmeter database, or one of an unknown version."""


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):  # circular structures: keep something readable
        return json.dumps(repr(value))


def to_row(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """A raw event tuple (``models.EVENT_FIELDS`` order) as a row in ``COLUMNS`` order.

    Runs on the writer thread, never on the recording thread. The first 14 fields
    (call id .. agent) and status/tool/category pass through unchanged.
    """
    scope_path = raw[14]
    error = raw[18]
    meta = raw[21]
    latency = raw[11]
    return (
        *raw[:14],
        _json(list(scope_path)) if scope_path else None,
        *raw[15:18],
        error if error is None or type(error) is str else str(error),
        1 if raw[19] else 0,
        raw[20],
        None if meta is None else _json(meta),
        bucket(latency) if raw[2] == "tool" and latency is not None else None,
    )


def ensure_schema(conn: sa.Connection) -> None:
    """Create the tables and indexes if missing; refuse a newer schema version.

    Safe to call concurrently from several processes: creation is idempotent and
    a lost race for the version row is tolerated.
    """
    metadata.create_all(conn, checkfirst=True)
    # Databases created before the unique call-id index existed get it now.
    conn.exec_driver_sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_agentmeter_events_call_id "
        "ON agentmeter_events (call_id)"
    )
    version = conn.execute(sa.select(sa.func.max(SCHEMA.c.version))).scalar()
    if version is None:
        conn.execute(SCHEMA.insert().values(version=SCHEMA_VERSION))
    elif version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has agentmeter schema version {version}, newer than this "
            f"agentmeter's ({SCHEMA_VERSION}): upgrade agentmeter-core"
        )


def check_schema(conn: sa.Connection) -> int:
    """The schema version of an existing database (for readers; creates nothing).

    Raises:
        SchemaError: if the agentmeter tables are missing or the version is newer.
    """
    names = set(sa.inspect(conn).get_table_names())
    if EVENTS.name not in names or SCHEMA.name not in names:
        raise SchemaError("not an agentmeter database (its tables are missing)")
    version = conn.execute(sa.select(sa.func.max(SCHEMA.c.version))).scalar()
    if version is None:
        raise SchemaError("not an agentmeter database (no schema version)")
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has agentmeter schema version {version}, newer than this "
            f"agentmeter's ({SCHEMA_VERSION}): upgrade agentmeter-core"
        )
    return int(version)
# ---- v1 (end)


def write_v1(url, raws):
    """Create a version-1 database at ``url`` and insert raw events (the 22-field tuples
    of agentmeter 0.1) exactly as the version-1 SQLSink did."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            ensure_schema(conn)
        quote = engine.dialect.identifier_preparer.quote
        cols = ", ".join(quote(c) for c in COLUMNS)
        marks = ["?" if engine.dialect.paramstyle == "qmark" else "%s"] * len(COLUMNS)
        conflict = " ON CONFLICT (call_id) DO NOTHING"
        sql = f"INSERT INTO {quote(EVENTS.name)} ({cols}) VALUES ({', '.join(marks)}){conflict}"
        rows = [to_row(tuple(r[:22])) for r in raws]
        for i in range(0, len(rows), 2000):
            with engine.begin() as conn:
                conn.exec_driver_sql(sql, list(rows[i : i + 2000]))
    finally:
        engine.dispose()
