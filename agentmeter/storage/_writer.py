"""The background writer shared by the sinks: queue, batches, retries, backpressure, exit.

The recording thread only appends the raw event tuple to a ``deque`` and compares
its length with the batch size (a few tens of nanoseconds); everything else runs
on one daemon writer thread per sink:

- it wakes every ``flush_interval`` seconds, or as soon as ``batch_size`` events
  are waiting, and writes them in batches of at most ``batch_size``;
- a failed write is retried with exponential backoff (up to ``max_retry_delay``)
  until it succeeds; the batch stays in memory meanwhile, nothing is lost;
- ``flush()`` waits until everything submitted before it was written;
  ``close()`` flushes and stops; an ``atexit`` hook closes every sink still open
  when the interpreter exits normally, and a ``multiprocessing`` finalizer does
  the same in worker processes, which end with ``os._exit`` (no ``atexit``).

Backpressure: when more than ``max_queue`` events wait (the store is down or
slower than the producers), ``submit`` blocks the recording thread for at most
``block_timeout`` seconds while the writer drains. If the queue is still full
after that, the events above the limit go to the sink's overflow path, and keep
going there without further waits until the writer makes progress again (the SQL
sink's spill file, replayed into the database once it is back; the JSONL sink's
own file written synchronously). Only when the overflow path fails too is an
event dropped -- counted in ``stats["dropped"]`` and logged as an error, never
silently.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
import time
import weakref
from collections import deque
from typing import Any

from ..models import RawEvent

__all__ = ["BackgroundWriter"]

logger = logging.getLogger("agentmeter.storage")
# Before multiprocessing's own queue finalizers (priority 10): what a worker recorded
# is stored while the process can still do I/O.
_EXIT_PRIORITY = 20


class BackgroundWriter:
    """Base of the buffering sinks; subclasses implement :meth:`_write` and :meth:`_overflow`.

    Args:
        name: Thread name.
        batch_size: Most events written per batch; reaching it wakes the writer early.
        flush_interval: Longest time (seconds) an event waits in memory before its
            batch is written -- the bound on what a ``SIGKILL`` can lose.
        max_queue: Events held in memory before ``submit`` applies backpressure.
        block_timeout: Longest time (seconds) ``submit`` blocks on a full queue.
        max_retry_delay: Cap of the exponential backoff between write attempts.
        exit_timeout: How long the ``atexit`` flush may wait for the store.
    """

    def __init__(
        self,
        *,
        name: str,
        batch_size: int = 2000,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        block_timeout: float = 1.0,
        max_retry_delay: float = 2.0,
        exit_timeout: float = 10.0,
    ) -> None:
        if batch_size < 1 or max_queue < batch_size:
            raise ValueError("need 1 <= batch_size <= max_queue")
        if flush_interval <= 0 or block_timeout < 0 or max_retry_delay <= 0:
            raise ValueError("flush_interval and max_retry_delay must be > 0, block_timeout >= 0")
        self._q: deque[RawEvent] = deque()
        self._batch_size = batch_size
        self._trigger = batch_size  # queue length at which submit() leaves the fast path
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._block_timeout = block_timeout
        self._max_retry_delay = max_retry_delay
        self._exit_timeout = exit_timeout
        self._wake = threading.Event()
        self._give_up = threading.Event()  # close() timed out: overflow instead of retrying
        self._cond = threading.Condition()
        self._handled = 0  # events written or sent to the overflow path
        self._inflight = 0
        self._progress = 0  # batches the writer thread finished
        self._stalled_at = -1  # value of _progress when a bounded wait last timed out
        self._closed = False
        self._stopping = False
        self._counters = {
            "written": 0,
            "duplicates": 0,
            "rejected": 0,
            "retries": 0,
            "overflowed": 0,
            "dropped": 0,
            "blocked": 0,
        }
        self._last_error: str | None = None
        self._warned_closed = False
        self._name = name
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self._atexit)
        # multiprocessing's children (fork, forkserver and spawn start methods) end
        # with os._exit once their target returns: atexit hooks never run there, but
        # multiprocessing.util._exit_function runs the finalizers registered with
        # Finalize(exitpriority=...) first. The child's bootstrap clears the finalizers
        # it inherited and then runs the after-fork callbacks, so one is registered now
        # (a sink created inside the child) and again after every fork.
        self._finalizer: multiprocessing.util.Finalize | None = None
        self._register_finalizer()
        multiprocessing.util.register_after_fork(self, BackgroundWriter._register_finalizer)
        # A forked child (multiprocessing's "fork" start method) inherits this object
        # but not its writer thread: without a new one its events would never be stored.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _register_finalizer(self) -> None:
        if self._closed:
            return
        self._finalizer = multiprocessing.util.Finalize(
            None, self._atexit, exitpriority=_EXIT_PRIORITY
        )

    def _restart_in_child(self) -> None:
        """Give a forked child its own empty queue, locks and writer thread."""
        self._q = deque()  # what the parent had queued is the parent's to write
        self._wake = threading.Event()
        self._give_up = threading.Event()
        self._cond = threading.Condition()
        self._handled = self._inflight = self._progress = 0
        self._stalled_at = -1
        self._counters = dict.fromkeys(self._counters, 0)
        if self._closed:
            return
        self._forked()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _forked(self) -> None:
        """Subclass hook: drop resources that must not be shared with the parent."""

    # ------------------------------------------------------------ hot path
    def submit(self, raw: RawEvent) -> None:
        """Queue one raw event (called by the tracker on the recording thread)."""
        q = self._q
        q.append(raw)
        if len(q) >= self._trigger:  # the batch size; 0 once closed
            self._pressure()

    # ---------------------------------------------------------- slow paths
    def _pressure(self) -> None:
        if self._closed:
            self._late()
            return
        self._wake.set()
        q = self._q
        if len(q) <= self._max_queue:
            return
        # Wait (bounded) for the writer -- unless it made no progress since the last
        # wait timed out: then the store is stalled and waiting again would only slow
        # every record down by block_timeout.
        if self._stalled_at != self._progress:
            self._counters["blocked"] += 1
            deadline = time.monotonic() + self._block_timeout
            with self._cond:
                while len(q) > self._max_queue and self._thread.is_alive():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._stalled_at = self._progress
                        break
                    self._cond.wait(min(left, 0.05))
        excess: list[RawEvent] = []
        try:
            while len(q) > self._max_queue:
                excess.append(q.pop())  # the newest: the writer keeps the oldest order
        except IndexError:
            pass
        if excess:
            excess.reverse()
            self._send_overflow(excess, "the queue stayed full")
            with self._cond:
                self._handled += len(excess)
                self._cond.notify_all()

    def _late(self) -> None:
        """Events submitted after close(): written through the overflow path."""
        late: list[RawEvent] = []
        try:
            while True:
                late.append(self._q.popleft())
        except IndexError:
            pass
        if late:
            if not self._warned_closed:
                self._warned_closed = True
                logger.warning(
                    "agentmeter: %r received events after close(); kept via overflow", self
                )
            self._send_overflow(late, "the sink was closed")

    def _send_overflow(self, raws: list[RawEvent], reason: str) -> None:
        try:
            n = self._overflow(raws, reason)
        except Exception as exc:
            n = 0
            self._last_error = repr(exc)
            logger.error("agentmeter: %r overflow failed: %r", self, exc)
        self._counters["overflowed"] += n
        if n < len(raws):
            self._counters["dropped"] += len(raws) - n
            logger.error(
                "agentmeter: %r DROPPED %d events (%s and the overflow path failed)",
                self,
                len(raws) - n,
                reason,
            )

    # ------------------------------------------------------- writer thread
    def _run(self) -> None:
        try:
            self._started()
        except Exception as exc:  # a start-up hook must not kill the writer
            self._last_error = repr(exc)
            logger.warning("agentmeter: %r start-up step failed: %r", self, exc)
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._drain()
            if self._stopping and not self._q:
                return

    def _drain(self) -> None:
        q = self._q
        while q:
            with self._cond:
                n = min(len(q), self._batch_size)
                batch = [q.popleft() for _ in range(n)]
                self._inflight = n
            self._write_with_retry(batch)
            with self._cond:
                self._handled += n
                self._inflight = 0
                self._progress += 1
                self._cond.notify_all()
        self._idle()

    def _write_with_retry(self, batch: list[RawEvent]) -> None:
        delay = 0.02
        failures = 0
        while True:
            try:
                written = self._write(batch)
            except Exception as exc:
                failures += 1
                self._counters["retries"] += 1
                self._last_error = repr(exc)
                if failures == 1:
                    logger.warning(
                        "agentmeter: %r write failed (%r); retrying, %d events waiting",
                        self,
                        exc,
                        len(batch) + len(self._q),
                    )
                if self._give_up.is_set():
                    self._send_overflow(batch, f"the store is unavailable ({exc!r})")
                    return
                self._recover(exc, failures)
                self._give_up.wait(delay)
                delay = min(delay * 2, self._max_retry_delay)
                continue
            self._counters["written"] += written
            if failures:
                logger.warning("agentmeter: %r recovered after %d failed attempts", self, failures)
            return

    # ------------------------------------------------------------- control
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every event submitted before this call is stored.

        Returns:
            True if all were written (or sent to the overflow path), False on timeout.
        """
        with self._cond:
            target = self._handled + self._inflight + len(self._q)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._handled < target:
                if not self._thread.is_alive():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(left, 0.05))
        if self._handled < target:  # the writer died: keep the rest through the overflow
            self._late_drain()
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, stop the writer thread and release resources (idempotent).

        Events the store could not take within ``timeout`` go to the overflow path.

        Returns:
            True if everything reached the store (or the overflow path) in time.
        """
        if self._closed:
            return True
        ok = self.flush(timeout)
        self._closed = True
        self._trigger = 0  # every later submit() takes the slow path (overflow)
        if not ok:
            self._give_up.set()
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=None if ok else 10.0)
        self._late_drain()
        try:
            atexit.unregister(self._atexit)
            if self._finalizer is not None:
                self._finalizer.cancel()
                self._finalizer = None
        except Exception:  # pragma: no cover - interpreter shutting down
            pass
        self._dispose()
        return ok

    def _late_drain(self) -> None:
        if self._q:
            batch = list(self._q)
            self._q.clear()
            self._send_overflow(batch, "the writer stopped")

    def _atexit(self) -> None:
        try:
            self.close(self._exit_timeout)
        except Exception as exc:  # pragma: no cover - never fail the exit
            logger.error("agentmeter: closing %r at exit failed: %r", self, exc)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of this sink (in this process):

        - ``written``: events stored by this sink (never one that was not);
        - ``duplicates``: events whose call id was already stored (a replay, a retry);
        - ``rejected``: events the database refused as invalid, kept in
          ``<spill>.rejected.jsonl``;
        - ``overflowed``: events kept in the spill file (full queue, outage at close,
          a database that disappeared), replayed later;
        - ``dropped``: events lost because not even the spill file could be written;
        - ``retries``, ``blocked`` (recording threads that waited on a full queue),
          ``queued`` (in memory now), ``last_error``.
        """
        return {**self._counters, "queued": len(self._q), "last_error": self._last_error}

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------ subclass hooks
    def _write(self, batch: list[RawEvent]) -> int:  # pragma: no cover - abstract
        """Store a batch; return how many of its events were stored (the subclass counts
        the others: duplicates, rejected, spilled, dropped)."""
        raise NotImplementedError

    def _overflow(self, raws: list[RawEvent], reason: str) -> int:  # pragma: no cover
        """Keep events the store cannot take now; return how many were kept."""
        return 0

    def _started(self) -> None:
        """Runs first on the writer thread."""

    def _idle(self) -> None:
        """Runs on the writer thread when the queue was drained."""

    def _recover(self, exc: BaseException, failures: int) -> None:
        """Runs on the writer thread between failed attempts (e.g. re-create tables)."""

    def _dispose(self) -> None:
        """Release resources after the writer stopped."""


def _after_fork(ref: weakref.ReferenceType[BackgroundWriter]) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer._restart_in_child()
        except Exception:  # never break the child process
            logger.exception("agentmeter: could not restart %r after fork", writer)
