"""Reading a stored database back: the tracker's aggregates, computed by SQL.

:class:`UsageStore` answers the same questions as a live tracker -- ``snapshot()``,
``session(id)``, ``tool_stats()`` -- with ``GROUP BY`` queries over the events
table, optionally restricted to a time range (``since`` inclusive, ``until``
exclusive), and returns the same pydantic models (:class:`~agentmeter.Snapshot`,
:class:`~agentmeter.SessionUsage`, :class:`~agentmeter.ToolStats`,
:class:`~agentmeter.Usage`).

Tool latency percentiles: every stored tool event carries the bucket of the
tracker's log-scale latency histogram (``agentmeter._latency``, 16 buckets per
doubling); ``GROUP BY session, tool, bucket`` rebuilds the exact histogram the
live tracker keeps, so ``p50_ms`` / ``p95_ms`` read back from a database are
identical to the live ones (within ~2.2% of the exact percentile, clamped to the
exact min/max, which SQL computes exactly).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .. import _fields, _tools, _views
from ..models import SessionUsage, Snapshot, ToolStats, Usage
from ._deps import sqlalchemy as sa
from .engine import open_existing
from .schema import EVENTS, LLM_KINDS

__all__ = ["UsageStore", "to_epoch"]

_E = EVENTS.c
_IS_LLM = _E.kind.in_(LLM_KINDS)
_PRICED_KIND = _E.kind.in_((*LLM_KINDS, "embedding"))


def _sum(expr: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(expr), 0)


def _count_if(cond: Any) -> Any:
    return _sum(sa.case((cond, 1), else_=0))


# One SQL aggregate per counter of the tracker's row (``_fields.FIELDS``), mirroring
# how Tracker._record builds rows from each kind of call.
_USAGE: dict[str, Any] = {
    "input_tokens": _sum(sa.case((_IS_LLM, _E.input_tokens), else_=0)),
    "output_tokens": _sum(_E.output_tokens),
    "cache_read_tokens": _sum(_E.cache_read_tokens),
    "cache_write_tokens": _sum(_E.cache_write_tokens),
    "reasoning_tokens": _sum(_E.reasoning_tokens),
    "llm_calls": _count_if(_IS_LLM),
    "failed_llm_calls": _count_if(sa.and_(_IS_LLM, _E.status == "error")),
    "estimated_calls": _sum(_E.estimated),
    "cost_micros": _sum(sa.func.coalesce(_E.cost_micros, 0)),
    "unpriced_calls": _count_if(sa.and_(_PRICED_KIND, _E.cost_micros.is_(None))),
    "llm_latency_ms": _sum(sa.case((_IS_LLM, sa.func.coalesce(_E.latency_ms, 0.0)), else_=0.0)),
    "embedding_tokens": _sum(sa.case((_E.kind == "embedding", _E.input_tokens), else_=0)),
    "embedding_calls": _count_if(_E.kind == "embedding"),
    "tool_calls": _count_if(_E.kind == "tool"),
    "failed_tool_calls": _count_if(sa.and_(_E.kind == "tool", _E.status == "error")),
    "tool_duration_ms": _sum(sa.case((_E.kind == "tool", _E.latency_ms), else_=0.0)),
    "cache_hits": _count_if(_E.kind == "cache_hit"),
    "cache_misses": _count_if(_E.kind == "cache_miss"),
    "tokens_saved": _sum(_E.tokens_saved),
}
assert tuple(_USAGE) == _fields.FIELDS
_USAGE_COLS = [expr.label(f"u_{name}") for name, expr in _USAGE.items()]
_CASTS = [float if name in _fields.FLOAT_FIELDS else int for name in _fields.FIELDS]
_TOTAL_TOKENS = _sum(_E.input_tokens + _E.output_tokens)
_DIMENSIONS = {
    "session": _E.session_id,
    "model": _E.model,
    "provider": _E.provider,
    "agent": _E.agent_id,
    "tool": _E.tool,
}


def to_epoch(value: datetime | float | int | None) -> float | None:
    """Epoch seconds of a datetime (naive means UTC) or a number."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return float(value)


def _row(values: Sequence[Any]) -> list[Any]:
    """SQL sums (ints, floats, Decimals on PostgreSQL) as a tracker counter row."""
    return [cast(v or 0) for cast, v in zip(_CASTS, values, strict=True)]


class UsageStore:
    """Read-only aggregate queries over an agentmeter database.

    Args:
        db: A path (SQLite) or SQLAlchemy URL; default ``$AGENTMETER_DB`` or
            ``./agentmeter.db``. Must exist and hold agentmeter's tables.
        engine: Use this engine instead of opening ``db`` (its tables must exist).

    Raises:
        agentmeter.storage.DatabaseError: missing, corrupt or foreign database.
    """

    def __init__(
        self, db: str | os.PathLike[str] | None = None, *, engine: sa.Engine | None = None
    ) -> None:
        if engine is not None:
            self.url = engine.url.render_as_string(hide_password=False)
            self._engine = engine
            self._owns_engine = False
        else:
            self.url, self._engine = open_existing(db)
            self._owns_engine = True

    def close(self) -> None:
        """Release the connections (when this store opened them)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> UsageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- helpers
    @staticmethod
    def _where(
        since: datetime | float | None, until: datetime | float | None, **eq: str | None
    ) -> list[Any]:
        conds: list[Any] = []
        lo, hi = to_epoch(since), to_epoch(until)
        if lo is not None:
            conds.append(_E.ts >= lo)
        if hi is not None:
            conds.append(_E.ts < hi)
        for dim, value in eq.items():
            if value is not None:
                conds.append(_DIMENSIONS[dim] == value)
        return conds

    def _fetch(self, stmt: Any) -> list[Sequence[Any]]:
        with self._engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt)]

    # -------------------------------------------------------------- counts
    def count(
        self,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        session: str | None = None,
        model: str | None = None,
        agent: str | None = None,
        tool: str | None = None,
    ) -> int:
        """Number of stored events in the range (optionally of one session / model / ...)."""
        conds = self._where(since, until, session=session, model=model, agent=agent, tool=tool)
        stmt = sa.select(sa.func.count()).select_from(EVENTS).where(*conds)
        return int(self._fetch(stmt)[0][0])

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        """Timestamps of the first and the last stored event."""
        lo, hi = self._fetch(sa.select(sa.func.min(_E.ts), sa.func.max(_E.ts)))[0]

        def conv(t: Any) -> datetime | None:
            return None if t is None else datetime.fromtimestamp(float(t), UTC)

        return conv(lo), conv(hi)

    def totals(
        self,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        session: str | None = None,
        model: str | None = None,
        agent: str | None = None,
        tool: str | None = None,
    ) -> Usage:
        """Usage summed over the range (optionally of one session / model / agent / tool)."""
        conds = self._where(since, until, session=session, model=model, agent=agent, tool=tool)
        stmt = sa.select(*_USAGE_COLS).where(*conds)
        return Usage.from_row(_row(self._fetch(stmt)[0]))

    def by(
        self,
        dimension: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        *,
        session: str | None = None,
        model: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> dict[str, Usage]:
        """``{key: Usage}`` grouped by ``"session"``, ``"model"``, ``"provider"``,
        ``"agent"`` or ``"tool"`` (events without that key are left out), largest
        total tokens first."""
        col = _DIMENSIONS.get(dimension)
        if col is None:
            raise ValueError(f"dimension must be one of {sorted(_DIMENSIONS)}, got {dimension!r}")
        conds = self._where(since, until, session=session, model=model, agent=agent)
        stmt = (
            sa.select(col, *_USAGE_COLS)
            .where(col.is_not(None), *conds)
            .group_by(col)
            .order_by(_TOTAL_TOKENS.desc(), col)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return {str(r[0]): Usage.from_row(_row(r[1:])) for r in self._fetch(stmt)}

    def count_keys(
        self,
        dimension: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
    ) -> int:
        """How many distinct sessions / models / agents / tools have events in the range."""
        col = _DIMENSIONS[dimension]
        stmt = sa.select(sa.func.count(sa.distinct(col))).where(
            col.is_not(None), *self._where(since, until)
        )
        return int(self._fetch(stmt)[0][0])

    def session_times(self, session_ids: Iterable[str]) -> dict[str, tuple[datetime, datetime]]:
        """First and last event time of each session."""
        ids = list(session_ids)
        if not ids:
            return {}
        stmt = (
            sa.select(_E.session_id, sa.func.min(_E.ts), sa.func.max(_E.ts))
            .where(_E.session_id.in_(ids))
            .group_by(_E.session_id)
        )
        return {
            str(s): (
                datetime.fromtimestamp(float(lo), UTC),
                datetime.fromtimestamp(float(hi), UTC),
            )
            for s, lo, hi in self._fetch(stmt)
        }

    # ------------------------------------------------ cells and tool stats
    def _cells(self, conds: list[Any]) -> _views.CellRows:
        keys = (_E.session_id, _E.model, _E.provider, _E.agent_id, _E.tool)
        stmt = sa.select(*keys, *_USAGE_COLS).where(*conds).group_by(*keys)
        return [(r[0], (r[1], r[2], r[3], r[4]), _row(r[5:])) for r in self._fetch(stmt)]

    def _tool_accs(self, conds: list[Any]) -> _views.ToolRows:
        """Per-(session, tool) call statistics of the stored tool events."""
        conds = [_E.kind == "tool", _E.tool.is_not(None), *conds]
        keys = (_E.session_id, _E.tool)
        base = sa.select(
            *keys,
            sa.func.count(),
            _count_if(_E.status != "error"),
            _sum(_E.latency_ms),
            sa.func.min(_E.latency_ms),
            sa.func.max(_E.latency_ms),
        )
        accs: dict[tuple[str | None, str], _tools.ToolAcc] = {}
        for s, t, calls, ok, total, lo, hi in self._fetch(base.where(*conds).group_by(*keys)):
            acc = _tools.ToolAcc()
            acc.calls, acc.ok, acc.failed = int(calls), int(ok), int(calls) - int(ok)
            acc.total = float(total)
            acc.min = None if lo is None else float(lo)
            acc.max = None if hi is None else float(hi)
            accs[(s, t)] = acc
        if not accs:
            return []
        hist = sa.select(*keys, _E.latency_bucket, sa.func.count()).where(
            *conds, _E.latency_bucket.is_not(None)
        )
        for s, t, b, n in self._fetch(hist.group_by(*keys, _E.latency_bucket)):
            accs[(s, t)].hist[int(b)] = int(n)
        # The category of the last call that named one (as the live accumulator keeps it).
        last = (
            sa.select(sa.func.max(_E.id).label("id"))
            .where(*conds, _E.category.is_not(None), _E.category != "")
            .group_by(*keys)
            .subquery()
        )
        cat = sa.select(_E.session_id, _E.tool, _E.category).join(last, _E.id == last.c.id)
        for s, t, c in self._fetch(cat):
            accs[(s, t)].category = str(c)
        # The last few call ids per (session, tool), oldest first.
        rn = (
            sa.func.row_number()
            .over(partition_by=[_E.session_id, _E.tool], order_by=_E.id.desc())
            .label("rn")
        )
        ranked = sa.select(_E.session_id, _E.tool, _E.call_id, _E.id, rn).where(*conds).subquery()
        recent = (
            sa.select(ranked.c.session_id, ranked.c.tool, ranked.c.call_id)
            .where(ranked.c.rn <= _tools.RECENT_IDS)
            .order_by(ranked.c.id)
        )
        for s, t, cid in self._fetch(recent):
            accs[(s, t)].recent.append(str(cid))
        return [(s, t, a) for (s, t), a in accs.items()]

    # ------------------------------------------------------- tracker views
    def snapshot(
        self, since: datetime | float | None = None, until: datetime | float | None = None
    ) -> Snapshot:
        """The same :class:`~agentmeter.Snapshot` a tracker that saw these events would give."""
        conds = self._where(since, until)
        return _views.snapshot(self._cells(conds), self._tool_accs(conds))

    def session(
        self,
        session_id: str,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
    ) -> SessionUsage:
        """One session's usage, breakdowns and tool stats (``budget`` is ``None``: budgets
        live in the tracker, not in the database).

        Raises:
            KeyError: if the session has no events in the range.
        """
        conds = self._where(since, until, session=session_id)
        cells = self._cells(conds)
        tools = self._tool_accs(conds)
        if not cells and not tools:
            raise KeyError(f"unknown session {session_id!r}")
        return _views.session_usage(
            session_id, [(k, r) for _, k, r in cells], [(t, a) for _, t, a in tools], None
        )

    def tool_stats(
        self,
        session_id: str | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
    ) -> dict[str, ToolStats]:
        """``{tool: ToolStats}`` over all sessions, or for one session."""
        if session_id is not None:
            try:
                return dict(self.session(session_id, since, until).tools)
            except KeyError:
                return {}
        return dict(self.tools_snapshot(since, until).by_tool)

    def tools_snapshot(
        self, since: datetime | float | None = None, until: datetime | float | None = None
    ) -> Snapshot:
        """A snapshot of the tool-attributed usage only (its ``by_tool``, ``by_category``
        and ``by_session_tool`` equal the full snapshot's, at a fraction of the cost)."""
        conds = self._where(since, until)
        cells = self._cells([*conds, _E.tool.is_not(None)])
        return _views.snapshot(cells, self._tool_accs(conds))

    def reset(
        self, since: datetime | float | None = None, until: datetime | float | None = None
    ) -> int:
        """Delete the stored events in the range (all by default); returns how many."""
        with self._engine.begin() as conn:
            result = conn.execute(EVENTS.delete().where(*self._where(since, until)))
            return int(result.rowcount or 0)
