"""The database schema (version 2): raw events, hourly and daily rollups, a version table.

Tables (SQLAlchemy Core, portable across SQLite and PostgreSQL):

- ``agentmeter_events``: one row per recorded call (LLM, embedding, tool, cache
  hit/miss) with the fields of :class:`~agentmeter.UsageEvent`; ``ts`` is the
  time in epoch seconds, ``cost_micros`` integer micro-USD (``NULL`` = unpriced),
  ``latency_bucket`` the bucket of ``agentmeter._latency`` for tool durations,
  ``tags`` the event's tags as canonical JSON (sorted keys, no spaces). The raw
  rows are kept for audit and export; reads come from the rollups. Indexed on
  time, (session, time), (tool, session, id) and (customer, tool, id) -- the
  last two serve the "recent call ids" of a tool with one ``LIMIT`` query each
  -- and a unique index on the call id. No more: every index costs the writer
  about a sixth of its per-row time.
- ``agentmeter_rollup``: one row per hour x customer x session x agent x model x
  provider x tool x kind, with every counter the read models need (events,
  tokens of each kind, failed, estimated, cost, unpriced, latency sum / min /
  max, tokens saved, and the last non-empty category with the id of the event
  that set it). ``hour`` is the integer epoch of the hour's start. Absent
  dimensions are stored as ``''`` (``NOT NULL``), so the primary key is a plain
  unique key on both databases.
- ``agentmeter_rollup_latency``: tool calls per hour x customer x session x agent
  x tool x latency bucket (the histogram of ``agentmeter._latency``), from which
  p50 / p95 are read exactly as the live tracker computes them.
- ``agentmeter_rollup_tags``: the rollup again, one row per tag pair of the
  events (``tag_key``, ``tag_value`` + the rollup key), for tag dimensions and
  tag filters.
- ``agentmeter_rollup_daily``, ``agentmeter_rollup_latency_daily``,
  ``agentmeter_rollup_tags_daily``: the same three per UTC day (column ``day``),
  so that a read over weeks or months of history reads one row per day and key,
  not 24.
- Daily tables with fewer dimensions, derived from the daily rows in the same
  transaction, for the reads that need fewer: ``agentmeter_rollup_global`` (and
  its latency and tag tables) without the session, ``agentmeter_rollup_by_customer``,
  ``_by_agent``, ``_by_model`` (model, provider), ``_by_tool`` (and its latency
  table) and ``agentmeter_rollup_total`` (kind only). A read takes the smallest one
  holding every dimension it filters or groups by, so totals, breakdowns, time
  series and tool statistics do not grow with the number of sessions (which grows
  with history) nor with the cross product of the other dimensions.
- Whole-history tables ``agentmeter_rollup_all_by_customer`` and
  ``agentmeter_rollup_all_by_tool`` (with its latency table): the daily
  ``by_customer`` / ``by_tool`` rows summed over every day (``day`` is always
  0), for reads without a time range -- the customer breakdown and the tool
  statistics of a report read one row per key (and latency bucket), not one per
  day (revision 0004).
- ``agentmeter_sessions``: one row per session (non-empty session id) with the
  tracker's counters of its events (``agentmeter._fields.FIELDS``, the columns of
  :class:`~agentmeter.Usage`), ``events``, ``tokens`` (input + output tokens of
  every kind: the order of ``by("session")``) and the first / last event time;
  ``agentmeter_customer_sessions`` the same per customer x session (without the
  times); ``agentmeter_session_counts`` how many sessions each customer has
  (``customer_id = ''``: every session). Indexed on (``tokens`` descending,
  session) and (customer, ``tokens`` descending, session), so that the largest
  sessions and their number are read in the time of one page, however many
  sessions the history holds. Written by the sink in the same transaction as the
  events and the rollups (revision 0004).
- ``agentmeter_schema``: a single row with the schema version. A database
  written by a newer agentmeter is refused with :class:`SchemaError` instead of
  being misread. (Alembic's own revision is kept in
  ``agentmeter_alembic_version``; see :mod:`agentmeter.storage.migrations`.)

The SQL sink writes the rollup rows of a batch in the same transaction as its
raw events (see :mod:`agentmeter.storage.sql`), so the rollups always equal a
``GROUP BY`` over the raw events.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .. import _fields
from .._latency import bucket
from ._deps import sqlalchemy as sa

__all__ = [
    "ALLTIME",
    "ALLTIME_SOURCE",
    "ALL_BY_CUSTOMER",
    "ALL_BY_TOOL",
    "BY_AGENT",
    "BY_CUSTOMER",
    "BY_MODEL",
    "BY_TOOL",
    "COLUMNS",
    "COUNTERS",
    "CUSTOMER_SESSIONS",
    "DAILY",
    "DAY",
    "DERIVED",
    "DIMS",
    "EVENTS",
    "GLOBAL",
    "GLOBAL_DIMS",
    "GLOBAL_LATENCY_DIMS",
    "HOUR",
    "HOURLY",
    "LATENCY_DIMS",
    "LEVELS",
    "LLM_KINDS",
    "ROLLUP",
    "ROLLUP_DAILY",
    "ROLLUP_GLOBAL",
    "ROLLUP_LATENCY",
    "ROLLUP_LATENCY_DAILY",
    "ROLLUP_TABLES",
    "ROLLUP_TAGS",
    "ROLLUP_TAGS_DAILY",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SESSIONS",
    "SESSION_COUNTS",
    "SESSION_FIELDS",
    "SESSION_TABLES",
    "TOTAL",
    "Level",
    "SchemaError",
    "check_version",
    "day_of_hour",
    "hour_of",
    "metadata",
    "tag_patterns",
    "tags_json",
    "to_row",
]

SCHEMA_VERSION = 2
HOUR = 3600
DAY = 86400
LLM_KINDS: tuple[str, ...] = ("chat", "completion", "image", "audio", "other")

metadata = sa.MetaData()

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

EVENTS = sa.Table(
    "agentmeter_events",
    metadata,
    sa.Column("id", _ID, primary_key=True),
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
    # Version 2: appended, so an upgraded version-1 table has the same column order.
    sa.Column("customer_id", sa.Text),
    sa.Column("tags", sa.Text),
    sa.Index("ix_agentmeter_events_ts", "ts"),
    sa.Index("ix_agentmeter_events_session", "session_id", "ts"),
    sa.Index("ix_agentmeter_events_tool_session", "tool", "session_id", "id"),
    sa.Index("ix_agentmeter_events_customer", "customer_id", "tool", "id"),
    # One row per call: a batch retried after a commit whose reply was lost (or a
    # spill file replayed twice) inserts nothing new, and adds nothing to the rollups.
    sa.Index("ux_agentmeter_events_call_id", "call_id", unique=True),
)

# The rollup key (after ``hour``); '' stands for "none".
DIMS: tuple[str, ...] = (
    "customer_id",
    "session_id",
    "agent_id",
    "model",
    "provider",
    "tool",
    "kind",
)
LATENCY_DIMS: tuple[str, ...] = ("customer_id", "session_id", "agent_id", "tool")
# Counters of a rollup row, in the order the writer builds them.
COUNTERS: tuple[str, ...] = (
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
    "latency_ms",
    "latency_min",
    "latency_max",
    "tokens_saved",
    "category",
    "category_seq",
)
_FLOAT_COUNTERS = frozenset({"latency_ms"})
_NULLABLE_FLOATS = frozenset({"latency_min", "latency_max"})


def _dim_columns(names: tuple[str, ...]) -> list[sa.Column[Any]]:
    return [sa.Column(n, sa.Text, nullable=False, server_default="") for n in names]


def _counter_columns() -> list[sa.Column[Any]]:
    cols: list[sa.Column[Any]] = []
    for name in COUNTERS:
        if name in _FLOAT_COUNTERS:
            cols.append(sa.Column(name, sa.Float(precision=53), nullable=False, server_default="0"))
        elif name in _NULLABLE_FLOATS:
            cols.append(sa.Column(name, sa.Float(precision=53)))
        elif name == "category":
            cols.append(sa.Column(name, sa.Text, nullable=False, server_default=""))
        elif name == "category_seq":
            cols.append(sa.Column(name, sa.BigInteger))
        else:
            cols.append(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    return cols


def _rollup(name: str, period: str, dims: tuple[str, ...] = DIMS) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column(period, sa.BigInteger, nullable=False),
        *_dim_columns(dims),
        *_counter_columns(),
        sa.PrimaryKeyConstraint(period, *dims, name=f"pk_{name}"),
        *([sa.Index(f"ix_{name}_session", "session_id", period)] if "session_id" in dims else []),
        *(
            [sa.Index(f"ix_{name}_customer", "customer_id", period)]
            if "customer_id" in dims
            else []
        ),
        sqlite_with_rowid=False,
    )


def _latency(name: str, period: str, dims: tuple[str, ...] = LATENCY_DIMS) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column(period, sa.BigInteger, nullable=False),
        *_dim_columns(dims),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint(period, *dims, "bucket", name=f"pk_{name}"),
        *([sa.Index(f"ix_{name}_session", "session_id", period)] if "session_id" in dims else []),
        *(
            [sa.Index(f"ix_{name}_customer", "customer_id", period)]
            if "customer_id" in dims
            else []
        ),
        sqlite_with_rowid=False,
    )


def _tags(name: str, period: str, dims: tuple[str, ...] = DIMS) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("tag_key", sa.Text, nullable=False),
        sa.Column("tag_value", sa.Text, nullable=False),
        sa.Column(period, sa.BigInteger, nullable=False),
        *_dim_columns(dims),
        *_counter_columns(),
        sa.PrimaryKeyConstraint("tag_key", "tag_value", period, *dims, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


@dataclass(frozen=True)
class Level:
    """One rollup granularity: its name, its period column (``hour`` / ``day``: the
    epoch of the period's start), its key dimensions (beside ``kind``, always there),
    and its tables -- the main one, and where kept the latency-bucket and tag ones."""

    name: str
    period: str
    main: sa.Table
    latency: sa.Table | None
    tags: sa.Table | None
    dims: tuple[str, ...] = DIMS
    latency_dims: tuple[str, ...] = LATENCY_DIMS

    @property
    def tables(self) -> tuple[sa.Table, ...]:
        return tuple(t for t in (self.main, self.latency, self.tags) if t is not None)


def _derived(name: str, dims: tuple[str, ...], latency: bool = False, tags: bool = False) -> Level:
    """A daily level keyed by some of the dimensions (plus ``kind``)."""
    key = (*dims, "kind")
    lat = tuple(d for d in LATENCY_DIMS if d in dims)
    return Level(
        name,
        "day",
        _rollup(f"agentmeter_rollup_{name}", "day", key),
        _latency(f"agentmeter_rollup_latency_{name}", "day", lat) if latency else None,
        _tags(f"agentmeter_rollup_tags_{name}", "day", key) if tags else None,
        key,
        lat,
    )


ROLLUP = _rollup("agentmeter_rollup", "hour")
ROLLUP_LATENCY = _latency("agentmeter_rollup_latency", "hour")
ROLLUP_TAGS = _tags("agentmeter_rollup_tags", "hour")
ROLLUP_DAILY = _rollup("agentmeter_rollup_daily", "day")
ROLLUP_LATENCY_DAILY = _latency("agentmeter_rollup_latency_daily", "day")
ROLLUP_TAGS_DAILY = _tags("agentmeter_rollup_tags_daily", "day")
HOURLY = Level("hourly", "hour", ROLLUP, ROLLUP_LATENCY, ROLLUP_TAGS)
DAILY = Level("daily", "day", ROLLUP_DAILY, ROLLUP_LATENCY_DAILY, ROLLUP_TAGS_DAILY)
# Daily levels derived from DAILY with fewer dimensions, smallest first: a read takes
# the first one holding every dimension it filters or groups by.
GLOBAL = _derived(
    "global", ("customer_id", "agent_id", "model", "provider", "tool"), latency=True, tags=True
)
TOTAL = _derived("total", ())
BY_CUSTOMER = _derived("by_customer", ("customer_id",))
BY_AGENT = _derived("by_agent", ("agent_id",))
BY_MODEL = _derived("by_model", ("model", "provider"))
BY_TOOL = _derived("by_tool", ("tool",), latency=True)
DERIVED = (TOTAL, BY_CUSTOMER, BY_AGENT, BY_MODEL, BY_TOOL, GLOBAL)
# Whole-history twins of derived levels (``day`` is always 0: one row per key for
# all time), for reads without a time range whose daily rows grow with the history
# (customers active per day, latency buckets filled per tool and day).
ALL_BY_CUSTOMER = _derived("all_by_customer", ("customer_id",))
ALL_BY_TOOL = _derived("all_by_tool", ("tool",), latency=True)
ALLTIME = (ALL_BY_CUSTOMER, ALL_BY_TOOL)
# The daily level each whole-history level sums.
ALLTIME_SOURCE = {ALL_BY_CUSTOMER.name: BY_CUSTOMER, ALL_BY_TOOL.name: BY_TOOL}
GLOBAL_DIMS = GLOBAL.dims
GLOBAL_LATENCY_DIMS = GLOBAL.latency_dims
ROLLUP_GLOBAL = GLOBAL.main
LEVELS = (HOURLY, DAILY, *DERIVED, *ALLTIME)

# Per-session totals: the tracker's counters (Usage's fields), in that order.
SESSION_FIELDS: tuple[str, ...] = _fields.FIELDS


def _session_table(name: str, key: tuple[str, ...], times: bool) -> sa.Table:
    table = sa.Table(
        name,
        metadata,
        *_dim_columns(key),
        sa.Column("events", sa.BigInteger, nullable=False, server_default="0"),
        # input + output tokens of every kind: what by() orders keys by.
        sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
        *(
            sa.Column(
                f,
                sa.Float(precision=53) if f in _fields.FLOAT_FIELDS else sa.BigInteger,
                nullable=False,
                server_default="0",
            )
            for f in SESSION_FIELDS
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
    # The order of by("session"): largest first, then by id -- a page is an index range.
    sa.Index(
        f"ix_{name}_order",
        *(table.c[k] for k in key[:-1]),
        table.c.tokens.desc(),
        table.c.session_id,
    )
    return table


SESSIONS = _session_table("agentmeter_sessions", ("session_id",), times=True)
CUSTOMER_SESSIONS = _session_table(
    "agentmeter_customer_sessions", ("customer_id", "session_id"), times=False
)
SESSION_COUNTS = sa.Table(
    "agentmeter_session_counts",
    metadata,
    # '' counts every session (of any customer or none); a customer id, that customer's.
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("sessions", sa.BigInteger, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("customer_id", name="pk_agentmeter_session_counts"),
    sqlite_with_rowid=False,
)
SESSION_TABLES = (SESSIONS, CUSTOMER_SESSIONS, SESSION_COUNTS)
# Every table the writer keeps in step with the events.
ROLLUP_TABLES = (*(t for level in LEVELS for t in level.tables), *SESSION_TABLES)

SCHEMA = sa.Table(
    "agentmeter_schema",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

# Insert order: every column but the autoincrement id.
COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENTS.columns if c.name != "id")


class SchemaError(RuntimeError):
    """The database is not an agentmeter database, or one of an unknown version."""


def newer_schema(version: int) -> SchemaError:
    """The error for a database written by a newer agentmeter."""
    return SchemaError(
        f"the database has agentmeter schema version {version}, newer than this "
        f"agentmeter's ({SCHEMA_VERSION}): upgrade agentmeter-core"
    )


def hour_of(ts: float) -> int:
    """The start (epoch seconds) of the hour of ``ts`` -- the same arithmetic as the
    SQL expression of :mod:`.query`, so an event falls in the same hour everywhere."""
    return math.floor(ts / HOUR) * HOUR


def day_of_hour(hour: int) -> int:
    """The start of the UTC day of an hour start (integer arithmetic: the day of an
    event is the day of its hour)."""
    return hour - hour % DAY


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):  # circular structures: keep something readable
        return json.dumps(repr(value))


_TAGS_JSON: dict[tuple[Any, ...], str] = {}  # tag sets repeat: dump each once


def tags_json(tags: Any) -> str | None:
    """Tags as canonical JSON (sorted keys, no spaces); ``None`` for no tags."""
    if not tags:
        return None
    try:
        key = tuple(tags.items())
        text = _TAGS_JSON.get(key)
    except TypeError:  # an unhashable value: not cached
        key, text = (), None
    if text is None:
        text = json.dumps(
            {str(k): str(v) for k, v in tags.items()}, sort_keys=True, separators=(",", ":")
        )
        if key:
            if len(_TAGS_JSON) >= 4096:
                _TAGS_JSON.clear()
            _TAGS_JSON[key] = text
    return text


def tag_patterns(key: str, value: str) -> tuple[str, str]:
    """The two substrings one of which the canonical JSON of tags holding ``key=value``
    contains (the pair followed by ``,`` or by ``}``). JSON escapes every quote inside
    a string, so neither can match across a key or a value."""
    pair = json.dumps(key) + ":" + json.dumps(value)
    return pair + ",", pair + "}"


def to_row(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """A raw event tuple (``models.EVENT_FIELDS`` order) as a row in ``COLUMNS`` order.

    Runs on the writer thread, never on the recording thread. The first 14 fields
    (call id .. agent) and status/tool/category pass through unchanged.
    """
    scope_path = raw[14]
    error = raw[18]
    meta = raw[21]
    latency = raw[11]
    n = len(raw)
    return (
        *raw[:14],
        _json(list(scope_path)) if scope_path else None,
        *raw[15:18],
        error if error is None or type(error) is str else str(error),
        1 if raw[19] else 0,
        raw[20],
        None if meta is None else _json(meta),
        bucket(latency) if raw[2] == "tool" and latency is not None else None,
        raw[22] if n > 22 else None,
        tags_json(raw[23]) if n > 23 else None,
    )


def check_version(conn: sa.Connection) -> int | None:
    """The version in ``agentmeter_schema`` (``None`` when the table or row is missing).

    Raises:
        SchemaError: if the version is newer than this agentmeter's.
    """
    if not sa.inspect(conn).has_table(SCHEMA.name):
        return None
    version = conn.execute(sa.select(sa.func.max(SCHEMA.c.version))).scalar()
    if version is None:
        return None
    if int(version) > SCHEMA_VERSION:
        raise newer_schema(int(version))
    return int(version)
