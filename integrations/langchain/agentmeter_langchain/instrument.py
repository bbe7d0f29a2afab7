"""``instrument()`` / ``uninstrument()``: meter every LangChain run without passing callbacks.

LangChain's ``CallbackManager.configure`` consults its registered configure
hooks on every run and adds the handler a hook holds. agentmeter registers one
hook, once per process, whatever the number of ``instrument()`` calls. The hook's
slot is process-wide rather than a ``ContextVar`` value: a ``ContextVar`` set in
one thread is invisible in threads started later (LangGraph's and the user's
worker threads), and "instrument once" must reach them all.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any, cast

from langchain_core.tracers.context import register_configure_hook

import agentmeter

from .handler import AgentMeterCallbackHandler

__all__ = ["instrument", "instrumented_handler", "uninstrument"]


class _HandlerSlot:
    """Duck-types the ``ContextVar.get()`` that LangChain's configure hooks call."""

    __slots__ = ("handler",)

    def __init__(self) -> None:
        self.handler: AgentMeterCallbackHandler | None = None

    def get(self, default: Any = None) -> AgentMeterCallbackHandler | None:
        return self.handler


_slot = _HandlerSlot()
_lock = threading.Lock()
_hook_registered = False


def instrument(
    tracker: agentmeter.Tracker | None = None,
    *,
    session_id: str | None = None,
    agent_id: str | None = None,
    enforce_budgets: bool = True,
) -> AgentMeterCallbackHandler:
    """Meter every LangChain / LangGraph run in this process.

    Idempotent: however often it is called, one configure hook is registered and
    one handler is attached to each run (a later call replaces the handler, e.g.
    to change the tracker). Runs that also pass an ``AgentMeterCallbackHandler``
    for the same tracker are still counted once (records are keyed by run id).

    Args:
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        session_id: Session for every call (default: from the run metadata / scope).
        agent_id: Agent for every call (default: from the run metadata / scope).
        enforce_budgets: Raise ``BudgetExceeded`` before a call that would overspend.

    Returns:
        The handler now attached to every run.
    """
    global _hook_registered
    handler = AgentMeterCallbackHandler(
        tracker, session_id=session_id, agent_id=agent_id, enforce_budgets=enforce_budgets
    )
    with _lock:
        if not _hook_registered:
            register_configure_hook(
                cast("ContextVar[AgentMeterCallbackHandler | None]", _slot), inheritable=True
            )
            _hook_registered = True
        _slot.handler = handler
    return handler


def uninstrument() -> None:
    """Stop metering runs that do not pass a handler themselves (idempotent)."""
    with _lock:
        _slot.handler = None


def instrumented_handler() -> AgentMeterCallbackHandler | None:
    """The handler :func:`instrument` attached, or ``None`` when not instrumented."""
    return _slot.handler
