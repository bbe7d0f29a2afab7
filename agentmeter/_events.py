"""The event bus: who hears about each recorded call, and the one place an event is built.

Sinks (SQL, JSONL, OpenTelemetry, webhooks) get the raw event tuple -- cheap to
build, queued off the recording thread -- and subscribers get a
:class:`~agentmeter.UsageEvent` built from it, only when there are any. Both are
called outside every lock; a raising sink or subscriber is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._guard import swallow
from .models import RawEvent, UsageEvent

__all__ = ["EventBus", "Sink", "Subscriber", "build_event"]

logger = logging.getLogger("agentmeter")

Subscriber = Callable[[UsageEvent], object]


class Sink(Protocol):
    """Receives every recorded call as a raw event tuple (see ``models.EVENT_FIELDS``)."""

    def submit(self, raw: RawEvent) -> None:
        """Take one event; must be quick (queue it, write it later)."""


def build_event(
    call_id: str,
    kind: str,
    model: str | None,
    provider: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    reasoning: int,
    cost: int | None,
    latency_ms: float | None,
    session_id: str | None,
    agent_id: str | None,
    scope_path: tuple[str, ...],
    tool: str | None,
    category: str | None,
    ok: bool,
    error: str | None,
    estimated: bool,
    saved: int,
    metadata: dict[str, Any] | None,
    customer_id: str | None,
    tags: dict[str, str] | None,
) -> RawEvent:
    """The raw event tuple of a recorded call, in ``models.EVENT_FIELDS`` order."""
    return (
        call_id,
        time.time(),
        kind,
        model,
        provider,
        input_tokens,
        output_tokens,
        cache_read,
        cache_write,
        reasoning,
        cost,
        latency_ms,
        session_id,
        agent_id,
        scope_path,
        tool,
        category,
        "ok" if ok else "error",
        error,
        estimated,
        saved,
        metadata,
        customer_id,
        tags,
    )


class EventBus:
    """Subscribers and sinks of one tracker. ``listening`` is the hot path's flag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.subscribers: tuple[Subscriber, ...] = ()
        self.sinks: tuple[Sink, ...] = ()
        # Sinks that also want scope boundaries (``scope_started`` / ``scope_ended``,
        # e.g. the OpenTelemetry sink's spans); empty in the common case.
        self.scope_sinks: tuple[Any, ...] = ()
        self._submits: tuple[Callable[[RawEvent], None], ...] = ()
        self.listening = False  # any subscriber or sink: build events only then

    def emit(self, raw: RawEvent) -> None:
        """Hand a recorded call to the sinks (raw) and subscribers (as a UsageEvent)."""
        for submit in self._submits:
            try:
                submit(raw)
            except Exception as exc:
                swallow(exc, f"sink {submit!r}")
        if self.subscribers:
            event = UsageEvent.from_raw(raw)
            for callback in self.subscribers:
                try:
                    callback(event)
                except Exception:
                    # A subscriber's bug is the subscriber's: log it, keep delivering.
                    logger.exception(
                        "agentmeter: subscriber %r raised; event %s dropped for it",
                        callback,
                        event.call_id,
                    )

    def subscribe(self, callback: Subscriber) -> None:
        """Deliver a :class:`~agentmeter.UsageEvent` per call to ``callback``."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            if callback not in self.subscribers:
                self.subscribers = (*self.subscribers, callback)
            self._update()

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop delivering to ``callback`` (a delivery already under way may finish)."""
        with self._lock:
            self.subscribers = tuple(c for c in self.subscribers if c != callback)
            self._update()

    def add_sink(self, sink: Sink) -> None:
        """Send every raw event to ``sink``."""
        if not callable(getattr(sink, "submit", None)):
            raise TypeError("a sink needs a submit(raw_event) method")
        with self._lock:
            if sink not in self.sinks:
                self.sinks = (*self.sinks, sink)
            self._update()

    def remove_sink(self, sink: Sink) -> None:
        """Stop sending events to ``sink`` (it is not closed)."""
        with self._lock:
            self.sinks = tuple(s for s in self.sinks if s is not sink)
            self._update()

    def _update(self) -> None:
        self._submits = tuple(s.submit for s in self.sinks)
        self.scope_sinks = tuple(
            s for s in self.sinks if callable(getattr(s, "scope_started", None))
        )
        self.listening = bool(self.subscribers or self.sinks)

    def flush(self) -> None:
        """Flush every sink that buffers (waits until their events are stored)."""
        for sink in self.sinks:
            fn = getattr(sink, "flush", None)
            if callable(fn):
                fn()
