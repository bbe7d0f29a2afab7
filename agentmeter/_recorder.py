"""The recorder: a tracker's counters, and how records reach them without a lock.

How a record travels (the hot path, kept to a few microseconds):

1. the tracker checks the arguments (a rejected call changes nothing) and builds
   one flat row ``(key, *values)`` (see :mod:`agentmeter._fields`);
2. a duplicate ``call_id`` is dropped (:meth:`Recorder.first_time`, an atomic
   ``dict.setdefault``) and the row is appended to :attr:`Recorder.log` (an
   atomic ``deque.append``): no lock;
3. every ``FOLD_AT`` rows (and before every read) the log is folded under the
   lock: rows are grouped by key and summed column-wise in C
   (``zip``/``sum``/``map``) into the per-key cells and into the scopes and
   their ancestors. A recording thread folds at most ``FOLD_BATCH`` rows at a
   time (a bounded pause, and a short hold of the lock); a read folds them all.

Cells are keyed ``session -> (model, provider, agent, tool, customer)``; every
breakdown (by model, session, agent, customer, tool, category) is a group-by
over them at read time (:mod:`agentmeter._views`). Tool accumulators are kept
per session and per customer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from itertools import groupby, repeat, starmap
from operator import add, itemgetter
from typing import Any

from . import _fields, _tools, _views
from .models import Snapshot, ToolStats
from .scope import Scope

__all__ = ["FOLD_AT", "FOLD_BATCH", "Key", "Recorder"]

FOLD_AT = 512
FOLD_BATCH = 4 * FOLD_AT  # the most rows a recording thread folds at once
_ROW_KEY = itemgetter(0)
# A row key: session, model, provider, agent, tool, scope, row kind (see _fields.LAYOUTS),
# customer.
Key = tuple[
    str | None, str | None, str | None, str | None, str | None, Scope | None, str, str | None
]
State = tuple[_views.CellRows, _views.ToolRows, _views.ToolRows]


class Recorder:
    """Counters of one tracker: pending rows, cells, tool accumulators, the dedup window.

    Args:
        dedup_window: How many recent call ids are remembered to drop duplicates.
    """

    def __init__(self, dedup_window: int) -> None:
        self.lock = threading.Lock()
        # Rows waiting to be folded. Recording threads append without the lock
        # (deque.append is atomic); folding pops them under the lock.
        self.log: deque[tuple[Any, ...]] = deque()
        self.cells: dict[str | None, dict[_views.CellKey, list[Any]]] = {}
        self.tools: dict[str | None, dict[str, _tools.ToolAcc]] = {}
        # Tool stats per customer (records that have one); sessions above keep theirs.
        self.customer_tools: dict[str, dict[str, _tools.ToolAcc]] = {}
        # Call ids recorded lately (values: None once claimed; see first_time).
        self.seen: dict[object, object] = {}
        self.seen_order: deque[object] = deque()
        self.dedup_window = dedup_window
        # Row keys of records made outside any scope, by model or (model, session,
        # provider) (a scope keeps its own).
        self.row_keys: dict[Any, Key] = {}

    # ------------------------------------------------------------- writing
    def first_time(self, call_id: object, row: tuple[Any, ...]) -> bool:
        """Claim ``call_id`` for ``row``; False if it was already recorded (a duplicate).

        ``dict.setdefault`` is atomic, so two threads recording the same id cannot
        both win, without taking the lock: the one whose row went in wins. The row
        is then dropped from the window (any later claim still finds the id taken):
        the window keeps only the ids, not 10,000 rows and their values -- less
        memory, and inside a framework's call fewer cold objects to free on eviction.
        Memory is bounded by the dedup window.
        """
        seen = self.seen
        if seen.setdefault(call_id, row) is not row:
            return False
        seen[call_id] = None
        order = self.seen_order
        order.append(call_id)
        if len(order) > self.dedup_window:
            try:
                seen.pop(order.popleft(), None)
            except IndexError:  # another thread evicted concurrently
                pass
        return True

    def append(self, row: tuple[Any, ...], call_id: object) -> bool:
        """Queue a row for folding; False if ``call_id`` was already recorded."""
        if call_id is not None and not self.first_time(call_id, row):
            return False
        log = self.log
        log.append(row)
        if len(log) >= FOLD_AT:
            self.fold_soon()
        return True

    def add_tool(
        self, key: Key, tool: str, category: str, ok: bool, duration_ms: float, call_id: str
    ) -> None:
        """Count one tool call in its session's and its customer's accumulators."""
        with self.lock:  # an accumulator's fields change together
            bucket = self.tools.get(key[0])
            if bucket is None:
                bucket = self.tools[key[0]] = {}
            _tool_acc(bucket, tool, category).add(ok, duration_ms, call_id)
            customer = key[7]
            if customer is not None:
                cbucket = self.customer_tools.get(customer)
                if cbucket is None:
                    cbucket = self.customer_tools[customer] = {}
                _tool_acc(cbucket, tool, category).add(ok, duration_ms, call_id)

    def fold_soon(self) -> None:
        """Fold from a recording thread, unless another thread is folding or reading."""
        if self.lock.acquire(blocking=False):
            try:
                # At most FOLD_BATCH rows: a long log is drained by the next records,
                # a batch each. One long fold is likely to be preempted with the lock
                # held, while the other threads pile up rows for the next, longer one
                # (measured under 8 threads: 663,346 failed fold attempts for 278
                # folds, a log of up to 132,762 rows).
                self.fold(FOLD_BATCH)
            finally:
                self.lock.release()

    def fold(self, limit: int | None = None) -> None:
        """Sum the pending log (at most ``limit`` rows of it) into the cells and
        scopes (caller holds the lock).

        Recording threads only ever append to the log, so taking the ``n`` rows
        present now is safe while they keep appending. Consecutive rows with the
        same key (the usual case: one context recording many calls; the key object
        is shared, so comparing is an identity test) are summed column-wise in C.
        """
        log = self.log
        n = len(log)
        if limit is not None and n > limit:
            n = limit
        if not n:
            return
        rows = list(starmap(log.popleft, repeat((), n)))  # in C: no Python loop
        cells = self.cells
        for key, run in groupby(rows, _ROW_KEY):
            group = list(run)
            if len(group) == 1:
                sums: Sequence[Any] = group[0][1:]
            else:
                cols = zip(*group, strict=True)  # rows of one key have one layout
                next(cols)
                sums = list(map(sum, cols))
            session, model, provider, agent, tool, scope, kind, customer = key
            full = _fields.expand(kind, len(group), sums)
            bucket = cells.get(session)
            if bucket is None:
                bucket = cells[session] = {}
            ckey = (model, provider, agent, tool, customer)
            cell = bucket.get(ckey)
            if cell is None:
                bucket[ckey] = full
            else:
                cell[:] = map(add, cell, full)
            while scope is not None:
                row = scope.row
                if row is None:
                    scope.row = list(full)
                else:
                    row[:] = map(add, row, full)
                scope = scope.parent

    # ------------------------------------------------------------- reading
    def state(self, *, clear: bool = False) -> State:
        """Copies of every cell and tool accumulator (folded first); ``clear`` empties them."""
        with self.lock:
            self.fold()
            cells = [(s, k, list(r)) for s, b in self.cells.items() for k, r in b.items()]
            tools = [(s, t, a.copy()) for s, b in self.tools.items() for t, a in b.items()]
            ctools: _views.ToolRows = [
                (c, t, a.copy()) for c, b in self.customer_tools.items() for t, a in b.items()
            ]
            if clear:
                self._clear()
        return cells, tools, ctools

    def clear(self) -> None:
        """Forget every counter (open scopes keep what was recorded into them)."""
        with self.lock:
            self.fold()
            self._clear()

    def _clear(self) -> None:
        # New containers, so that the memory of many distinct names is freed; the log
        # and the dedup memory are cleared in place: recording threads may hold them.
        self.cells = {}
        self.tools = {}
        self.customer_tools = {}
        self.row_keys = {}
        self.seen.clear()
        self.seen_order.clear()

    def session(
        self, session_id: str
    ) -> tuple[list[tuple[_views.CellKey, list[Any]]], list[tuple[str, _tools.ToolAcc]], bool]:
        """A session's cells and tool accumulators (copies), and whether it has any."""
        with self.lock:
            self.fold()
            cells = self.cells.get(session_id)
            tools = self.tools.get(session_id)
            cell_rows = [(k, list(r)) for k, r in (cells or {}).items()]
            tool_accs = [(t, a.copy()) for t, a in (tools or {}).items()]
        return cell_rows, tool_accs, cells is not None or tools is not None

    def customer(
        self, customer_id: str
    ) -> tuple[_views.CellRows, list[tuple[str, _tools.ToolAcc]], bool]:
        """A customer's cells (across sessions) and tool accumulators, and whether it has any."""
        with self.lock:
            self.fold()
            cell_rows = [
                (s, k, list(r))
                for s, b in self.cells.items()
                for k, r in b.items()
                if k[4] == customer_id
            ]
            tools = self.customer_tools.get(customer_id)
            tool_accs = [(t, a.copy()) for t, a in (tools or {}).items()]
        return cell_rows, tool_accs, bool(cell_rows) or tools is not None

    def pop_session(
        self, session_id: str
    ) -> tuple[dict[_views.CellKey, list[Any]] | None, dict[str, _tools.ToolAcc] | None]:
        """Take a session's cells and tools out of the per-session view.

        Its usage stays in every other aggregate: the cells and tool stats move to
        the "no session" bucket.
        """
        with self.lock:
            self.fold()
            cells = self.cells.pop(session_id, None)
            tools = self.tools.pop(session_id, None)
            self.row_keys = {}  # some were keyed by the closed session: let them go
            if cells:
                rest = self.cells.setdefault(None, {})
                for key, row in cells.items():
                    _views.acc_row(rest, key, row)
            if tools:
                rest_t = self.tools.setdefault(None, {})
                for name, acc in tools.items():
                    cur = rest_t.get(name)
                    if cur is None:
                        rest_t[name] = acc.copy()
                    else:
                        cur.absorb(acc)
        return cells, tools

    def session_ids(self) -> list[str]:
        """Ids of the sessions currently held."""
        with self.lock:
            self.fold()
            ids = set(self.cells) | set(self.tools)
        return sorted(i for i in ids if i is not None)

    def customer_ids(self) -> list[str]:
        """Ids of the customers with recorded usage."""
        with self.lock:
            self.fold()
            ids = {k[4] for b in self.cells.values() for k in b} | set(self.customer_tools)
        return sorted(i for i in ids if i is not None)

    def scope_row(self, scope: Scope) -> list[Any]:
        """A copy of a scope's counter row (folded first)."""
        with self.lock:
            self.fold()
            row = scope.row
            return _fields.zeros() if row is None else list(row)

    def session_spend(self, session_id: str) -> tuple[list[list[Any]], int]:
        """A session's cell rows and tool-call count (for a budget set mid-session)."""
        with self.lock:
            self.fold()
            rows = [list(r) for r in self.cells.get(session_id, {}).values()]
            tool_calls = sum(a.calls for a in self.tools.get(session_id, {}).values())
        return rows, tool_calls

    def merge(self, snapshot: Snapshot) -> None:
        """Add a snapshot's cells and tool stats (exact: they carry the joint breakdown)."""
        rows = [
            (
                c.session_id,
                (c.model, c.provider, c.agent_id, c.tool, c.customer_id),
                c.usage.to_row(),
            )
            for c in snapshot.cells
        ]
        with self.lock:
            self.fold()
            for session, key, row in rows:
                _views.acc_row(self.cells.setdefault(session, {}), key, row)
            for session, stats in snapshot.session_tool_stats:
                _absorb(self.tools.setdefault(session, {}), stats)
            for customer, by_tool in snapshot.by_customer_tool.items():
                bucket = self.customer_tools.setdefault(customer, {})
                for stats in by_tool.values():
                    _absorb(bucket, stats)


def _absorb(bucket: dict[str, _tools.ToolAcc], stats: ToolStats) -> None:
    acc = bucket.get(stats.tool)
    if acc is None:
        acc = bucket[stats.tool] = _tools.ToolAcc(stats.category)
    acc.absorb(stats)


def _tool_acc(bucket: dict[str, _tools.ToolAcc], tool: str, category: str) -> _tools.ToolAcc:
    """The accumulator of ``tool`` in ``bucket`` (the last category named wins)."""
    acc = bucket.get(tool)
    if acc is None:
        acc = bucket[tool] = _tools.ToolAcc(category)
    elif category and acc.category != category:
        acc.category = category
    return acc
