"""The SQL sink: every metered call becomes one row, written in batches off the hot path.

``tracker.add_sink(SQLSink("agentmeter.db"))`` (a path means SQLite) or
``SQLSink("postgresql+psycopg://user@host/db")`` (any SQLAlchemy URL).
See :mod:`agentmeter.storage` for the guarantees (flush, exit, backpressure,
outages, what a ``SIGKILL`` can lose).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

from ..models import RawEvent
from ._deps import sqlalchemy as sa
from ._writer import BackgroundWriter
from .engine import make_engine, redact, resolve_url, sqlite_path
from .jsonl import append_lines, raw_from_json
from .migrations import upgrade as ensure_schema
from .schema import COLUMNS, EVENTS, to_row

__all__ = ["SQLSink"]

logger = logging.getLogger("agentmeter.storage")
_claims = count(1)


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


class SQLSink(BackgroundWriter):
    """Store every recorded call in a SQL database (SQLite by default).

    Args:
        url: A SQLAlchemy URL, or a file path for SQLite; default ``$AGENTMETER_DB``
            or ``./agentmeter.db``. Tables are created when missing.
        batch_size: Most rows per ``INSERT`` batch (one transaction each).
        flush_interval: Seconds an event may wait in memory before it is written
            (the bound on what a killed process loses).
        max_queue: Events held in memory before ``submit`` applies backpressure.
        block_timeout: Longest a recording thread blocks on a full queue; then the
            excess goes to the spill file.
        spill_path: JSONL file for events the database could not take (full queue,
            outage at close). Replayed into the database when it is reachable again
            (by this sink, or by the next one opened on the same database). Default:
            ``<db file>.spill.jsonl`` for SQLite, a file named after the URL in the
            temporary directory otherwise.
        max_retry_delay: Cap of the backoff between attempts while the database is down.
        exit_timeout: How long the exit hook waits for the database before spilling.
        sqlite_timeout: SQLite busy timeout per attempt (the sink retries on its own).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 2000,
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
        if spill_path is not None:
            self.spill_path = Path(spill_path)
        elif db_file is not None:
            self.spill_path = db_file.with_name(db_file.name + ".spill.jsonl")
        else:
            digest = hashlib.sha256(redact(self.url).encode()).hexdigest()[:16]
            self.spill_path = Path(tempfile.gettempdir()) / f"agentmeter-spill-{digest}.jsonl"
        self._spill_lock = threading.Lock()
        self._spill_pending = True  # checked (cheaply) once at start
        self._next_replay = 0.0
        self._last_spill_log = -1e9
        self._spilled_unlogged = 0
        self._schema_ready = False
        self._insert = self._build_insert()
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
            batch_size=batch_size,
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

    def _build_insert(self) -> Callable[[sa.Connection, Sequence[tuple[Any, ...]]], None]:
        """An executemany of plain tuples in the driver's own parameter style."""
        dialect = self._engine.dialect
        quote = dialect.identifier_preparer.quote
        cols = ", ".join(quote(c) for c in COLUMNS)
        style = dialect.paramstyle
        marks: list[str] | None
        if style == "qmark":
            marks = ["?"] * len(COLUMNS)
        elif style in ("format", "pyformat"):
            marks = ["%s"] * len(COLUMNS)
        elif style == "numeric":
            marks = [f":{i}" for i in range(1, len(COLUMNS) + 1)]
        else:
            marks = None
        # A retried batch must not store a call twice: skip rows whose call id is
        # already there (SQLite and PostgreSQL; other databases rely on the unique
        # index and the row-by-row fallback).
        upsert = dialect.name in ("sqlite", "postgresql")
        conflict = " ON CONFLICT (call_id) DO NOTHING" if upsert else ""
        if marks is None:  # named styles: go through SQLAlchemy Core with dicts
            stmt = EVENTS.insert()
            if upsert:
                stmt = sa.text(
                    f"INSERT INTO {quote(EVENTS.name)} ({cols}) VALUES "
                    f"({', '.join(':' + c for c in COLUMNS)}){conflict}"
                )  # type: ignore[assignment]

            def core(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
                conn.execute(stmt, [dict(zip(COLUMNS, r, strict=True)) for r in rows])

            return core
        sql = f"INSERT INTO {quote(EVENTS.name)} ({cols}) VALUES ({', '.join(marks)}){conflict}"

        def driver(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
            conn.exec_driver_sql(sql, list(rows))

        return driver

    def _ensure_schema(self) -> None:
        with self._engine.begin() as conn:
            ensure_schema(conn)
        self._schema_ready = True

    # ------------------------------------------------------- writer thread
    def _write(self, batch: list[RawEvent]) -> None:
        self._write_rows([to_row(r) for r in batch], batch)

    def _write_rows(self, rows: list[tuple[Any, ...]], raws: list[RawEvent]) -> None:
        if not self._schema_ready:
            self._ensure_schema()
        try:
            with self._engine.begin() as conn:
                self._insert(conn, rows)
        except Exception as exc:
            if _is_outage(exc):
                raise
            # Not an outage: maybe the tables were dropped, maybe one bad row (an int
            # too large for BIGINT raises OverflowError or DataError).
            self._ensure_schema()
            self._isolate(rows, raws, exc)

    def _isolate(
        self, rows: list[tuple[Any, ...]], raws: list[RawEvent], first: BaseException
    ) -> None:
        """Write row by row; rows the database rejects go to ``<spill>.rejected.jsonl``."""
        bad: list[RawEvent] = []
        for row, raw in zip(rows, raws, strict=True):
            try:
                with self._engine.begin() as conn:
                    self._insert(conn, [row])
            except Exception as exc:
                if _is_outage(exc):
                    raise
                bad.append(raw)
        if len(bad) == len(rows) and len(rows) > 1:
            raise first  # every row fails: a systemic problem, keep retrying the batch
        if bad:
            rejected = self.spill_path.with_name(self.spill_path.name + ".rejected.jsonl")
            append_lines(rejected, bad)
            logger.error(
                "agentmeter: %d events rejected by %s (%r); kept in %s",
                len(bad),
                redact(self.url),
                first,
                rejected,
            )

    def _recover(self, exc: BaseException, failures: int) -> None:
        self._schema_ready = False  # the database may have been re-created meanwhile

    def _started(self) -> None:
        self._replay_spill()

    def _idle(self) -> None:
        if self._spill_pending and time.monotonic() >= self._next_replay:
            self._replay_spill()

    def _overflow(self, raws: list[RawEvent], reason: str) -> int:
        with self._spill_lock:
            n = append_lines(self.spill_path, raws)
            self._spill_pending = True
            self._spilled_unlogged += n
            now = time.monotonic()
            if now - self._last_spill_log < 5.0:
                return n  # one warning per 5 s while spilling, not one per event
            self._last_spill_log, count = now, self._spilled_unlogged
            self._spilled_unlogged = 0
        logger.warning(
            "agentmeter: %d events spilled to %s (%s); replayed when the database takes them",
            count,
            self.spill_path,
            reason,
        )
        return n

    def _claim_spill_files(self) -> list[Path]:
        """Rename spill files to names only this sink owns (atomic against other processes)."""
        claimed: list[Path] = []
        base = self.spill_path
        candidates: list[Path] = []
        if base.exists():
            candidates.append(base)
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
            done = 0
            try:
                for i in range(0, len(raws), self._batch_size):
                    chunk = raws[i : i + self._batch_size]
                    self._write(chunk)
                    done += len(chunk)
            except Exception as exc:
                # Still down: put back what was not written, try again later.
                with self._spill_lock:
                    append_lines(self.spill_path, raws[done:])
                    self._spill_pending = True
                self._next_replay = time.monotonic() + 5.0
                logger.warning("agentmeter: spill replay postponed: %r", exc)
            path.unlink(missing_ok=True)
            if done:
                self._counters["written"] += done
                logger.warning("agentmeter: replayed %d spilled events into the database", done)

    def _forked(self) -> None:
        # The parent's pooled connections must not be used by the child.
        self._engine.dispose(close=False)

    def _dispose(self) -> None:
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"SQLSink({redact(self.url)!r})"
