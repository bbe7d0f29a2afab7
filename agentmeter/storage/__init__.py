"""Persistent storage: the SQL and JSONL sinks, and SQL read-back of the aggregates.

::

    from agentmeter.storage import SQLSink, UsageStore

    tracker.add_sink(SQLSink("agentmeter.db"))      # or a PostgreSQL URL
    ...
    store = UsageStore("agentmeter.db")
    store.by("customer", since=datetime(2025, 1, 1))   # {customer: Usage}, for invoices
    store.customer("acme").by_session                  # one customer's sessions

Needs SQLAlchemy 2 and Alembic (``pip install 'agentmeter-core[sql]'``; PostgreSQL
also needs ``pip install 'agentmeter-core[postgres]'``). SQLite and PostgreSQL are
supported. ``import agentmeter`` never imports this package; :class:`JSONLSink`
works without SQLAlchemy.

Guarantees of the sinks
-----------------------
- **Hot path.** ``submit`` appends the tracker's raw event tuple to a deque and
  compares the queue length with the batch size; conversion and I/O happen on
  one daemon writer thread per sink (measured: ~0.2-0.5 us for ``submit``; the
  tracker's own event building adds ~1-1.8 us; see ``benchmarks/bench_storage.py``).
- **Batches.** The writer wakes every ``flush_interval`` (0.2 s by default) or as
  soon as ``batch_size`` (10,000) events wait, and writes them in one transaction:
  the raw events (``INSERT ... ON CONFLICT (call_id) DO NOTHING RETURNING``) and
  the hourly rollup rows of exactly the rows that were new (see :mod:`.sql`).
- **Rollups.** Raw events are kept for audit and export; every read of
  :class:`UsageStore` (and so the CLI report and the REST API) comes from rollup
  rows per hour -- and again per UTC day -- x customer x session x agent x model
  x provider x tool x kind, per tool-latency bucket and per tag pair (see
  :mod:`.schema`, :mod:`.query`): whole days from the daily rows, the other whole
  hours from the hourly ones, so reads cost the number of such rows, not the
  number of events. They equal a
  ``GROUP BY`` over the raw events at every commit: they are written in the same
  transaction, idempotently under the call-id dedupe (a retried batch, a replayed
  spill file, two processes writing the same batch add each call once), by
  commutative upserts whose keys every writer locks in the same order (many
  processes writing one SQLite file or one PostgreSQL database at once: no lost
  update, no deadlock). A time range not on hour boundaries reads the raw events
  of its (at most two) partial hours.
- **Sessions.** The same transaction keeps one row per session (and per customer x
  session) with every counter, its first and last event time, and the number of
  sessions per customer, so a page of the largest sessions and their count (the
  report, ``GET /api/v1/usage``, the dashboard's sessions table) costs the same
  with a hundred sessions or a million; whole-history rows per customer and per
  tool do the same for the customer breakdown and tool statistics of a read
  without a time range. Resets keep them exact.
- **Schema migration.** Opening a database -- by a sink or by a store -- brings
  it to schema version 2 with Alembic (no ``alembic.ini``): a version-1
  database of agentmeter 0.1 is upgraded in place, its rollups built from the
  stored events in the same transaction (nothing lost, nothing counted twice); a
  newer schema is refused with :class:`SchemaError`; concurrent openers are
  serialised. See :mod:`.migrations`.
- **flush / close / exit.** ``flush()`` returns once everything submitted before
  it is stored; ``close()`` flushes and stops the thread; an ``atexit`` hook
  closes every sink still open at a normal interpreter exit (``sys.exit``, end of
  the script, an uncaught exception), so nothing is lost then.
- **Forked and spawned workers.** A sink inherited by a ``fork``-ed child gets a
  new writer thread there (the parent's queue stays the parent's). Worker
  processes of ``multiprocessing`` (fork, forkserver, spawn) end with
  ``os._exit``, which skips ``atexit``; every sink therefore also registers a
  ``multiprocessing.util.Finalize`` (again in each child after the fork), which
  ``multiprocessing`` runs when the worker's target returns: what a worker
  recorded is written before it exits, even if it returns right after
  recording. A worker killed by a signal -- ``Pool.terminate()``, which the
  ``with Pool(...)`` block calls on exit -- is like ``SIGKILL`` below: use
  ``pool.close(); pool.join()`` to let workers finish.
- **Outages.** A failed write (SQLite "database is locked", PostgreSQL down or
  restarted, tables dropped) is retried with exponential backoff (20 ms doubling
  to ``max_retry_delay``, 2 s) for as long as it takes; the batch stays in memory
  meanwhile and later events keep queueing. A row the database rejects as
  invalid (not an outage) is isolated and written to ``<spill>.rejected.jsonl``
  with an error log; the rest of its batch is stored.
- **A database that disappears.** Before each batch and after its commit the
  SQLite sink checks that its file is still at its path (same ``st_dev`` /
  ``st_ino``, folder present). A file deleted or whose folder was removed (or
  moved) is never written blindly: the batch -- also one just committed into the
  vanished file -- goes to the spill file, counted in ``overflowed``, never in
  ``written``, with an ERROR log; when the spill file's own folder is gone, a
  file named after the database in the temporary directory is used and its path
  logged at ERROR. The sink does not re-create a removed database; the next
  sink opened on that path (after the folder exists again) replays the spilled
  events, from either place. A file replaced by another one at the same path is
  reopened and written to.
- **Backpressure** (never a silent drop). Above ``max_queue`` (100,000) queued
  events, ``submit`` blocks the recording thread for up to ``block_timeout``
  (1 s) while the writer drains. If the queue is still full, the excess events
  are appended to the spill file (JSONL, ``<db>.spill.jsonl`` for SQLite) and
  replayed into the database as soon as it takes writes again (by this sink or
  by the next one opened on the same database). ``close()`` and the exit hook do
  the same with what the database could not take within their timeout. An event
  is dropped only if no spill file can be written either: then it is counted
  in ``sink.stats["dropped"]`` and logged as an error.
- **Counters.** ``sink.stats``: ``written`` (stored by this sink -- never an
  event rejected, spilled or already stored), ``duplicates`` (call id already
  stored), ``rejected`` (kept in ``.rejected.jsonl``), ``overflowed`` (kept in
  a spill file), ``dropped`` (see ``SQLSink.stats``).
- **SIGKILL.** A killed process loses the events still in memory: at most those
  recorded during the last ``flush_interval`` plus the batch being written
  (committed batches survive: SQLite runs in WAL mode with
  ``synchronous=NORMAL``, which loses nothing committed on a process kill).
  Measured (``tests/test_storage_faults.py``: a child recording ~1,500-1,900
  events/s, ``flush_interval=0.2``, killed at a random point): 60 to 400 events
  lost, i.e. 0.04 to 0.24 s of recording -- never more than one flush interval
  plus one batch write; nothing lost when the process had been idle for one
  flush interval before the kill. Lower ``flush_interval`` to tighten the bound
  (the cost is more, smaller transactions).
- **Time.** Events are stored with their epoch timestamp; time ranges select
  ``since <= ts < until``; rollup hours are UTC hours (``floor(ts / 3600)``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import DatabaseError, resolve_url
    from .jsonl import JSONLSink, read_jsonl
    from .query import UsageStore
    from .report import render
    from .schema import SCHEMA_VERSION, SchemaError
    from .sql import SQLSink

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseError",
    "JSONLSink",
    "SQLSink",
    "SchemaError",
    "UsageStore",
    "read_jsonl",
    "render",
    "resolve_url",
]

_WHERE = {
    "SQLSink": "sql",
    "UsageStore": "query",
    "JSONLSink": "jsonl",
    "read_jsonl": "jsonl",
    "render": "report",
    "resolve_url": "engine",
    "DatabaseError": "engine",
    "SCHEMA_VERSION": "schema",
    "SchemaError": "schema",
}


def __getattr__(name: str) -> Any:
    # Lazy: the JSONL sink must not need SQLAlchemy, and nothing is imported until used.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
