"""Which LangChain tool run the current code is inside, for ``@agentmeter.metered_tool``.

Inside a tool's function, LangChain sets ``var_child_runnable_config`` to the
child config of the tool run: its callback manager's ``parent_run_id`` is the
tool's ``run_id`` (``BaseTool.run`` / ``arun``: ``patch_config(config,
callbacks=run_manager.get_child())`` under ``set_config_context``). A decorated
tool function asks the provider registered here for that id and records its
call with it, so the decorator and the handler's ``on_tool_end`` count the call
once. Only runs a handler saw start as tools qualify (a chain step has a child
config too).
"""

from __future__ import annotations

import threading
from uuid import UUID

from langchain_core.runnables.config import var_child_runnable_config

from agentmeter.instrumentation import register_call_id_provider

__all__ = ["current_tool_run_id", "ensure_call_id_provider"]

# Tool runs in progress (any handler). Bounded: a run whose end never came is
# dropped once this many newer ones started.
_ACTIVE: dict[UUID, None] = {}
_MAX_ACTIVE = 65_536
_lock = threading.Lock()
_registered = False


def tool_run_started(run_id: UUID) -> bool:
    """Note a tool run that began; True for the first handler that saw it start.

    Several handlers can see one run (``instrument()`` plus an explicit one): only
    the first opens the scope around the tool body, so that scopes still nest.
    """
    if run_id in _ACTIVE:
        return False
    _ACTIVE[run_id] = None
    if len(_ACTIVE) > _MAX_ACTIVE:
        try:
            _ACTIVE.pop(next(iter(_ACTIVE)), None)
        except (StopIteration, RuntimeError):
            pass
    return True


def tool_run_ended(run_id: UUID) -> None:
    """Forget a tool run (its end or error event came)."""
    _ACTIVE.pop(run_id, None)


def current_tool_run_id() -> str | None:
    """The ``run_id`` of the LangChain tool whose function is running here, if any."""
    if not _ACTIVE:
        return None
    config = var_child_runnable_config.get()
    if not config:
        return None
    manager = config.get("callbacks")
    run_id = getattr(manager, "parent_run_id", None)
    if run_id is not None and run_id in _ACTIVE:
        return str(run_id)
    return None


def ensure_call_id_provider() -> None:
    """Register :func:`current_tool_run_id` as an agentmeter call-id provider (once per process)."""
    global _registered
    if _registered:
        return
    with _lock:
        if not _registered:
            register_call_id_provider(current_tool_run_id)
            _registered = True
