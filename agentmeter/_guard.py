"""The "never break the host program" rule, in one place.

Every entry point that the host program reaches (recording functions, framework
callbacks, subscribers) catches its own errors and hands them to :func:`swallow`. An unexpected
error is logged and swallowed -- in production and in a user's own test suite
alike -- and re-raised only in *strict mode*, which is chosen, never guessed:
``AGENTMETER_STRICT=1`` in the environment, or :func:`set_strict` (the
``agentmeter_strict`` fixture of :mod:`agentmeter.testing` uses it).
:class:`~agentmeter.BudgetExceeded` (and
:class:`~agentmeter.BudgetStoreUnavailable`: an unenforceable budget is not
passed silently) and argument errors (``ValueError`` / ``TypeError`` raised by
validation) always propagate.
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import TracebackType

from .errors import BudgetExceeded, BudgetStoreUnavailable

logger = logging.getLogger("agentmeter")

_override: bool | None = None
# Deliberate answers to the host program, never swallowed.
_PROPAGATE = (BudgetExceeded, BudgetStoreUnavailable)


def set_strict(enabled: bool | None) -> bool | None:
    """Turn strict mode on or off for this process (``None``: follow the environment).

    Returns the previous setting, to restore it.
    """
    global _override
    if enabled is not None and type(enabled) is not bool:
        raise TypeError(f"enabled must be a bool or None, got {type(enabled).__name__}")
    before, _override = _override, enabled
    return before


def strict_mode() -> bool:
    """True when internal errors should be re-raised (``AGENTMETER_STRICT=1`` or set_strict)."""
    if _override is not None:
        return _override
    return os.environ.get("AGENTMETER_STRICT", "") not in ("", "0", "false", "False", "no")


def swallow(exc: BaseException, where: str) -> None:
    """Log an internal error; re-raise it in strict mode."""
    if strict_mode():
        raise exc
    logger.exception("agentmeter: internal error in %s (ignored): %r", where, exc)


class guarded(contextlib.ContextDecorator):  # lower case: used like a function
    """Keep agentmeter's own errors out of the host program.

    As a context manager or a decorator: an exception raised inside is logged
    (``logging.getLogger("agentmeter")``) and swallowed -- re-raised in strict
    mode -- except :class:`~agentmeter.BudgetExceeded` and
    :class:`~agentmeter.BudgetStoreUnavailable`, which always propagate: they are
    agentmeter's deliberate answers to the host. ``KeyboardInterrupt`` and other
    non-``Exception`` errors propagate too.

    ::

        with guarded("MyHandler.on_llm_end"):
            call.finish(usage)

    Args:
        where: Names the code in the log line (``"MyHandler.on_llm_end"``).
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> guarded:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, _PROPAGATE):
            return False
        swallow(exc, self.where)  # raises in strict mode
        return True
