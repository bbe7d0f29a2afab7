"""The agentmeter call id of the SDK tool call running here, for ``@metered_tool`` inside it.

A function that is both an SDK tool and ``@agentmeter.metered_tool`` must count once:
the decorator asks agentmeter's call-id providers for the framework call it runs in
and records under that id, and the hooks record the same id (agentmeter keeps one).

The SDK runs each function tool inside its own function span (a ``NoOpSpan`` when
tracing is disabled: it is made current all the same). ``on_tool_start`` runs in a
copy of that context and the tool body in another: both see the same span object as
``agents.tracing.get_current_span()``. While the call is in flight the span is alive,
so its ``id()`` names it; the hooks bind it to the call's id until the call ends.
"""

from __future__ import annotations

import threading

from agents.tracing import get_current_span

from agentmeter import instrumentation as ami

__all__ = ["bind", "current_tool_call_id", "unbind"]

_IN_FLIGHT: dict[int, str] = {}
_lock = threading.Lock()
_registered = False


def current_tool_call_id() -> str | None:
    """The call id agentmeter records the SDK tool call running here under, or None."""
    if not _IN_FLIGHT:
        return None
    span = get_current_span()
    return _IN_FLIGHT.get(id(span)) if span is not None else None


def bind(call_id: str) -> int | None:
    """Bind the current (function) span to ``call_id``; returns the key to unbind."""
    global _registered
    if not _registered:
        with _lock:
            if not _registered:
                ami.register_call_id_provider(current_tool_call_id)
                _registered = True
    span = get_current_span()
    if span is None:
        return None
    key = id(span)
    _IN_FLIGHT[key] = call_id
    return key


def unbind(key: int | None, call_id: str) -> None:
    """Undo :func:`bind` (only if the key still names this call)."""
    if key is not None and _IN_FLIGHT.get(key) == call_id:
        del _IN_FLIGHT[key]
