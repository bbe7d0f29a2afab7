"""Reading a stored database back: the tracker's aggregates, from the hourly rollups.

:class:`UsageStore` answers the same questions as a live tracker -- ``snapshot()``,
``session(id)``, ``customer(id)``, ``tool_stats()`` -- plus breakdowns by any
dimension (``by("customer")``, ``by("tag:team")``), time series and counts, and
returns the same pydantic models (:class:`~agentmeter.Snapshot`,
:class:`~agentmeter.SessionUsage`, :class:`~agentmeter.CustomerUsage`,
:class:`~agentmeter.ToolStats`, :class:`~agentmeter.Usage`).

Every read method takes the same filters, all optional and combined with AND:
``since`` (inclusive) and ``until`` (exclusive) as datetimes (naive = UTC) or
epoch seconds; ``customer``, ``session``, ``agent``, ``model``, ``provider``,
``tool`` (exact ids); ``tags`` (a ``{key: value}`` dict, every pair must match).

Where the numbers come from (see :mod:`.schema`):

- **Whole days** are read from the daily rollup tables, the **other whole hours**
  from the hourly ones; the SQL sink keeps both in the same transaction as the
  raw events. A read costs the number of rollup rows in the range (days, plus at
  most 46 hours, x distinct customer/session/agent/model/provider/tool/kind
  combinations), not the number of events stored. Hourly time series read the
  hourly rollups only.
- **Partial hours** -- a ``since`` / ``until`` that is not on an hour boundary --
  are read from the raw events of those (at most two) hours, through the time
  index, and added to the rollup rows.
- **Tags**: ``by("tag:KEY")`` and a filter of one tag pair read the tag rollup.
  A filter of several tag pairs (or one pair of another key than the ``by``
  dimension's) cannot be answered from one-pair-per-row rollups and reads the raw
  events (exact, but proportional to the events in the range). Tool statistics
  under a tag filter (their latency histograms are not kept per tag) also read
  the raw tool events.
- **Sessions**: ``by("session")``, ``count_keys("session")`` and
  ``session_times()`` read the per-session tables (one row per session, and per
  customer x session, kept by the writer) when the read has no time range and no
  filter but ``customer`` / ``session``: a page of the largest sessions and their
  number cost one index range and one row, however many sessions are stored.
  Other session reads group the rollup rows as above.
- **Recent call ids** of a tool: one indexed ``LIMIT`` query per (session, tool)
  or (customer, tool), a few hundred per statement.

Tool latency percentiles: the latency rollup holds the tracker's log-scale
histogram (``agentmeter._latency``, 16 buckets per doubling) per hour, session,
customer, agent and tool, so ``p50_ms`` / ``p95_ms`` read back from a database
are identical to the live ones.

Unknown ids: :meth:`UsageStore.session` and :meth:`UsageStore.customer` raise
:class:`agentmeter.NotFoundError` (a ``LookupError``) when nothing matching was
stored -- the same rule as the tracker; breakdowns simply leave keys out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import _fields, _tools, _views
from ..errors import NotFoundError
from ..models import CustomerUsage, SessionUsage, Snapshot, ToolStats, Usage
from ._deps import sqlalchemy as sa
from .engine import ensure_current, open_existing
from .schema import (
    ALLTIME,
    COLUMNS,
    COUNTERS,
    CUSTOMER_SESSIONS,
    DAILY,
    DAY,
    DERIVED,
    DIMS,
    EVENTS,
    HOUR,
    HOURLY,
    LLM_KINDS,
    ROLLUP_TABLES,
    SESSION_COUNTS,
    SESSION_FIELDS,
    SESSIONS,
    Level,
    day_of_hour,
    hour_of,
    tag_patterns,
)
from .sql import RollupWriter

__all__ = ["DIMENSIONS", "TIME_BUCKETS", "UsageStore", "to_epoch"]

_E = EVENTS.c
# Public dimension names -> rollup / event column.
DIMENSIONS: dict[str, str] = {
    "customer": "customer_id",
    "session": "session_id",
    "agent": "agent_id",
    "model": "model",
    "provider": "provider",
    "tool": "tool",
}
TIME_BUCKETS = ("hour", "day")
_SERIES_BY = ("model", "customer", "agent", "tool", "session", "provider")
_CASTS = [float if name in _fields.FLOAT_FIELDS else int for name in _fields.FIELDS]
_TAG_PREFIX = "tag:"


def to_epoch(value: datetime | float | int | None) -> float | None:
    """Epoch seconds of a datetime (naive means UTC) or a number."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a time bound must be a datetime or epoch seconds, got {value!r}")
    return float(value)


def _row(values: Sequence[Any]) -> list[Any]:
    """SQL sums (ints, floats, Decimals on PostgreSQL) as a tracker counter row."""
    return [cast(v or 0) for cast, v in zip(_CASTS, values, strict=True)]


def _none(value: Any) -> str | None:
    """A rollup key ('' = none) as the tracker's key (``None`` = none)."""
    return None if value is None or value == "" else str(value)


def _sum(expr: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(expr), 0)


@dataclass(frozen=True)
class _Filter:
    lo: float | None
    hi: float | None
    eq: tuple[tuple[str, str], ...]  # (column, value)
    tags: tuple[tuple[str, str], ...]

    def value(self, column: str) -> str | None:
        for col, v in self.eq:
            if col == column:
                return v
        return None


def _filter(
    since: datetime | float | None,
    until: datetime | float | None,
    *,
    customer: str | None = None,
    session: str | None = None,
    agent: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    tool: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> _Filter:
    eq: list[tuple[str, str]] = []
    for name, value in (
        ("customer", customer),
        ("session", session),
        ("agent", agent),
        ("model", model),
        ("provider", provider),
        ("tool", tool),
    ):
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{name} must not be empty")
        eq.append((DIMENSIONS[name], value))
    pairs: list[tuple[str, str]] = []
    if tags is not None:
        if not isinstance(tags, Mapping):
            raise TypeError("tags must be a dict of str to str")
        for k, v in tags.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise TypeError("tags must be a dict of non-empty str keys to str values")
            pairs.append((k, v))
    return _Filter(to_epoch(since), to_epoch(until), tuple(eq), tuple(sorted(pairs)))


class _Src:
    """A source of rollup-shaped rows: ``hour``, the dimensions, ``[tag_value]``, counters."""

    def __init__(self, sel: Any) -> None:
        self.sel = sel
        self.c = sel.c


class UsageStore:
    """Aggregate queries over an agentmeter database (read-only, but for :meth:`reset`).

    Args:
        db: A path (SQLite) or SQLAlchemy URL; default ``$AGENTMETER_DB`` or
            ``./agentmeter.db``. Must exist and hold agentmeter's tables. A database
            of an older schema (version 1) is upgraded when opened -- which needs
            write access once (see :mod:`agentmeter.storage.migrations`).
        engine: Use this engine instead of opening ``db`` (its tables must exist).

    Raises:
        agentmeter.storage.DatabaseError: missing, corrupt or foreign database, one of a
            newer agentmeter, or an old one that cannot be upgraded (read-only).
    """

    DIMENSIONS = tuple(DIMENSIONS)

    def __init__(
        self, db: str | os.PathLike[str] | None = None, *, engine: sa.Engine | None = None
    ) -> None:
        if engine is not None:
            self.url = engine.url.render_as_string(hide_password=False)
            self._engine = engine
            self._owns_engine = False
            ensure_current(engine, engine.url.render_as_string(hide_password=True))
        else:
            self.url, self._engine = open_existing(db)
            self._owns_engine = True
        self._dialect = self._engine.dialect.name
        self._rollups = True  # False: read everything from the raw events (tests)
        self._writer: RollupWriter | None = None

    def close(self) -> None:
        """Release the connections (when this store opened them)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> UsageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ sources
    def _hour_expr(self, ts: Any) -> Any:
        """``floor(ts / 3600) * 3600`` as an integer, as :func:`.schema.hour_of` computes it."""
        q = ts / HOUR
        if self._dialect == "postgresql":
            return sa.cast(sa.func.floor(q), sa.BigInteger) * HOUR
        t = sa.cast(q, sa.Integer)  # truncates: one less for negative non-integers
        return (t - sa.case((q < t, 1), else_=0)) * HOUR

    def _contains(self, col: Any, text: str) -> Any:
        if self._dialect == "postgresql":
            return sa.func.strpos(col, text) > 0
        return sa.func.instr(col, text) > 0

    def _tag_pairs(self) -> Any:
        """A table-valued function over the events' tag pairs (columns key, value)."""
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            fn = sa.func.jsonb_each_text(sa.cast(_E.tags, JSONB))
        else:
            fn = sa.func.json_each(_E.tags)
        return fn.table_valued("key", "value").alias("tag_pair")

    def _raw_conds(self, f: _Filter) -> list[Any]:
        """Conditions on the events table for every filter but time."""
        # '' (internal only: "without this key") is NULL in the events table.
        conds: list[Any] = [
            _E[col].is_(None) if value == "" else _E[col] == value for col, value in f.eq
        ]
        for k, v in f.tags:
            with_comma, at_end = tag_patterns(k, v)
            conds.append(
                sa.or_(self._contains(_E.tags, with_comma), self._contains(_E.tags, at_end))
            )
        return conds

    def _time_conds(
        self, lo: float | None, hi: float | None, hour_lo: int | None, hour_hi: int | None
    ) -> list[Any]:
        """Events with ``lo <= ts < hi`` whose hour is in ``[hour_lo, hour_hi)``.

        The hour bounds use the writer's own hour arithmetic, so an event is never
        counted both in a rollup hour and in a partial hour read from the events.
        """
        # One lower and one upper bound on ts (the tightest): the time index is then
        # searched over that range only (SQLite would take the first bound it sees).
        # The hour bounds are widened by a second for the arithmetic's rounding, then
        # applied exactly with the hour expression.
        lows = [b for b in (lo, None if hour_lo is None else hour_lo - 1) if b is not None]
        highs = [b for b in (hi, None if hour_hi is None else hour_hi + 1) if b is not None]
        conds: list[Any] = []
        if lows:
            conds.append(_E.ts >= max(lows))
        if highs:
            conds.append(_E.ts < min(highs))
        if hour_lo is not None:
            conds.append(self._hour_expr(_E.ts) >= hour_lo)
        if hour_hi is not None:
            conds.append(self._hour_expr(_E.ts) < hour_hi)
        return conds

    def _time_cond(self, f: _Filter) -> list[Any]:
        """Conditions selecting exactly the events a read of ``f`` counts: the whole
        hours of the rollups by the writer's hour arithmetic, the partial hours by time."""
        rollups, h_lo, h_hi = self._split(f)
        if not rollups:
            return self._time_conds(f.lo, f.hi, None, None)
        parts = [self._time_conds(None, None, h_lo, h_hi)]
        if f.lo is not None and h_lo is not None and f.lo < h_lo:
            parts.append(self._time_conds(f.lo, None, None, h_lo))
        if f.hi is not None and h_hi is not None and h_hi < f.hi:
            parts.append(self._time_conds(None, f.hi, h_hi, None))
        if len(parts) == 1:
            return parts[0]
        return [sa.or_(*(sa.and_(*p) for p in parts))]

    def _raw_part(
        self,
        f: _Filter,
        tag_key: str | None,
        hour_lo: int | None = None,
        hour_hi: int | None = None,
    ) -> Any:
        """Raw events in the shape of rollup rows (one row per event, or per event and
        tag pair when ``tag_key`` is given)."""
        cols: list[Any] = [self._hour_expr(_E.ts).label("hour")]
        cols += [(_E.kind if d == "kind" else sa.func.coalesce(_E[d], "")).label(d) for d in DIMS]
        is_err = sa.case((_E.status == "error", 1), else_=0)
        cat = sa.func.coalesce(_E.category, "")
        counters = {
            "events": sa.literal(1, sa.BigInteger),
            "input_tokens": _E.input_tokens,
            "output_tokens": _E.output_tokens,
            "cache_read_tokens": _E.cache_read_tokens,
            "cache_write_tokens": _E.cache_write_tokens,
            "reasoning_tokens": _E.reasoning_tokens,
            "failed": is_err,
            "estimated": _E.estimated,
            "cost_micros": sa.func.coalesce(_E.cost_micros, 0),
            "unpriced": sa.case((_E.cost_micros.is_(None), 1), else_=0),
            "latency_ms": sa.func.coalesce(_E.latency_ms, 0.0),
            "latency_min": _E.latency_ms,
            "latency_max": _E.latency_ms,
            "tokens_saved": _E.tokens_saved,
            "category": cat,
            "category_seq": sa.case((cat != "", _E.id), else_=sa.null()),
        }
        cols += [counters[name].label(name) for name in COUNTERS]
        if hour_lo is None and hour_hi is None:
            conds = self._raw_conds(f) + self._time_cond(f)
        else:
            conds = self._raw_conds(f) + self._time_conds(f.lo, f.hi, hour_lo, hour_hi)
        if tag_key is None:
            return sa.select(*cols).where(*conds)
        tv = self._tag_pairs()
        cols.append(tv.c.value.label("tag_value"))
        return (
            sa.select(*cols)
            .select_from(EVENTS.join(tv, sa.true()))
            .where(*conds, tv.c.key == tag_key)
        )

    def _rollup_part(
        self,
        f: _Filter,
        tag: tuple[str, str | None] | None,
        level: Level,
        lo: int | None,
        hi: int | None,
        with_value: bool,
    ) -> Any:
        """Rollup rows of ``level`` with period start in ``[lo, hi)`` (its period column
        labelled ``hour``: the start of the row's hour or day)."""
        table = level.main if tag is None else level.tags
        assert table is not None  # _level() picks a level with a tag table for tag reads
        t = table.c
        period = t[level.period]
        cols = [
            period.label("hour"),
            *(t[d] if d in level.dims else sa.literal("").label(d) for d in DIMS),
            *(t[c] for c in COUNTERS),
        ]
        conds: list[Any] = [t[col] == value for col, value in f.eq]
        if lo is not None:
            conds.append(period >= lo)
        if hi is not None:
            conds.append(period < hi)
        if tag is not None:
            conds.append(t.tag_key == tag[0])
            if tag[1] is not None:
                conds.append(t.tag_value == tag[1])
            if with_value:
                cols.append(t.tag_value)
        return sa.select(*cols).where(*conds)

    def _split(self, f: _Filter) -> tuple[bool, int | None, int | None]:
        """Whether whole hours can come from rollups, and the hours ``[lo, hi)`` they cover."""
        if not self._rollups:
            return False, None, None
        h_lo = None if f.lo is None else math.ceil(f.lo / HOUR) * HOUR
        h_hi = None if f.hi is None else math.floor(f.hi / HOUR) * HOUR
        if h_lo is not None and h_hi is not None and h_lo >= h_hi:
            return False, None, None
        return True, h_lo, h_hi

    def _plan(
        self,
        f: _Filter,
        finest: str = "day",
        need: Iterable[str] | None = None,
        table: str = "main",
    ) -> tuple[list[tuple[Level, int | None, int | None]], list[tuple[int | None, int | None]]]:
        """How to read ``f``'s time range: rollup segments ``(level, lo, hi)`` -- whole
        days from the smallest daily level holding every dimension the read needs
        (``need``: the ones it groups by, ``None`` for all; plus those ``f`` filters on)
        and the ``table`` (``main``, ``latency`` or ``tags``), the other whole hours
        from the hourly ones -- and raw-event segments ``(hour_lo, hour_hi)`` for the
        partial hours at the ends. Callers check :meth:`_split` first (no whole hour:
        raw events only). ``finest="all"``: the read groups by no period, so without
        a time range a whole-history level (one row per key) may answer it."""
        _, h_lo, h_hi = self._split(f)
        if finest == "all" and f.lo is None and f.hi is None:
            whole = self._alltime(f, need, table)
            if whole is not None:
                return [(whole, None, None)], []
        raw: list[tuple[int | None, int | None]] = []
        if f.lo is not None and h_lo is not None and f.lo < h_lo:
            raw.append((None, h_lo))
        if f.hi is not None and h_hi is not None and h_hi < f.hi:
            raw.append((h_hi, None))
        if finest == "hour":
            return [(HOURLY, h_lo, h_hi)], raw
        d_lo = None if h_lo is None else -(-h_lo // DAY) * DAY
        d_hi = None if h_hi is None else h_hi // DAY * DAY
        if d_lo is not None and d_hi is not None and d_lo >= d_hi:
            return [(HOURLY, h_lo, h_hi)], raw
        segs: list[tuple[Level, int | None, int | None]] = [
            (self._level(f, need, table), d_lo, d_hi)
        ]
        if h_lo is not None and d_lo is not None and h_lo < d_lo:
            segs.append((HOURLY, h_lo, d_lo))
        if h_hi is not None and d_hi is not None and d_hi < h_hi:
            segs.append((HOURLY, d_hi, h_hi))
        return segs, raw

    @staticmethod
    def _first_level(
        levels: Iterable[Level], f: _Filter, need: Iterable[str], table: str
    ) -> Level | None:
        """The first of ``levels`` holding the table and every dimension a read needs
        (those it groups by and those it filters on)."""
        wanted = {*need, *(col for col, _ in f.eq)}
        for level in levels:
            dims = level.latency_dims if table == "latency" else level.dims
            if getattr(level, table) is not None and wanted <= set(dims):
                return level
        return None

    @staticmethod
    def _alltime(f: _Filter, need: Iterable[str] | None, table: str) -> Level | None:
        """The whole-history level a read without a time range can use, if any."""
        return None if need is None else UsageStore._first_level(ALLTIME, f, need, table)

    @staticmethod
    def _level(f: _Filter, need: Iterable[str] | None, table: str) -> Level:
        """The smallest daily level with the dimensions and the table a read needs."""
        if need is None:
            return DAILY
        return UsageStore._first_level(DERIVED, f, need, table) or DAILY

    def _source(
        self,
        f: _Filter,
        tag_key: str | None = None,
        finest: str = "day",
        need: Iterable[str] | None = None,
    ) -> _Src:
        """Rows shaped like rollup rows covering exactly the events matching ``f``."""
        # Which rollup answers: the main one without tags; the tag rollup for one pair
        # (the filter's, or the by-dimension's key); none for several pairs.
        keys = {k for k, _ in f.tags}
        tag: tuple[str, str | None] | None = None
        usable = True
        if tag_key is not None:
            if keys - {tag_key}:
                usable = False
            else:
                tag = (tag_key, f.tags[0][1] if f.tags else None)
        elif len(f.tags) == 1:
            tag = f.tags[0]
        elif f.tags:
            usable = False
        rollups = self._split(f)[0] if usable else False
        if not rollups:
            part = self._raw_part(f, tag_key)
            return _Src(part.subquery("src"))
        segs, raws = self._plan(f, finest, need, "main" if tag is None else "tags")
        parts: list[Any] = [
            self._rollup_part(f, tag, level, lo, hi, tag_key is not None) for level, lo, hi in segs
        ]
        parts += [self._raw_part(f, tag_key, hour_lo=a, hour_hi=b) for a, b in raws]
        sel: Any = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        return _Src(sel.subquery("src"))

    def _latency_source(
        self, f: _Filter, need: Iterable[str] | None = None, finest: str = "day"
    ) -> _Src | None:
        """Tool calls per hour / customer / session / agent / tool / latency bucket."""
        if f.value("model") is not None or f.value("provider") is not None:
            return None  # tool calls have neither
        raw_cols = [
            self._hour_expr(_E.ts).label("hour"),
            *(
                sa.func.coalesce(_E[d], "").label(d)
                for d in ("customer_id", "session_id", "agent_id", "tool")
            ),
            _E.latency_bucket.label("bucket"),
            sa.literal(1, sa.BigInteger).label("calls"),
        ]
        base = [*self._raw_conds(f), _E.kind == "tool", _E.latency_bucket.is_not(None)]

        def raw(h_lo: int | None = None, h_hi: int | None = None) -> Any:
            if h_lo is None and h_hi is None:
                return sa.select(*raw_cols).where(*base, *self._time_cond(f))
            return sa.select(*raw_cols).where(*base, *self._time_conds(f.lo, f.hi, h_lo, h_hi))

        if f.tags or not self._split(f)[0]:
            return _Src(raw().subquery("lat"))
        segs, raws = self._plan(f, finest, need=need, table="latency")
        parts: list[Any] = []
        for level, lo, hi in segs:
            assert level.latency is not None
            t = level.latency.c
            period = t[level.period]

            def col(name: str, t: Any = t, level: Level = level) -> Any:
                return t[name] if name in level.latency_dims else sa.literal("").label(name)

            conds: list[Any] = [t[col] == value for col, value in f.eq]
            if lo is not None:
                conds.append(period >= lo)
            if hi is not None:
                conds.append(period < hi)
            parts.append(
                sa.select(
                    period.label("hour"), col("customer_id"), col("session_id"),
                    col("agent_id"), col("tool"), t.bucket, t.calls,
                ).where(*conds)
            )  # fmt: skip
        parts += [raw(a, b) for a, b in raws]
        sel: Any = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        return _Src(sel.subquery("lat"))

    # ---------------------------------------------------------- aggregates
    @staticmethod
    def _usage_cols(s: _Src) -> list[Any]:
        """One aggregate per counter of the tracker's row (``_fields.FIELDS``), mirroring
        how ``Tracker`` builds rows from each kind of call."""
        c = s.c
        llm = c.kind.in_(LLM_KINDS)
        emb = c.kind == "embedding"
        tool = c.kind == "tool"

        def when(cond: Any, col: Any, zero: Any = 0) -> Any:
            return _sum(sa.case((cond, col), else_=zero))

        exprs: dict[str, Any] = {
            "input_tokens": when(llm, c.input_tokens),
            "output_tokens": _sum(c.output_tokens),
            "cache_read_tokens": _sum(c.cache_read_tokens),
            "cache_write_tokens": _sum(c.cache_write_tokens),
            "reasoning_tokens": _sum(c.reasoning_tokens),
            "llm_calls": when(llm, c.events),
            "failed_llm_calls": when(llm, c.failed),
            "estimated_calls": _sum(c.estimated),
            "cost_micros": _sum(c.cost_micros),
            "unpriced_calls": when(sa.or_(llm, emb), c.unpriced),
            "llm_latency_ms": when(llm, c.latency_ms, 0.0),
            "embedding_tokens": when(emb, c.input_tokens),
            "embedding_calls": when(emb, c.events),
            "tool_calls": when(tool, c.events),
            "failed_tool_calls": when(tool, c.failed),
            "tool_duration_ms": when(tool, c.latency_ms, 0.0),
            "cache_hits": when(c.kind == "cache_hit", c.events),
            "cache_misses": when(c.kind == "cache_miss", c.events),
            "tokens_saved": _sum(c.tokens_saved),
        }
        assert tuple(exprs) == _fields.FIELDS
        return [expr.label(f"u_{name}") for name, expr in exprs.items()]

    def _fetch(self, stmt: Any, conn: sa.Connection | None = None) -> list[Sequence[Any]]:
        if conn is not None:
            return [tuple(r) for r in conn.execute(stmt)]
        with self._engine.connect() as c:
            return [tuple(r) for r in c.execute(stmt)]

    def _dim_col(self, s: _Src, dimension: str) -> tuple[Any, str]:
        """The source column of a ``by`` dimension (and the tag key, if any)."""
        if dimension.startswith(_TAG_PREFIX):
            key = dimension[len(_TAG_PREFIX) :]
            if not key:
                raise ValueError("tag dimension needs a key: 'tag:KEY'")
            return s.c.tag_value, key
        col = DIMENSIONS.get(dimension)
        if col is None:
            raise ValueError(
                f"dimension must be one of {sorted(DIMENSIONS)} or 'tag:KEY', got {dimension!r}"
            )
        return s.c[col], ""

    @staticmethod
    def _need(dimension: str) -> tuple[str, ...]:
        """The rollup dimensions a ``by`` / ``count_keys`` dimension groups by."""
        col = DIMENSIONS.get(dimension)
        return () if col is None else (col,)

    @staticmethod
    def _tag_key(dimension: str) -> str | None:
        if dimension.startswith(_TAG_PREFIX):
            return dimension[len(_TAG_PREFIX) :] or None
        return None

    # -------------------------------------------------------------- counts
    def count(
        self,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Number of stored events matching the filters."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        s = self._source(f, need=())
        return int(self._fetch(sa.select(_sum(s.c.events)))[0][0] or 0)

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        """Timestamps of the first and the last stored event."""
        # Two subqueries: each is one seek in the time index (SQLite reads every row
        # for min() and max() in one select).
        lo, hi = self._fetch(
            sa.select(
                sa.select(sa.func.min(_E.ts)).scalar_subquery(),
                sa.select(sa.func.max(_E.ts)).scalar_subquery(),
            )
        )[0]

        def conv(t: Any) -> datetime | None:
            return None if t is None else datetime.fromtimestamp(float(t), UTC)

        return conv(lo), conv(hi)

    def totals(
        self,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Usage:
        """Usage summed over everything matching the filters."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        return self._totals(f)

    def _totals(self, f: _Filter, conn: sa.Connection | None = None) -> Usage:
        s = self._source(f, need=())
        return Usage.from_row(_row(self._fetch(sa.select(*self._usage_cols(s)), conn)[0]))

    def by(
        self,
        dimension: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> dict[str, Usage]:
        """``{key: Usage}`` grouped by ``"customer"``, ``"session"``, ``"agent"``,
        ``"model"``, ``"provider"``, ``"tool"`` or ``"tag:KEY"`` (events without that
        key are left out), largest total tokens first, then by key."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        if (limit is not None and limit < 0) or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        tag_key = self._tag_key(dimension)
        self._check_dimension(dimension)
        table = self._session_table(f) if dimension == "session" else None
        if table is not None:
            t = table.c
            page = (
                sa.select(t.session_id, *(t[name] for name in SESSION_FIELDS))
                .where(*(t[col] == value for col, value in f.eq))
                .order_by(t.tokens.desc(), t.session_id)
                .offset(offset)
            )
            if limit is not None:
                page = page.limit(limit)
            return {str(r[0]): Usage.from_row(_row(r[1:])) for r in self._fetch(page)}
        s = self._source(f, tag_key, finest="all", need=self._need(dimension))
        col, _ = self._dim_col(s, dimension)
        total = _sum(s.c.input_tokens + s.c.output_tokens)
        stmt = (
            sa.select(col, *self._usage_cols(s))
            .where(col != "")
            .group_by(col)
            .order_by(total.desc(), col)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return {str(r[0]): Usage.from_row(_row(r[1:])) for r in self._fetch(stmt)}

    def keys(
        self,
        dimension: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The keys :meth:`by` would return, in its order, without their usage -- for a
        search over every key that then reads the usage of one page of them. Sessions
        without a time range are read from the per-session index (the ids only)."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        self._check_dimension(dimension)
        table = self._session_table(f) if dimension == "session" else None
        if table is None:
            kw: dict[str, Any] = {
                "customer": customer, "session": session, "agent": agent, "model": model,
                "provider": provider, "tool": tool, "tags": tags,
            }  # fmt: skip
            return list(self.by(dimension, since, until, **kw))
        t = table.c
        stmt = (
            sa.select(t.session_id)
            .where(*(t[col] == value for col, value in f.eq))
            .order_by(t.tokens.desc(), t.session_id)
        )
        return [str(r[0]) for r in self._fetch(stmt)]

    def unkeyed(
        self,
        dimension: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Usage:
        """Usage of the events matching the filters that have no key of ``dimension``
        (``"customer"``, ``"session"``, ``"agent"``, ``"model"``, ``"provider"`` or
        ``"tool"``): what :meth:`by` leaves out. Read through the dimension's index
        (the rows keyed ``''``), so a page of :meth:`by` and this give a breakdown
        that adds up to :meth:`totals` without listing every key."""
        self._check_dimension(dimension)
        if dimension not in DIMENSIONS:
            raise ValueError(f"unkeyed() takes one of {sorted(DIMENSIONS)}, got {dimension!r}")
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        col = DIMENSIONS[dimension]
        if f.value(col) is not None:
            return Usage()  # every matching event has that key
        return self._totals(_Filter(f.lo, f.hi, (*f.eq, (col, "")), f.tags))

    def _session_table(self, f: _Filter) -> sa.Table | None:
        """The per-session table answering a session read of ``f``: none for a time
        range, tags, or a filter on another dimension (those group the rollups)."""
        if not self._rollups or f.lo is not None or f.hi is not None or f.tags:
            return None
        cols = {col for col, _ in f.eq}
        if not cols <= {"customer_id", "session_id"} or any(v == "" for _, v in f.eq):
            return None
        return CUSTOMER_SESSIONS if "customer_id" in cols else SESSIONS

    def _check_dimension(self, dimension: str) -> None:
        if not isinstance(dimension, str):
            raise TypeError("dimension must be a str")
        if dimension.startswith(_TAG_PREFIX):
            if not dimension[len(_TAG_PREFIX) :]:
                raise ValueError("tag dimension needs a key: 'tag:KEY'")
            return
        if dimension not in DIMENSIONS:
            raise ValueError(
                f"dimension must be one of {sorted(DIMENSIONS)} or 'tag:KEY', got {dimension!r}"
            )

    def count_keys(
        self,
        dimension: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """How many distinct keys of ``dimension`` (as for :meth:`by`) match the filters."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        self._check_dimension(dimension)
        table = self._session_table(f) if dimension == "session" else None
        if table is not None:
            if f.value("session_id") is not None:  # that one session, if stored
                t = table.c
                one = sa.select(sa.func.count()).where(*(t[c] == v for c, v in f.eq))
                return int(self._fetch(one)[0][0])
            cust = f.value("customer_id") or ""  # '': every session
            c = SESSION_COUNTS.c
            found = self._fetch(sa.select(c.sessions).where(c.customer_id == cust))
            return int(found[0][0]) if found else 0
        s = self._source(f, self._tag_key(dimension), finest="all", need=self._need(dimension))
        col, _ = self._dim_col(s, dimension)
        stmt = sa.select(sa.func.count(sa.distinct(col))).where(col != "")
        return int(self._fetch(stmt)[0][0])

    def timeseries(
        self,
        bucket: str = "hour",
        by: str | None = None,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[tuple[datetime, str | None, Usage]]:
        """Usage per UTC hour or day (``bucket``), optionally per ``by`` key.

        Returns ``[(bucket start, key, usage)]`` ordered by time, then key; only
        buckets with events appear. With ``by``, events without that key are one
        group of key ``None`` (so a bucket's groups add up to its total).
        """
        if bucket not in TIME_BUCKETS:
            raise ValueError(f"bucket must be one of {list(TIME_BUCKETS)}, got {bucket!r}")
        if by is not None and by not in _SERIES_BY:
            raise ValueError(f"by must be None or one of {list(_SERIES_BY)}, got {by!r}")
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        s = self._source(f, finest=bucket, need=() if by is None else (DIMENSIONS[by],))
        when = s.c.hour if bucket == "hour" else s.c.hour - s.c.hour % DAY
        when = when.label("t")
        keys: list[Any] = [when]
        if by is not None:
            keys.append(s.c[DIMENSIONS[by]].label("k"))
        stmt = sa.select(*keys, *self._usage_cols(s)).group_by(*keys).order_by(*keys)
        out: list[tuple[datetime, str | None, Usage]] = []
        for r in self._fetch(stmt):
            t = datetime.fromtimestamp(int(r[0]), UTC)
            key = _none(r[1]) if by is not None else None
            out.append((t, key, Usage.from_row(_row(r[len(keys) :]))))
        return out

    def session_times(self, session_ids: Iterable[str]) -> dict[str, tuple[datetime, datetime]]:
        """First and last event time of each session."""
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return {}
        out: dict[str, tuple[datetime, datetime]] = {}
        if self._rollups:  # the per-session rows: one primary-key lookup each
            t = SESSIONS.c
            for i in range(0, len(ids), 500):
                rows = sa.select(t.session_id, t.first_seen, t.last_seen).where(
                    t.session_id.in_(ids[i : i + 500])
                )
                for key, lo, hi in self._fetch(rows):
                    if lo is not None and hi is not None:
                        out[str(key)] = (
                            datetime.fromtimestamp(float(lo), UTC),
                            datetime.fromtimestamp(float(hi), UTC),
                        )
            return out
        # Two seeks per session in the (session_id, ts) index, one statement compiled
        # once: not a GROUP BY reading every event of the sessions.
        sid: Any = sa.bindparam("sid")
        stmt = sa.select(
            sa.select(sa.func.min(_E.ts)).where(_E.session_id == sid).scalar_subquery(),
            sa.select(sa.func.max(_E.ts)).where(_E.session_id == sid).scalar_subquery(),
        )
        with self._engine.connect() as conn:
            for s in ids:
                lo, hi = conn.execute(stmt, {"sid": s}).one()
                if lo is not None and hi is not None:
                    out[s] = (
                        datetime.fromtimestamp(float(lo), UTC),
                        datetime.fromtimestamp(float(hi), UTC),
                    )
        return out

    # ------------------------------------------------ cells and tool stats
    def _cells(self, f: _Filter, *, tools_only: bool = False) -> _views.CellRows:
        s = self._source(f)
        keys = [
            s.c[d] for d in ("session_id", "model", "provider", "agent_id", "tool", "customer_id")
        ]
        stmt = sa.select(*keys, *self._usage_cols(s)).group_by(*keys)
        if tools_only:
            stmt = stmt.where(s.c.tool != "")
        return [
            (
                _none(r[0]),
                (_none(r[1]), _none(r[2]), _none(r[3]), _none(r[4]), _none(r[5])),
                _row(r[6:]),
            )
            for r in self._fetch(stmt)
        ]

    def _tool_accs(
        self, f: _Filter, *, sessions: bool = True, customers: bool = True
    ) -> tuple[_views.ToolRows, _views.ToolRows]:
        """Tool call statistics per (session, tool) and per (customer, tool)."""
        if f.value("model") is not None or f.value("provider") is not None:
            return [], []  # tool calls have neither
        s = self._source(f)
        c = s.c
        keys = [c.session_id, c.customer_id, c.tool]
        is_tool = [c.kind == "tool", c.tool != ""]
        stmt = (
            sa.select(
                *keys,
                _sum(c.events),
                _sum(c.failed),
                _sum(c.latency_ms),
                sa.func.min(c.latency_min),
                sa.func.max(c.latency_max),
            )
            .where(*is_tool)
            .group_by(*keys)
        )
        by_session: dict[tuple[str | None, str], _tools.ToolAcc] = {}
        by_customer: dict[tuple[str, str], _tools.ToolAcc] = {}
        rows = self._fetch(stmt)
        if not rows:
            return [], []

        def merge(
            acc: _tools.ToolAcc, calls: int, failed: int, total: float, lo: Any, hi: Any
        ) -> None:
            acc.calls += calls
            acc.failed += failed
            acc.ok += calls - failed
            acc.total += total
            if lo is not None and (acc.min is None or float(lo) < acc.min):
                acc.min = float(lo)
            if hi is not None and (acc.max is None or float(hi) > acc.max):
                acc.max = float(hi)

        for sess, cust, tool, calls, failed, total, lo, hi in rows:
            n, nf, tot = int(calls), int(failed), float(total)
            if sessions:
                acc = by_session.setdefault((_none(sess), str(tool)), _tools.ToolAcc())
                merge(acc, n, nf, tot, lo, hi)
            if customers and cust != "":
                cacc = by_customer.setdefault((str(cust), str(tool)), _tools.ToolAcc())
                merge(cacc, n, nf, tot, lo, hi)
        # The category of the last call that named one (as the live accumulators keep it).
        cat = (
            sa.select(*keys, c.category, sa.func.max(c.category_seq))
            .where(*is_tool, c.category != "", c.category_seq.is_not(None))
            .group_by(*keys, c.category)
        )
        best_s: dict[tuple[str | None, str], tuple[int, str]] = {}
        best_c: dict[tuple[str, str], tuple[int, str]] = {}
        for sess, cust, tool, category, seq in self._fetch(cat):
            pick = (int(seq), str(category))
            skey = (_none(sess), str(tool))
            if sessions and pick > best_s.get(skey, (-1, "")):
                best_s[skey] = pick
            ckey = (str(cust), str(tool))
            if customers and cust != "" and pick > best_c.get(ckey, (-1, "")):
                best_c[ckey] = pick
        for skey, (_, category) in best_s.items():
            by_session[skey].category = category
        for ckey, (_, category) in best_c.items():
            by_customer[ckey].category = category
        # Latency histograms: the rows as stored (per period and agent too), summed here
        # -- a GROUP BY would sort as many rows as it returns.
        lat = self._latency_source(f)
        if lat is not None:
            lk = [lat.c.session_id, lat.c.customer_id, lat.c.tool, lat.c.bucket, lat.c.calls]
            for sess, cust, tool, b, n in self._fetch(sa.select(*lk).where(lat.c.tool != "")):
                if sessions:
                    sacc = by_session.get((sess or None, tool))
                    if sacc is not None:
                        h = sacc.hist
                        h[b] = h.get(b, 0) + int(n)
                if customers and cust:
                    cacc2 = by_customer.get((cust, tool))
                    if cacc2 is not None:
                        h = cacc2.hist
                        h[b] = h.get(b, 0) + int(n)
        if sessions:
            self._recent(f, "session_id", by_session)
        if customers:
            self._recent(f, "customer_id", by_customer)  # type: ignore[arg-type]
        return (
            [(sess, tool, a) for (sess, tool), a in by_session.items()],
            [(cust, tool, a) for (cust, tool), a in by_customer.items()],
        )

    def _recent(
        self, f: _Filter, owner_col: str, accs: Mapping[tuple[str | None, str], _tools.ToolAcc]
    ) -> None:
        """Fill the last few call ids of each (owner, tool): one indexed ``LIMIT`` query
        each ((tool, session, id) / (customer, tool, id) indexes), one statement compiled
        once and executed per pair."""
        if not accs:
            return
        base = [_E.kind == "tool", *self._raw_conds(f), *self._time_cond(f)]
        tool: Any = sa.bindparam("tool")
        owner: Any = sa.bindparam("owner")

        def stmt(owner_cond: Any) -> Any:
            return (
                sa.select(_E.call_id)
                .where(*base, _E.tool == tool, owner_cond)
                .order_by(_E.id.desc())
                .limit(_tools.RECENT_IDS)
            )

        named, unowned = stmt(_E[owner_col] == owner), stmt(_E[owner_col].is_(None))
        with self._engine.connect() as conn:
            for (who, name), acc in accs.items():
                if who is None:
                    rows = conn.execute(unowned, {"tool": name}).fetchall()
                else:
                    rows = conn.execute(named, {"tool": name, "owner": who}).fetchall()
                acc.recent.extend(str(r[0]) for r in reversed(rows))

    def _latest_by_tool(self, f: _Filter, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """The latest call ids of each tool (by time), over every session.

        The rollups say from which period on (a day of the smallest daily level
        holding the tool and the filters, or an hour at the ends of the range) the
        last few calls lie; the events from there on are read through the time index,
        newest first.
        """
        out: dict[str, tuple[str, ...]] = {}
        base = [_E.kind == "tool", *self._raw_conds(f), *self._time_cond(f)]
        for name in names:
            tf = _Filter(f.lo, f.hi, (*f.eq, ("tool", name)), f.tags)
            src = self._source(tf, need=("tool",))
            hours = (
                sa.select(src.c.hour, _sum(src.c.events))
                .where(src.c.kind == "tool")
                .group_by(src.c.hour)
                .order_by(src.c.hour.desc())
                .limit(_tools.RECENT_IDS)
            )
            seen, cutoff = 0, None
            for hour, n in self._fetch(hours):
                seen += int(n)
                cutoff = int(hour)
                if seen >= _tools.RECENT_IDS:
                    break
            if cutoff is None:
                out[name] = ()
                continue
            # coalesce(): not the tool index (all of the tool's calls), the time index.
            stmt = (
                sa.select(_E.call_id)
                .where(*base, sa.func.coalesce(_E.tool, "") == name, _E.ts >= cutoff - 1)
                .order_by(_E.ts.desc(), _E.id.desc())
                .limit(_tools.RECENT_IDS)
            )
            out[name] = tuple(str(r[0]) for r in reversed(self._fetch(stmt)))
        return out

    def _by_tool(self, f: _Filter) -> dict[str, ToolStats]:
        """``{tool: ToolStats}`` over every session, grouped by tool alone (no per-session
        work): calls, durations and histogram of the tool calls, usage of the calls made
        inside the tool, the category of its last call, its latest call ids by time."""
        s = self._source(f, finest="all", need=("tool",))
        c = s.c
        is_tool = [c.kind == "tool", c.tool != ""]
        accs: dict[str, _tools.ToolAcc] = {}
        if f.value("model") is None and f.value("provider") is None:  # tool calls have neither
            stmt = (
                sa.select(
                    c.tool,
                    _sum(c.events),
                    _sum(c.failed),
                    _sum(c.latency_ms),
                    sa.func.min(c.latency_min),
                    sa.func.max(c.latency_max),
                )
                .where(*is_tool)
                .group_by(c.tool)
            )
            for name, calls, failed, total, lo, hi in self._fetch(stmt):
                acc = accs[str(name)] = _tools.ToolAcc()
                acc.calls, acc.failed = int(calls), int(failed)
                acc.ok, acc.total = acc.calls - acc.failed, float(total)
                acc.min = None if lo is None else float(lo)
                acc.max = None if hi is None else float(hi)
            cat = (
                sa.select(c.tool, c.category, sa.func.max(c.category_seq))
                .where(*is_tool, c.category != "", c.category_seq.is_not(None))
                .group_by(c.tool, c.category)
            )
            best: dict[str, tuple[int, str]] = {}
            for name, category, seq in self._fetch(cat):
                pick = (int(seq), str(category))
                if pick > best.get(str(name), (-1, "")):
                    best[str(name)] = pick
            for name, (_, category) in best.items():
                accs[name].category = category
            lat = self._latency_source(f, need=("tool",), finest="all")
            if lat is not None and accs:
                lk = [lat.c.tool, lat.c.bucket]
                hist = sa.select(*lk, _sum(lat.c.calls)).where(lat.c.tool != "").group_by(*lk)
                for name, b, n in self._fetch(hist):
                    target = accs.get(str(name))
                    if target is not None:
                        target.hist[int(b)] = target.hist.get(int(b), 0) + int(n)
        llm_stmt = sa.select(c.tool, *self._usage_cols(s)).where(c.tool != "").group_by(c.tool)
        llm = {str(r[0]): _row(r[1:]) for r in self._fetch(llm_stmt)}
        latest = self._latest_by_tool(f, accs)
        out: dict[str, ToolStats] = {}
        for name in sorted(set(accs) | set(llm)):
            stats = _tools.build(name, accs.get(name), llm.get(name))
            if name in latest:
                stats = stats.model_copy(update={"recent_call_ids": latest[name]})
            out[name] = stats
        return out

    # ------------------------------------------------------- tracker views
    def snapshot(
        self,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Snapshot:
        """The same :class:`~agentmeter.Snapshot` a tracker that saw these events would
        give (``by_customer`` and ``by_customer_tool`` included)."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        tools, ctools = self._tool_accs(f)
        return _views.snapshot(self._cells(f), tools, ctools)

    def tools_snapshot(
        self,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Snapshot:
        """A snapshot of the tool-attributed usage only (its ``by_tool``, ``by_category``,
        ``by_session_tool`` and ``by_customer_tool`` equal the full snapshot's, at a
        fraction of the cost)."""
        f = _filter(
            since, until, customer=customer, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        tools, ctools = self._tool_accs(f)
        return _views.snapshot(self._cells(f, tools_only=True), tools, ctools)

    def session(
        self,
        session_id: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> SessionUsage:
        """One session's usage, breakdowns and tool stats (``budget`` is ``None``: budgets
        live in the tracker, not in the database).

        Raises:
            agentmeter.NotFoundError: if nothing of the session matches the filters.
        """
        f = _filter(
            since, until, customer=customer, session=session_id, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        cells = self._cells(f)
        tools, _ = self._tool_accs(f, customers=False)
        if not cells and not tools:
            raise NotFoundError("session", session_id)
        return _views.session_usage(
            session_id, [(k, r) for _, k, r in cells], [(t, a) for _, t, a in tools], None
        )

    def customer(
        self,
        customer_id: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        session: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> CustomerUsage:
        """One customer's usage per model, agent and session, and its tool stats.

        Raises:
            agentmeter.NotFoundError: if nothing of the customer matches the filters.
        """
        f = _filter(
            since, until, customer=customer_id, session=session, agent=agent, model=model,
            provider=provider, tool=tool, tags=tags,
        )  # fmt: skip
        cells = self._cells(f)
        _, ctools = self._tool_accs(f, sessions=False)
        if not cells and not ctools:
            raise NotFoundError("customer", customer_id)
        return _views.customer_usage(customer_id, cells, [(t, a) for _, t, a in ctools], None)

    def tool_stats(
        self,
        session_id: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        customer: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, ToolStats]:
        """``{tool: ToolStats}`` over everything, of one session, or of one customer
        (empty when the session / customer has nothing, as the tracker's).

        Over everything, each tool's ``recent_call_ids`` are its latest calls by time
        (of any session), and its category that of its last call naming one.
        """
        kw: dict[str, Any] = {
            "agent": agent, "model": model, "provider": provider, "tool": tool, "tags": tags,
        }  # fmt: skip
        try:
            if session_id is not None:
                return dict(self.session(session_id, since, until, customer=customer, **kw).tools)
            if customer is not None:
                return dict(self.customer(customer, since, until, **kw).tools)
        except NotFoundError:
            return {}
        return self._by_tool(_filter(since, until, **kw))

    # -------------------------------------------------------------- reset
    def reset(
        self,
        *,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        session: str | None = None,
        customer: str | None = None,
    ) -> dict[str, int]:
        """Delete the stored events matching the bounds, with their rollup contribution.

        At least one bound is required: deleting billing data is never the default.

        Returns:
            What was removed: ``events``, ``llm_calls``, ``embedding_calls``,
            ``tool_calls``, ``total_tokens``, ``cost_micros``.

        Raises:
            ValueError: when no bound is given.
        """
        if since is None and until is None and session is None and customer is None:
            raise ValueError("name what to delete: since/until, session or customer")
        f = _filter(since, until, session=session, customer=customer)
        with self._engine.connect() as conn:
            self._begin_exclusive(conn)
            gone = self._totals(f, conn)
            n = int(
                self._fetch(sa.select(_sum(self._source(f, need=()).c.events)), conn)[0][0] or 0
            )
            # The sessions that lose events: those of the daily rows of the days the
            # bounds touch (before anything is deleted); rebuilt at the end.
            dr = DAILY.main.c
            sess_conds = [dr.session_id != "", *(dr[col] == value for col, value in f.eq)]
            if f.lo is not None:
                sess_conds.append(dr.day >= day_of_hour(hour_of(f.lo)))
            if f.hi is not None:
                sess_conds.append(dr.day < f.hi)
            affected = [
                str(r[0])
                for r in self._fetch(sa.select(dr.session_id).where(*sess_conds).distinct(), conn)
            ]
            rollups, h_lo, h_hi = self._split(f)
            hours: set[int] = set()  # deleted in part: rebuilt from the events left
            days: set[int] = set()  # deleted in part: rebuilt from the hourly rows left
            whole_days: tuple[int | None, int | None] | None = None
            if rollups:
                if f.lo is not None and h_lo is not None and f.lo < h_lo:
                    hours.add(h_lo - HOUR)
                if f.hi is not None and h_hi is not None and h_hi < f.hi:
                    hours.add(h_hi)
                d_lo = None if h_lo is None else -(-h_lo // DAY) * DAY
                d_hi = None if h_hi is None else h_hi // DAY * DAY
                if d_lo is None or d_hi is None or d_lo < d_hi:
                    whole_days = (d_lo, d_hi)
                days |= {day_of_hour(h) for h in (h_lo, h_hi) if h is not None and h % DAY}
            else:  # both bounds in one hour (or across one boundary)
                hours = {hour_of(b) for b in (f.lo, f.hi) if b is not None}
            days |= {day_of_hour(h) for h in hours}

            # The derived daily levels: with every filtered dimension in their key, whole
            # days go like the daily ones; otherwise (a session reset of the customer
            # level, ...) every day the deleted events touched is rebuilt from the daily
            # rows left, since their rows cannot tell the deleted events apart.
            exact = {lv.name: all(c in lv.dims for c, _ in f.eq) for lv in DERIVED}
            touched: set[int] = set()
            if whole_days is not None and not all(exact.values()):
                t = DAILY.main.c
                conds = [t[col] == value for col, value in f.eq]
                if whole_days[0] is not None:
                    conds.append(t.day >= whole_days[0])
                if whole_days[1] is not None:
                    conds.append(t.day < whole_days[1])
                found = self._fetch(sa.select(t.day).where(*conds).distinct(), conn)
                touched = {int(r[0]) for r in found}

            def conds_of(table: sa.Table, eq: list[tuple[str, str]]) -> list[Any]:
                return [table.c[col] == value for col, value in eq]

            def delete(
                table: sa.Table, period: str, lo: int | None, hi: int | None, eq: Any = f.eq
            ) -> None:
                conds = conds_of(table, eq)
                if lo is not None:
                    conds.append(table.c[period] >= lo)
                if hi is not None:
                    conds.append(table.c[period] < hi)
                conn.execute(table.delete().where(*conds))

            def delete_in(table: sa.Table, period: str, starts: set[int], eq: Any = f.eq) -> None:
                if starts:
                    conds = conds_of(table, eq)
                    conn.execute(table.delete().where(*conds, table.c[period].in_(sorted(starts))))

            for table in HOURLY.tables:
                if rollups:
                    delete(table, "hour", h_lo, h_hi)
                delete_in(table, "hour", hours)
            for table in DAILY.tables:
                if whole_days is not None:
                    delete(table, "day", *whole_days)
                delete_in(table, "day", days)
            rebuild: dict[str, tuple[set[int], list[tuple[str, str]]]] = {}
            for level in DERIVED:
                eq_l = [(c, v) for c, v in f.eq if c in level.dims]
                dirty = set(days) if exact[level.name] else days | touched
                rebuild[level.name] = (dirty, eq_l)
                for table in level.tables:
                    if whole_days is not None and exact[level.name]:
                        delete(table, "day", *whole_days, eq=eq_l)
                    delete_in(table, "day", dirty, eq=eq_l)
            conn.execute(EVENTS.delete().where(*self._raw_conds(f), *self._time_cond(f)))
            writer = self._writer or RollupWriter(self._engine.dialect)
            self._writer = writer
            if hours:  # by the writer's own code, from the events left
                eq_raw = [_E[col] == value for col, value in f.eq]
                in_hours = sa.or_(
                    *(sa.and_(*self._time_conds(None, None, h, h + HOUR)) for h in sorted(hours))
                )
                rest = sa.select(_E.id, *(_E[c] for c in COLUMNS)).where(*eq_raw, in_hours)
                writer.add(
                    conn,
                    ((int(r[0]), tuple(r[1:])) for r in self._fetch(rest, conn)),
                    daily=False,
                )

            def rows_in_days(
                table: sa.Table, period: str, starts: set[int], eq: Any
            ) -> list[Sequence[Any]]:
                p = table.c[period]
                in_days = sa.or_(*(sa.and_(p >= d, p < d + DAY) for d in sorted(starts)))
                return self._fetch(sa.select(table).where(*conds_of(table, eq), in_days), conn)

            if days:  # the days from their hourly rows (now up to date)
                hourly = [rows_in_days(t, "hour", days, f.eq) for t in HOURLY.tables]
                writer.add_rows(conn, HOURLY, DAILY, *hourly)
            for level in DERIVED:  # their days from the daily rows (now up to date)
                dirty, eq_l = rebuild[level.name]
                if dirty:
                    daily = [
                        rows_in_days(t, "day", dirty, eq_l) if needed else []
                        for t, needed in (
                            (DAILY.main, True),
                            (DAILY.latency, level.latency is not None),
                            (DAILY.tags, level.tags is not None),
                        )
                        if t is not None
                    ]
                    writer.add_rows(conn, DAILY, level, *daily)
            writer.rebuild_alltime(conn)  # from the derived daily rows, now up to date
            if affected:  # from the daily rows, now up to date
                writer.rebuild_sessions(conn, affected)
            conn.commit()
        return {
            "events": n,
            "llm_calls": gone.llm_calls,
            "embedding_calls": gone.embedding_calls,
            "tool_calls": gone.tool_calls,
            "total_tokens": gone.total_tokens,
            "cost_micros": gone.cost_micros,
        }

    def _begin_exclusive(self, conn: sa.Connection) -> None:
        """Start a transaction that no writer can interleave with (a reset)."""
        if self._dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA busy_timeout = 30000")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(
                "LOCK TABLE "
                + ", ".join(t.name for t in (EVENTS, *ROLLUP_TABLES))
                + " IN SHARE ROW EXCLUSIVE MODE"
            )
