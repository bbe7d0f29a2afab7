"""Budget stops without LangChain's "Error in ... callback" warning.

A handler can stop a LangChain run only by raising from a callback, and
LangChain's public API offers no way to raise without that warning:
``handle_event`` and ``_ahandle_event_for_handler`` (``langchain_core.callbacks.
manager``) log every ``Exception`` a handler raises, at WARNING, *before* they
look at ``raise_error`` (on purpose: langchain PR #6247 moved the line there for
debugging). ``run_inline`` only decides whether an async run calls the handler
on the event loop or in a thread pool; every hook (``on_chat_model_start``,
``on_llm_start``, ``on_tool_start`` ...) goes through those two functions; a
coroutine handler's exception is swallowed on sync runs (``_run_coros``); and an
exception that is not an ``Exception`` escapes unlogged but could not be
caught as :class:`agentmeter.BudgetExceeded`.

So the line is dropped where it is emitted: a :class:`logging.Filter` on that
logger drops exactly the records of an agentmeter handler refusing a call for
a budget (handler class, format string and exception type all match), and says
it once, clearly, at INFO on ``agentmeter.langchain`` instead. Every other
record of that logger -- other handlers' errors, agentmeter's own non-budget
errors -- passes untouched. :func:`set_quiet_budget_stops` turns it off.
"""

from __future__ import annotations

import logging
import threading

import agentmeter

__all__ = ["install", "set_quiet_budget_stops"]

_LANGCHAIN_LOGGER = "langchain_core.callbacks.manager"
# The format LangChain logs a handler's exception with (sync and async paths).
_FORMAT = "Error in %s.%s callback: %s"

logger = logging.getLogger("agentmeter.langchain")


def _names(cls: type) -> set[str]:
    """``cls`` and its subclasses' names (LangChain logs the handler's class name)."""
    names = {cls.__name__}
    sub: type
    for sub in cls.__subclasses__():
        names |= _names(sub)
    return names


class BudgetStopFilter(logging.Filter):
    """Drops LangChain's warning for an agentmeter handler's ``BudgetExceeded``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _FORMAT:
            return True
        args = record.args
        if not isinstance(args, tuple) or len(args) != 3:
            return True
        handler, event, error = args
        try:
            from .handler import AgentMeterCallbackHandler

            if not isinstance(error, str) or handler not in _names(AgentMeterCallbackHandler):
                return True
            if not error.startswith(tuple(f"{n}(" for n in _names(agentmeter.BudgetExceeded))):
                return True
            logger.info(
                "agentmeter: a budget refused a LangChain call at %s, before it was made "
                "(BudgetExceeded raised to the caller; the handler did not fail): %s",
                event,
                error,
            )
        except Exception:  # never break logging: let LangChain's line through
            return True
        return False


_filter = BudgetStopFilter()
_lock = threading.Lock()


def install() -> None:
    """Add the filter to LangChain's callback-manager logger (idempotent)."""
    with _lock:
        target = logging.getLogger(_LANGCHAIN_LOGGER)
        if _filter not in target.filters:
            target.addFilter(_filter)


def set_quiet_budget_stops(enabled: bool = True) -> None:
    """Drop (``True``, the default on import) or keep LangChain's "Error in
    AgentMeterCallbackHandler.<hook> callback: BudgetExceeded(...)" warning.

    A budget refusal reaches the caller as :class:`agentmeter.BudgetExceeded`
    either way; with the default, LangChain does not also log it as a failed
    callback, and ``agentmeter.langchain`` logs one INFO line instead.
    """
    if enabled is not True and enabled is not False:
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    if enabled:
        install()
    else:
        with _lock:
            logging.getLogger(_LANGCHAIN_LOGGER).removeFilter(_filter)
