"""Persistent storage: the SQL and JSONL sinks, and SQL read-back of the aggregates.

::

    from agentmeter.storage import SQLSink, UsageStore

    tracker.add_sink(SQLSink("agentmeter.db"))      # or any SQLAlchemy URL
    ...
    UsageStore("agentmeter.db").snapshot(since=datetime(2025, 1, 1))

Needs SQLAlchemy 2 (``pip install 'agentmeter-core[sql]'``; PostgreSQL also needs
``pip install 'agentmeter-core[postgres]'``). ``import agentmeter`` never imports
this package; :class:`JSONLSink` works without SQLAlchemy.

Guarantees of the sinks
-----------------------
- **Hot path.** ``submit`` appends the tracker's raw event tuple to a deque and
  compares the queue length with the batch size; conversion and I/O happen on
  one daemon writer thread per sink (measured: ~0.2-0.5 us for ``submit``; the
  tracker's own event building adds ~1-1.8 us; see ``benchmarks/bench_storage.py``).
- **Batches.** The writer wakes every ``flush_interval`` (0.2 s by default) or as
  soon as ``batch_size`` (2000) events wait, and inserts them with one
  ``executemany`` of plain tuples per transaction.
- **flush / close / exit.** ``flush()`` returns once everything submitted before
  it is stored; ``close()`` flushes and stops the thread; an ``atexit`` hook
  closes every sink still open at a normal interpreter exit (``sys.exit``, end of
  the script, an uncaught exception), so nothing is lost then.
- **Outages.** A failed write (SQLite "database is locked", PostgreSQL down or
  restarted, tables dropped) is retried with exponential backoff (20 ms doubling
  to ``max_retry_delay``, 2 s) for as long as it takes; the batch stays in memory
  meanwhile and later events keep queueing. A row the database rejects as
  invalid (not an outage) is isolated and written to ``<spill>.rejected.jsonl``
  with an error log; the rest of its batch is stored.
- **Backpressure** (never a silent drop). Above ``max_queue`` (100,000) queued
  events, ``submit`` blocks the recording thread for up to ``block_timeout``
  (1 s) while the writer drains. If the queue is still full, the excess events
  are appended to the spill file (JSONL, ``<db>.spill.jsonl`` for SQLite) and
  replayed into the database as soon as it takes writes again (by this sink or
  by the next one opened on the same database). ``close()`` and the exit hook do
  the same with what the database could not take within their timeout. An event
  is dropped only if the spill file cannot be written either: then it is counted
  in ``sink.stats["dropped"]`` and logged as an error.
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
  ``since <= ts < until``.
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
