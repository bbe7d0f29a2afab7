"""The SQL sink: every metered call becomes one row, written in batches off the hot path.

``tracker.add_sink(SQLSink("agentmeter.db"))`` (a path means SQLite) or
``SQLSink("postgresql+psycopg://user@host/db")`` (a SQLAlchemy URL; SQLite and
PostgreSQL are supported). See :mod:`agentmeter.storage` for the guarantees
(flush, exit, forks, backpressure, outages, what a ``SIGKILL`` can lose).

One transaction per batch:

1. ``INSERT ... ON CONFLICT (call_id) DO NOTHING RETURNING id, call_id`` of the
   raw events (multi-row ``VALUES``), so the database says which rows are new;
2. the rollup rows of exactly those new rows (see :mod:`.schema`), summed in
   Python per key and upserted with ``ON CONFLICT DO UPDATE SET c = c + excluded.c``,
   keys sorted (the same lock order in every writer: concurrent PostgreSQL
   writers never deadlock on the rollups).

A retried batch, a spill file replayed twice, or the same batch written by two
processes therefore adds each call once to the events and once to the rollups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, count
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..models import RawEvent
from ._deps import sqlalchemy as sa
from ._writer import BackgroundWriter
from .engine import make_engine, redact, resolve_url, sqlite_path
from .jsonl import append_lines, raw_from_json
from .migrations import upgrade as ensure_schema
from .schema import (
    ALLTIME,
    ALLTIME_SOURCE,
    COLUMNS,
    COUNTERS,
    CUSTOMER_SESSIONS,
    DAILY,
    DERIVED,
    EVENTS,
    GLOBAL,
    HOUR,
    LEVELS,
    LLM_KINDS,
    SESSION_COUNTS,
    SESSION_FIELDS,
    SESSIONS,
    Level,
    day_of_hour,
    to_row,
)

__all__ = ["RollupWriter", "SQLSink"]

logger = logging.getLogger("agentmeter.storage")
_claims = count(1)
SUPPORTED = ("sqlite", "postgresql")

# Positions in a row of COLUMNS.
_I = {name: i for i, name in enumerate(COLUMNS)}
_TS, _KIND, _MODEL, _PROVIDER = _I["ts"], _I["kind"], _I["model"], _I["provider"]
_IN, _OUT, _CR, _CW, _RS = (
    _I["input_tokens"],
    _I["output_tokens"],
    _I["cache_read_tokens"],
    _I["cache_write_tokens"],
    _I["reasoning_tokens"],
)
_COST, _LAT, _SESS, _AGENT = _I["cost_micros"], _I["latency_ms"], _I["session_id"], _I["agent_id"]
_TOOL, _CAT, _STATUS, _EST = _I["tool"], _I["category"], _I["status"], _I["estimated"]
_SAVED, _BUCKET, _CUST, _TAGS = (
    _I["tokens_saved"],
    _I["latency_bucket"],
    _I["customer_id"],
    _I["tags"],
)
# Rows per multi-row INSERT: a few fixed sizes, so the databases' statement caches
# (and psycopg's prepared statements) see a handful of statements, never one per size.
_CHUNKS = (1024, 256, 64, 16, 4, 1)
BATCH_SIZE = 10_000  # SQLSink's default batch size
# Rollup counters (COUNTERS order) of several rows merged in SQL; the category is
# filled from the event its category_seq names.
_MERGED = (
    "sum(events), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
    "sum(cache_write_tokens), sum(reasoning_tokens), sum(failed), sum(estimated), "
    "sum(cost_micros), sum(unpriced), sum(latency_ms), min(latency_min), "
    "max(latency_max), sum(tokens_saved), '', max(category_seq)"
)
assert max(_CHUNKS) * len(COLUMNS) <= 32766  # SQLite's default limit of parameters


def _is_outage(exc: BaseException) -> bool:
    """Connection lost, server down, database locked: retry as is."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _counters(group: list[tuple[int, tuple[Any, ...]]]) -> list[Any]:
    """The rollup counters (``COUNTERS`` order) of stored rows ``(event id, row)``
    sharing one key; column sums in C (``zip`` / ``sum``), not per event in Python."""
    if len(group) == 1:
        ident, r = group[0]
        cost, lat, cat = r[_COST], r[_LAT], r[_CAT]
        return [
            1, r[_IN], r[_OUT], r[_CR], r[_CW], r[_RS], 1 if r[_STATUS] == "error" else 0,
            r[_EST], cost or 0, 1 if cost is None else 0, float(lat or 0.0), lat, lat,
            r[_SAVED], cat or "", ident if cat else None,
        ]  # fmt: skip
    rows = [r for _, r in group]
    cols = list(zip(*rows, strict=True))
    costs = cols[_COST]
    lats = cols[_LAT]
    known = lats if None not in lats else [x for x in lats if x is not None]
    cats = cols[_CAT]
    category, seq = "", None
    if any(cats):
        seq, category = max((ident, r[_CAT]) for ident, r in group if r[_CAT])
    return [
        len(rows),
        sum(cols[_IN]),
        sum(cols[_OUT]),
        sum(cols[_CR]),
        sum(cols[_CW]),
        sum(cols[_RS]),
        cols[_STATUS].count("error"),
        sum(cols[_EST]),
        sum(filter(None, costs)),
        costs.count(None),
        float(sum(filter(None, lats))),
        min(known) if known else None,
        max(known) if known else None,
        sum(cols[_SAVED]),
        category,
        seq,
    ]


class RollupWriter:
    """The statements of one dialect: raw insert with RETURNING, and the rollup upserts.

    Used by :class:`SQLSink` for every batch and by :meth:`UsageStore.reset` to
    rebuild the rollups of partly deleted hours -- one code path.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        if dialect.name not in SUPPORTED:
            raise ValueError(
                f"agentmeter's SQL storage supports SQLite and PostgreSQL, not {dialect.name!r}"
            )
        quote = dialect.identifier_preparer.quote
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._quote = quote
        self._cols = ", ".join(quote(c) for c in COLUMNS)
        self._row_marks = "(" + ", ".join([self._mark] * len(COLUMNS)) + ")"
        self._inserts: dict[int, str] = {}
        # Per level (hourly, daily, global): the upserts of its main, latency and tag tables.
        self._sql: dict[str, tuple[str, str | None, str | None]] = {}
        for level in LEVELS:
            p = level.period
            latency = None
            if level.latency is not None:
                t = quote(level.latency.name)
                key = (p, *level.latency_dims, "bucket")
                cols = ", ".join(quote(c) for c in (*key, "calls"))
                marks = ", ".join([self._mark] * (len(key) + 1))
                latency = (
                    f"INSERT INTO {t} ({cols}) VALUES ({marks}) "
                    f"ON CONFLICT ({', '.join(quote(c) for c in key)}) "
                    f"DO UPDATE SET calls = {t}.calls + excluded.calls"
                )
            tags = None
            if level.tags is not None:
                tags = self._upsert(level.tags, ("tag_key", "tag_value", p, *level.dims))
            self._sql[level.name] = (self._upsert(level.main, (p, *level.dims)), latency, tags)
        # Per-session totals: multi-row upserts returning each row's events, so that the
        # writer learns which sessions are new (their events equal this batch's).
        self._session_sql: dict[tuple[str, int], str] = {}
        t = quote(SESSION_COUNTS.name)
        self._count_sql = (
            f"INSERT INTO {t} (customer_id, sessions) VALUES ({self._mark}, {self._mark}) "
            f"ON CONFLICT (customer_id) DO UPDATE SET sessions = {t}.sessions + excluded.sessions"
        )

    def _upsert(self, table: sa.Table, key: tuple[str, ...]) -> str:
        q = self._quote
        t = q(table.name)
        cols = (*key, *COUNTERS)
        sets = []
        for c in COUNTERS:
            old, new = f"{t}.{q(c)}", f"excluded.{q(c)}"
            if c == "latency_min":
                expr = (
                    f"CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL OR {new} < {old} "
                    f"THEN {new} ELSE {old} END"
                )
            elif c == "latency_max":
                expr = (
                    f"CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL OR {new} > {old} "
                    f"THEN {new} ELSE {old} END"
                )
            elif c in ("category", "category_seq"):
                newer = (
                    f"excluded.category_seq IS NOT NULL AND ({t}.category_seq IS NULL "
                    f"OR excluded.category_seq > {t}.category_seq)"
                )
                expr = f"CASE WHEN {newer} THEN {new} ELSE {old} END"
            else:
                expr = f"{old} + {new}"
            sets.append(f"{q(c)} = {expr}")
        return (
            f"INSERT INTO {t} ({', '.join(q(c) for c in cols)}) "
            f"VALUES ({', '.join([self._mark] * len(cols))}) "
            f"ON CONFLICT ({', '.join(q(c) for c in key)}) DO UPDATE SET {', '.join(sets)}"
        )

    def _session_upsert(self, table: sa.Table, n: int) -> str:
        """The upsert of ``n`` rows of a per-session table, returning key and events."""
        sql = self._session_sql.get((table.name, n))
        if sql is not None:
            return sql
        q = self._quote
        t = q(table.name)
        key = tuple(c.name for c in table.primary_key.columns)
        cols = [c.name for c in table.columns]
        sets = []
        for c in cols:
            if c in key:
                continue
            old, new = f"{t}.{q(c)}", f"excluded.{q(c)}"
            if c == "first_seen":
                expr = f"CASE WHEN {old} IS NULL OR {new} < {old} THEN {new} ELSE {old} END"
            elif c == "last_seen":
                expr = f"CASE WHEN {old} IS NULL OR {new} > {old} THEN {new} ELSE {old} END"
            else:
                expr = f"{old} + {new}"
            sets.append(f"{q(c)} = {expr}")
        marks = "(" + ", ".join([self._mark] * len(cols)) + ")"
        sql = self._session_sql[(table.name, n)] = (
            f"INSERT INTO {t} ({', '.join(q(c) for c in cols)}) VALUES "
            + ", ".join([marks] * n)
            + f" ON CONFLICT ({', '.join(q(k) for k in key)}) DO UPDATE SET {', '.join(sets)}"
            + f" RETURNING {', '.join(q(k) for k in key)}, {t}.events"
        )
        return sql

    def _upsert_sessions(
        self, conn: sa.Connection, table: sa.Table, rows: dict[tuple[Any, ...], list[Any]]
    ) -> list[tuple[Any, ...]]:
        """Upsert per-session rows (key -> values after the key, ``events`` first);
        the keys that are new in the table."""
        new: list[tuple[Any, ...]] = []
        items = sorted(rows.items())  # one lock order in every writer
        width = len(table.columns)
        i, n = 0, len(items)
        for size in _CHUNKS:
            size = min(size, 32766 // width)
            while n - i >= size:
                chunk = items[i : i + size]
                i += size
                params = tuple(chain.from_iterable((*k, *v) for k, v in chunk))
                got = conn.exec_driver_sql(self._session_upsert(table, size), params).fetchall()
                events = {k: v[0] for k, v in chunk}
                new += [tuple(r[:-1]) for r in got if int(r[-1]) == events[tuple(r[:-1])]]
        return new

    def add_sessions(
        self,
        conn: sa.Connection,
        main: dict[tuple[Any, ...], list[Any]],
        spans: dict[str, list[float]],
    ) -> None:
        """Add hourly rollup rows (key ``hour, *DIMS``; ``COUNTERS``) to the per-session
        totals, with each session's first and last event time in ``spans``, and count
        the sessions that are new."""
        per: dict[tuple[Any, ...], list[Any]] = {}
        per_cust: dict[tuple[Any, ...], list[Any]] = {}
        for key, c in main.items():
            sess = key[2]
            if not sess:
                continue
            u = _session_values(key[7], c)
            for target, k in ((per, (sess,)), (per_cust, (key[1], sess) if key[1] else None)):
                if k is None:
                    continue
                acc = target.get(k)
                if acc is None:
                    target[k] = list(u)
                else:
                    for j, v in enumerate(u):
                        acc[j] += v
        if not per:
            return
        for k, acc in per.items():
            acc += spans[k[0]]  # first_seen, last_seen
        counts: dict[str, int] = {}
        new = self._upsert_sessions(conn, SESSIONS, per)
        if new:
            counts[""] = len(new)
        for cust, _ in self._upsert_sessions(conn, CUSTOMER_SESSIONS, per_cust):
            counts[cust] = counts.get(cust, 0) + 1
        if counts:
            conn.exec_driver_sql(self._count_sql, sorted(counts.items()))

    def rebuild_sessions(self, conn: sa.Connection, session_ids: Iterable[str]) -> None:
        """Rebuild the per-session rows of ``session_ids`` from the daily rollup rows
        (already up to date) and their times from the events, then recount the
        sessions -- how a reset keeps the per-session tables exact."""
        ids = sorted({s for s in session_ids if s})
        d = DAILY.main.c
        llm = d.kind.in_(LLM_KINDS)
        emb = d.kind == "embedding"
        tool = d.kind == "tool"

        def when(cond: Any, col: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((cond, col), else_=0)), 0)

        def total(col: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(col), 0)

        sums = {
            "input_tokens": when(llm, d.input_tokens),
            "output_tokens": total(d.output_tokens),
            "cache_read_tokens": total(d.cache_read_tokens),
            "cache_write_tokens": total(d.cache_write_tokens),
            "reasoning_tokens": total(d.reasoning_tokens),
            "llm_calls": when(llm, d.events),
            "failed_llm_calls": when(llm, d.failed),
            "estimated_calls": total(d.estimated),
            "cost_micros": total(d.cost_micros),
            "unpriced_calls": when(sa.or_(llm, emb), d.unpriced),
            "llm_latency_ms": when(llm, d.latency_ms),
            "embedding_tokens": when(emb, d.input_tokens),
            "embedding_calls": when(emb, d.events),
            "tool_calls": when(tool, d.events),
            "failed_tool_calls": when(tool, d.failed),
            "tool_duration_ms": when(tool, d.latency_ms),
            "cache_hits": when(d.kind == "cache_hit", d.events),
            "cache_misses": when(d.kind == "cache_miss", d.events),
            "tokens_saved": total(d.tokens_saved),
        }
        assert tuple(sums) == SESSION_FIELDS
        values = [total(d.events), total(d.input_tokens + d.output_tokens), *sums.values()]
        names = ["events", "tokens", *SESSION_FIELDS]
        e = EVENTS.c
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for table in (SESSIONS, CUSTOMER_SESSIONS):
                conn.execute(table.delete().where(table.c.session_id.in_(chunk)))
            conn.execute(
                SESSIONS.insert().from_select(
                    ["session_id", *names],
                    sa.select(d.session_id, *values)
                    .where(d.session_id.in_(chunk))
                    .group_by(d.session_id),
                )
            )
            conn.execute(
                CUSTOMER_SESSIONS.insert().from_select(
                    ["customer_id", "session_id", *names],
                    sa.select(d.customer_id, d.session_id, *values)
                    .where(d.session_id.in_(chunk), d.customer_id != "")
                    .group_by(d.customer_id, d.session_id),
                )
            )
            s = SESSIONS.c
            conn.execute(
                SESSIONS.update()
                .where(s.session_id.in_(chunk))
                .values(
                    first_seen=sa.select(sa.func.min(e.ts))
                    .where(e.session_id == s.session_id)
                    .scalar_subquery(),
                    last_seen=sa.select(sa.func.max(e.ts))
                    .where(e.session_id == s.session_id)
                    .scalar_subquery(),
                )
            )
        # Recounted from the tables: a reset is rare, and this is one pass over the
        # session rows (not the events).
        c = CUSTOMER_SESSIONS.c
        conn.execute(SESSION_COUNTS.delete())
        conn.execute(
            SESSION_COUNTS.insert().from_select(
                ["customer_id", "sessions"],
                sa.select(sa.literal(""), sa.func.count()).select_from(SESSIONS),
            )
        )
        conn.execute(
            SESSION_COUNTS.insert().from_select(
                ["customer_id", "sessions"],
                sa.select(c.customer_id, sa.func.count()).group_by(c.customer_id),
            )
        )

    def rebuild_alltime(self, conn: sa.Connection) -> None:
        """Rebuild the whole-history tables from their daily levels (already up to
        date): one ``GROUP BY`` over days x keys each -- how a reset keeps them exact."""
        q = self._quote
        for level in ALLTIME:
            source = ALLTIME_SOURCE[level.name]
            assert source.dims == level.dims and source.latency_dims == level.latency_dims
            src, dst = q(source.main.name), q(level.main.name)
            dims = ", ".join(q(d) for d in level.dims)
            conn.exec_driver_sql(f"DELETE FROM {dst}")
            conn.exec_driver_sql(
                f"INSERT INTO {dst} (day, {dims}, {', '.join(COUNTERS)}) "
                f"SELECT 0, {dims}, {_MERGED} FROM {src} GROUP BY {dims}"
            )
            # The category of the last event naming one (its id kept in category_seq).
            conn.exec_driver_sql(
                f"UPDATE {dst} SET category = coalesce((SELECT e.category FROM "
                f"{q(EVENTS.name)} e WHERE e.id = {dst}.category_seq), '') "
                "WHERE category_seq IS NOT NULL"
            )
            if level.latency is not None and source.latency is not None:
                lsrc, ldst = q(source.latency.name), q(level.latency.name)
                ldims = ", ".join(q(d) for d in (*level.latency_dims, "bucket"))
                conn.exec_driver_sql(f"DELETE FROM {ldst}")
                conn.exec_driver_sql(
                    f"INSERT INTO {ldst} (day, {ldims}, calls) "
                    f"SELECT 0, {ldims}, sum(calls) FROM {lsrc} GROUP BY {ldims}"
                )

    def _insert_sql(self, n: int) -> str:
        sql = self._inserts.get(n)
        if sql is None:
            sql = self._inserts[n] = (
                f"INSERT INTO {self._quote(EVENTS.name)} ({self._cols}) VALUES "
                + ", ".join([self._row_marks] * n)
                + " ON CONFLICT (call_id) DO NOTHING RETURNING id, call_id"
            )
        return sql

    def insert(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Insert raw rows (unique call ids); the ``(id, call_id)`` of those actually new."""
        out: list[Any] = []
        i, n = 0, len(rows)
        for size in _CHUNKS:
            while n - i >= size:
                chunk = rows[i : i + size]
                i += size
                params = tuple(chain.from_iterable(chunk))
                out += conn.exec_driver_sql(self._insert_sql(size), params).fetchall()
        return out

    def write(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert a batch and add the new rows to the rollups; how many rows were new."""
        seen: dict[str, tuple[Any, ...]] = {}
        for r in rows:
            seen.setdefault(r[0], r)  # one row per call id: the first
        uniq = list(seen.values()) if len(seen) < len(rows) else rows
        inserted = self.insert(conn, uniq)
        if inserted:
            self.add(conn, ((int(ident), seen[cid]) for ident, cid in inserted))
        return len(inserted)

    def add(
        self,
        conn: sa.Connection,
        items: Iterable[tuple[int, tuple[Any, ...]]],
        *,
        daily: bool = True,
    ) -> None:
        """Add stored rows (with their event ids) to the rollup tables of every level
        and to the per-session totals (``daily=False``: the hourly rollups only)."""
        # Events grouped by hourly key and tag set: each event's counters are summed
        # once (in C); the key's row, its tag pairs' rows and the daily rows are merges
        # of those few sums.
        groups: dict[tuple[Any, ...], list[tuple[int, tuple[Any, ...]]]] = {}
        lat: dict[tuple[Any, ...], int] = {}
        floor = math.floor
        for item in items:
            r = item[1]
            hour = floor(r[_TS] / HOUR) * HOUR  # schema.hour_of, inline: once per event
            cust, sess, agent, tool = (
                r[_CUST] or "",
                r[_SESS] or "",
                r[_AGENT] or "",
                r[_TOOL] or "",
            )
            key = (
                hour,
                cust,
                sess,
                agent,
                r[_MODEL] or "",
                r[_PROVIDER] or "",
                tool,
                r[_KIND],
                r[_TAGS],
            )
            group = groups.get(key)
            if group is None:
                groups[key] = [item]
            else:
                group.append(item)
            if r[_BUCKET] is not None and r[_KIND] == "tool":
                lk = (hour, cust, sess, agent, tool, r[_BUCKET])
                lat[lk] = lat.get(lk, 0) + 1
        if not groups:
            return
        parts: dict[tuple[Any, ...], list[list[Any]]] = {}
        tag_parts: dict[tuple[Any, ...], list[list[Any]]] = {}
        pairs: dict[str, list[tuple[str, str]]] = {}
        spans: dict[str, list[float]] = {}  # session -> [first, last] event time
        for gk, g in groups.items():
            counters = _counters(g)
            key, tags = gk[:-1], gk[-1]
            sess = gk[2]
            if sess and daily:
                times = [r[_TS] for _, r in g]
                lo, hi = min(times), max(times)
                span = spans.get(sess)
                if span is None:
                    spans[sess] = [lo, hi]
                else:
                    span[0], span[1] = min(span[0], lo), max(span[1], hi)
            parts.setdefault(key, []).append(counters)
            if tags:
                found = pairs.get(tags)
                if found is None:
                    found = pairs[tags] = list(json.loads(tags).items())
                for tag_key, tag_value in found:
                    tag_parts.setdefault((tag_key, tag_value, *key), []).append(counters)
        main = {k: _merge(v) for k, v in parts.items()}
        tag_rows = {k: _merge(v) for k, v in tag_parts.items()}
        levels: list[tuple[str, Any, Any, Any]] = [("hourly", main, lat, tag_rows)]
        if daily:
            # The day of a row is the day of its hour; the derived levels keep some of
            # the dimensions of the daily rows.
            day_main = _project(main, _to_day)
            day_tags = _project(tag_rows, _tags_to_day)
            day_lat = _project_counts(lat, _to_day)
            levels.append(("daily", day_main, day_lat, day_tags))
            # The global level (every dimension but the session) from the daily rows,
            # the other derived levels (subsets of its dimensions) from the global
            # rows: far fewer keys to re-key than the daily ones when there are many
            # sessions. Keys are re-picked by itemgetter (in C).
            glob = (
                _project(day_main, _picker(DAILY.dims, GLOBAL.dims, 0)),
                _project_counts(day_lat, _picker(DAILY.latency_dims, GLOBAL.latency_dims, 0, 1)),
                _project(day_tags, _picker(DAILY.dims, GLOBAL.dims, 2)),
            )
            derived: dict[str, tuple[Any, Any, Any]] = {}
            for level in DERIVED:
                if level is GLOBAL:
                    derived[level.name] = glob
                    continue
                derived[level.name] = (
                    _project(glob[0], _picker(GLOBAL.dims, level.dims, 0)),
                    _project_counts(glob[1], _picker(GLOBAL.latency_dims, level.latency_dims, 0, 1))
                    if level.latency is not None
                    else {},
                    _project(glob[2], _picker(GLOBAL.dims, level.dims, 2))
                    if level.tags is not None
                    else {},
                )
                levels.append((level.name, *derived[level.name]))
            levels.append((GLOBAL.name, *glob))  # DERIVED's order: GLOBAL is last
            for level in ALLTIME:  # the derived rows, every day as day 0
                m, lt, _ = derived[ALLTIME_SOURCE[level.name].name]
                levels.append(
                    (level.name, _project(m, _to_zero), _project_counts(lt, _to_zero), {})
                )
        # Sorted keys, tables in one order: every writer locks rollup rows alike.
        for name, m, lt, tg in levels:
            main_sql, lat_sql, tags_sql = self._sql[name]
            conn.exec_driver_sql(main_sql, [(*k, *c) for k, c in sorted(m.items())])
            if lt and lat_sql is not None:
                conn.exec_driver_sql(lat_sql, [(*k, n) for k, n in sorted(lt.items())])
            if tg and tags_sql is not None:
                conn.exec_driver_sql(tags_sql, [(*k, *c) for k, c in sorted(tg.items())])
        if daily:  # after every rollup table: the same lock order in every writer
            self.add_sessions(conn, main, spans)

    def add_rows(
        self,
        conn: sa.Connection,
        source: Level,
        target: Level,
        main: Iterable[Sequence[Any]],
        latency: Iterable[Sequence[Any]],
        tags: Iterable[Sequence[Any]],
    ) -> None:
        """Add rollup rows as stored at ``source`` (period, key, counters) to the tables
        of ``target`` (days from hours, fewer dimensions) -- how a reset rebuilds the
        days it deleted in part."""
        to_day = source.period == "hour" and target.period == "day"
        pick = [source.dims.index(d) for d in target.dims]
        lpick = [source.latency_dims.index(d) for d in target.latency_dims]
        main_sql, lat_sql, tags_sql = self._sql[target.name]
        width = len(source.dims)
        for rows, at, sql in ((main, 0, main_sql), (tags, 2, tags_sql)):
            if sql is None:
                continue
            merged: dict[tuple[Any, ...], list[Any]] = {}
            for r in rows:
                period = int(r[at])
                dims = r[at + 1 : at + 1 + width]
                key = (
                    *r[:at],
                    day_of_hour(period) if to_day else period,
                    *(dims[i] for i in pick),
                )
                merged.setdefault(key, []).append(r[at + 1 + width :])
            if merged:
                conn.exec_driver_sql(sql, [(*k, *_merge(v)) for k, v in sorted(merged.items())])
        if lat_sql is None:
            return
        counts: dict[tuple[Any, ...], int] = {}
        lwidth = len(source.latency_dims)
        for r in latency:
            period = int(r[0])
            dims = r[1 : 1 + lwidth]
            key = (
                day_of_hour(period) if to_day else period,
                *(dims[i] for i in lpick),
                r[1 + lwidth],
            )
            counts[key] = counts.get(key, 0) + int(r[-1])
        if counts:
            conn.exec_driver_sql(lat_sql, [(*k, n) for k, n in sorted(counts.items())])


_LLM = frozenset(LLM_KINDS)


def _session_values(kind: str, c: Sequence[Any]) -> list[Any]:
    """``events``, ``tokens`` and the tracker's counters (``SESSION_FIELDS``) of one
    rollup row (``COUNTERS``) of ``kind`` -- as :class:`UsageStore` reads rollup rows."""
    llm = kind in _LLM
    emb = kind == "embedding"
    tool = kind == "tool"
    events, failed, lat = c[0], c[6], float(c[10])
    return [
        events, c[1] + c[2],
        c[1] if llm else 0, c[2], c[3], c[4], c[5],
        events if llm else 0, failed if llm else 0, c[7], c[8],
        c[9] if llm or emb else 0, lat if llm else 0.0,
        c[1] if emb else 0, events if emb else 0,
        events if tool else 0, failed if tool else 0, lat if tool else 0.0,
        events if kind == "cache_hit" else 0, events if kind == "cache_miss" else 0, c[13],
    ]  # fmt: skip


def _to_zero(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A daily main or latency key ``(day, ...)`` as a whole-history one (day 0)."""
    return (0, *key[1:])


def _to_day(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """An hourly main or latency key ``(hour, ...)`` as a daily one."""
    return (day_of_hour(key[0]), *key[1:])


def _tags_to_day(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """An hourly tag key ``(tag_key, tag_value, hour, ...)`` as a daily one."""
    return (key[0], key[1], day_of_hour(key[2]), *key[3:])


def _picker(
    source: tuple[str, ...], target: tuple[str, ...], at: int, tail: int = 0
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Re-key ``(*prefix, period, *source dims, *tail)`` as ``(*prefix, period, *target
    dims, *tail)`` (``at``: the period's position, ``tail`` trailing fields such as a
    latency bucket), by one ``itemgetter`` call per key."""
    n = len(source)
    picked = [*range(at + 1), *(at + 1 + source.index(d) for d in target)]
    picked += range(at + 1 + n, at + 1 + n + tail)
    return itemgetter(*picked)  # len(picked) >= 2: always a tuple


def _project(
    rows: dict[tuple[Any, ...], list[Any]], fn: Callable[[tuple[Any, ...]], tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[Any]]:
    """Counter rows re-keyed by ``fn`` and merged."""
    parts: dict[tuple[Any, ...], list[list[Any]]] = {}
    for k, c in rows.items():
        nk = fn(k)
        found = parts.get(nk)
        if found is None:
            parts[nk] = [c]
        else:
            found.append(c)
    return {k: _merge(v) for k, v in parts.items()}


def _project_counts(
    counts: dict[tuple[Any, ...], int], fn: Callable[[tuple[Any, ...]], tuple[Any, ...]]
) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    get = out.get
    for k, n in counts.items():
        nk = fn(k)
        out[nk] = get(nk, 0) + n
    return out


def _merge(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Rollup counters (``COUNTERS`` order) of several rows merged into one."""
    if len(rows) == 1:
        return list(rows[0])
    cols = list(zip(*rows, strict=True))
    lows = [x for x in cols[11] if x is not None]
    highs = [x for x in cols[12] if x is not None]
    seq, category = max(
        ((int(s), c) for s, c in zip(cols[15], cols[14], strict=True) if s is not None),
        default=(None, ""),
    )
    return [
        *(sum(int(v) for v in cols[i]) for i in range(10)),
        float(sum(cols[10])),
        min(lows) if lows else None,
        max(highs) if highs else None,
        sum(int(v) for v in cols[13]),
        category,
        seq,
    ]


class _Vanished(Exception):
    """The SQLite file is no longer at its path (deleted, or its folder removed)."""


class SQLSink(BackgroundWriter):
    """Store every recorded call in a SQL database (SQLite by default), with rollups.

    Args:
        url: A SQLAlchemy URL, or a file path for SQLite; default ``$AGENTMETER_DB``
            or ``./agentmeter.db``. Tables are created when missing, a version-1
            database is upgraded (see :mod:`agentmeter.storage.migrations`).
        batch_size: Most rows per batch (one transaction each). Default 10,000 (or
            ``max_queue`` when smaller): under load a batch's rollup keys (hours x
            customers x sessions x ... x tag pairs) repeat from event to event, so a
            larger batch writes fewer rollup rows per event, and one commit less
            often; at low rates ``flush_interval`` bounds the wait instead.
        flush_interval: Seconds an event may wait in memory before it is written
            (the bound on what a killed process loses).
        max_queue: Events held in memory before ``submit`` applies backpressure.
        block_timeout: Longest a recording thread blocks on a full queue; then the
            excess goes to the spill file.
        spill_path: JSONL file for events the database could not take (full queue,
            outage at close, a database file that disappeared). Replayed into the
            database when it is reachable again (by this sink, or by the next one
            opened on the same database). Default: ``<db file>.spill.jsonl`` for
            SQLite, a file named after the URL in the temporary directory otherwise.
            When it cannot be written (its folder was removed), a file named after
            the URL in the temporary directory is used, and its path logged.
        max_retry_delay: Cap of the backoff between attempts while the database is down.
        exit_timeout: How long the exit hook waits for the database before spilling.
        sqlite_timeout: SQLite busy timeout per attempt (the sink retries on its own).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        batch_size: int | None = None,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        block_timeout: float = 1.0,
        spill_path: str | os.PathLike[str] | None = None,
        max_retry_delay: float = 2.0,
        exit_timeout: float = 10.0,
        sqlite_timeout: float = 1.0,
    ) -> None:
        self.url = resolve_url(url)
        db_file = sqlite_path(self.url)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        self._engine = make_engine(self.url, sqlite_timeout=sqlite_timeout, wal=True)
        self._rollups = RollupWriter(self._engine.dialect)
        self._db_file = db_file
        self._db_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we write
        self._vanished = False
        digest = hashlib.sha256(redact(self.url).encode()).hexdigest()[:16]
        self._fallback_spill = Path(tempfile.gettempdir()) / f"agentmeter-spill-{digest}.jsonl"
        if spill_path is not None:
            self.spill_path = Path(spill_path)
        elif db_file is not None:
            self.spill_path = db_file.with_name(db_file.name + ".spill.jsonl")
        else:
            self.spill_path = self._fallback_spill
        self._spill_lock = threading.Lock()
        self._spill_pending = True  # checked (cheaply) once at start
        self._next_replay = 0.0
        self._last_spill_log = -1e9
        self._spilled_unlogged = 0
        self._schema_ready = False
        try:  # fail early on a bad URL or a newer schema; an outage is retried later
            self._ensure_schema()
        except sa.exc.DBAPIError as exc:
            if not _is_outage(exc):
                raise
            logger.warning(
                "agentmeter: %s unavailable (%s); events are queued and retried",
                redact(self.url),
                exc.orig,
            )
        super().__init__(
            name=f"agentmeter-sql:{redact(self.url)}",
            batch_size=min(BATCH_SIZE, max_queue) if batch_size is None else batch_size,
            flush_interval=flush_interval,
            max_queue=max_queue,
            block_timeout=block_timeout,
            max_retry_delay=max_retry_delay,
            exit_timeout=exit_timeout,
        )

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the sink writes with."""
        return self._engine

    def _ensure_schema(self) -> None:
        with self._engine.begin() as conn:
            ensure_schema(conn)
        self._schema_ready = True
        if self._db_file is not None and self._db_id is None:
            self._db_id = self._file_id()

    # ------------------------------------------- the database file (SQLite)
    def _file_id(self) -> tuple[int, int] | None:
        assert self._db_file is not None
        try:
            st = os.stat(self._db_file)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        """Raise :class:`_Vanished` if the SQLite file we write is no longer at its path.

        A file replaced by another one (same path, other inode) is reopened: the pooled
        connections would write into the old, unlinked file.
        """
        if self._db_file is None or self._db_id is None:
            return
        current = self._file_id() if self._db_file.parent.is_dir() else None
        if current is None:
            raise _Vanished(str(self._db_file))
        if current != self._db_id:
            logger.error(
                "agentmeter: %s was replaced by another file under a running sink; reopening it",
                self._db_file,
            )
            self._engine.dispose()
            self._db_id = current
            self._schema_ready = False
            self._ensure_schema()
        if self._vanished:
            self._vanished = False
            self._spill_pending = True
            logger.error("agentmeter: %s is back; writing to it again", self._db_file)

    # ------------------------------------------------------- writer thread
    def _write(self, batch: list[RawEvent], *, spill: bool = True) -> int:
        return self._write_rows([to_row(r) for r in batch], batch, spill=spill)

    def _write_rows(
        self, rows: list[tuple[Any, ...]], raws: list[RawEvent], *, spill: bool = True
    ) -> int:
        """Write a batch; how many of its events are new in the database.

        ``spill=False`` (a spill replay): raise :class:`_Vanished` instead of spilling.
        """
        for _ in range(3):  # a file replaced between two checks: write into the new one
            try:
                self._check_file()
                if not self._schema_ready:
                    self._ensure_schema()
                before = self._db_id
                try:
                    with self._engine.begin() as conn:
                        n = self._rollups.write(conn, rows)
                except Exception as exc:
                    if _is_outage(exc):
                        raise
                    # Not an outage: maybe the tables were dropped, maybe one bad row (an
                    # int too large for BIGINT raises OverflowError or DataError).
                    self._ensure_schema()
                    return self._isolate(rows, raws, exc)
                # Committed -- into the file that is still at the path? If not, the
                # batch is not safely stored: spill it (call ids make a replay harmless).
                self._check_file()
                if self._db_id != before:
                    continue
            except _Vanished:
                if not spill:
                    raise
                return self._spill_vanished(raws)
            self._counters["duplicates"] += len(rows) - n
            return n
        raise RuntimeError(f"{self._db_file} keeps being replaced")

    def _spill_vanished(self, raws: list[RawEvent]) -> int:
        if not self._vanished:
            self._vanished = True
            logger.error(
                "agentmeter: the database %s disappeared under a running SQLSink (file "
                "deleted or folder removed); its events are spilled, not written",
                self._db_file,
            )
        self._send_overflow(raws, f"the database {self._db_file} disappeared")
        return 0

    def _isolate(
        self, rows: list[tuple[Any, ...]], raws: list[RawEvent], first: BaseException
    ) -> int:
        """Write row by row; rows the database rejects go to ``<spill>.rejected.jsonl``."""
        bad: list[RawEvent] = []
        written = 0
        for row, raw in zip(rows, raws, strict=True):
            try:
                with self._engine.begin() as conn:
                    written += self._rollups.write(conn, [row])
            except Exception as exc:
                if _is_outage(exc):
                    raise
                bad.append(raw)
        if len(bad) == len(rows) and len(rows) > 1:
            raise first  # every row fails: a systemic problem, keep retrying the batch
        self._counters["duplicates"] += len(rows) - len(bad) - written
        if bad:
            rejected = self.spill_path.with_name(self.spill_path.name + ".rejected.jsonl")
            try:
                append_lines(rejected, bad)
            except OSError as exc:
                self._counters["dropped"] += len(bad)
                logger.error(
                    "agentmeter: %r DROPPED %d events rejected by %s (%r): cannot write %s: %r",
                    self,
                    len(bad),
                    redact(self.url),
                    first,
                    rejected,
                    exc,
                )
                return written
            self._counters["rejected"] += len(bad)
            logger.error(
                "agentmeter: %d events rejected by %s (%r); kept in %s",
                len(bad),
                redact(self.url),
                first,
                rejected,
            )
        return written

    def _recover(self, exc: BaseException, failures: int) -> None:
        self._schema_ready = False  # the database may have been re-created meanwhile

    def _started(self) -> None:
        self._replay_spill()

    def _idle(self) -> None:
        if self._spill_pending and not self._vanished and time.monotonic() >= self._next_replay:
            self._replay_spill()

    def _append_spill(self, raws: list[RawEvent]) -> tuple[int, Path]:
        """Append to the spill file, or to the fallback in the temporary directory when
        the spill file cannot be written; raises if neither can."""
        with self._spill_lock:
            try:
                n = append_lines(self.spill_path, raws)
                where = self.spill_path
            except OSError as exc:
                if self.spill_path == self._fallback_spill:
                    raise
                n = append_lines(self._fallback_spill, raws)
                where = self._fallback_spill
                logger.error(
                    "agentmeter: cannot write the spill file %s (%r); %d events kept in %s "
                    "instead (replayed by the next SQLSink on %s)",
                    self.spill_path,
                    exc,
                    n,
                    where,
                    redact(self.url),
                )
            self._spill_pending = True
        return n, where

    def _overflow(self, raws: list[RawEvent], reason: str) -> int:
        n, where = self._append_spill(raws)  # raises when nothing could be written
        with self._spill_lock:
            self._spilled_unlogged += n
            now = time.monotonic()
            if now - self._last_spill_log < 5.0:
                return n  # one warning per 5 s while spilling, not one per event
            self._last_spill_log, count = now, self._spilled_unlogged
            self._spilled_unlogged = 0
        logger.warning(
            "agentmeter: %d events spilled to %s (%s); replayed when the database takes them",
            count,
            where,
            reason,
        )
        return n

    def _claim_spill_files(self) -> list[Path]:
        """Rename spill files to names only this sink owns (atomic against other processes)."""
        claimed: list[Path] = []
        for base in dict.fromkeys((self.spill_path, self._fallback_spill)):
            candidates: list[Path] = []
            if base.exists():
                candidates.append(base)
            if not base.parent.is_dir():
                continue
            for orphan in base.parent.glob(base.name + ".replay-*"):
                try:
                    pid = int(orphan.name.rsplit(".replay-", 1)[1].split("-")[0])
                except ValueError:
                    continue
                if pid == os.getpid() or not _pid_alive(pid):
                    candidates.append(orphan)
            for path in candidates:
                target = base.with_name(f"{base.name}.replay-{os.getpid()}-{next(_claims)}")
                try:
                    with self._spill_lock:
                        path.rename(target)
                except OSError:
                    continue  # another process claimed it first
                claimed.append(target)
        return claimed

    def _replay_spill(self) -> None:
        """Insert spilled events into the database, then delete their file."""
        self._spill_pending = False
        try:
            files = self._claim_spill_files()
        except OSError as exc:
            logger.warning("agentmeter: cannot read spill files of %s: %r", self.spill_path, exc)
            return
        for path in files:
            raws: list[RawEvent] = []
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            raws.append(raw_from_json(line))
                        except ValueError as exc:
                            logger.error("agentmeter: %s:%d unreadable, skipped: %s", path, n, exc)
            done = written = 0
            try:
                for i in range(0, len(raws), self._batch_size):
                    chunk = raws[i : i + self._batch_size]
                    written += self._write(chunk, spill=False)
                    done += len(chunk)
            except Exception as exc:
                # Still down: put back what was not written, try again later.
                try:
                    self._append_spill(raws[done:])
                except OSError as err:
                    logger.error(
                        "agentmeter: %r DROPPED %d spilled events: %r", self, len(raws) - done, err
                    )
                    self._counters["dropped"] += len(raws) - done
                self._next_replay = time.monotonic() + 5.0
                logger.warning("agentmeter: spill replay postponed: %r", exc)
            path.unlink(missing_ok=True)
            if done:
                self._counters["written"] += written
                logger.warning("agentmeter: replayed %d spilled events into the database", done)

    def _forked(self) -> None:
        # The parent's pooled connections must not be used by the child.
        self._engine.dispose(close=False)

    def _dispose(self) -> None:
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"SQLSink({redact(self.url)!r})"
