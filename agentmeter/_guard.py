"""The "never break the host program" rule, in one place.

Every entry point that the host program reaches (recording functions, framework
callbacks, subscribers) catches its own errors and hands them to :func:`swallow`. An unexpected
error is logged and swallowed in production; under pytest it is re-raised so
that our own tests see it. :class:`~agentmeter.BudgetExceeded` (and
:class:`~agentmeter.BudgetStoreUnavailable`: an unenforceable budget is not
passed silently) and argument errors (``ValueError`` / ``TypeError`` raised by
validation) always propagate.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("agentmeter")


def strict_mode() -> bool:
    """True when internal errors should be re-raised (pytest, or AGENTMETER_STRICT=1)."""
    flag = os.environ.get("AGENTMETER_STRICT")
    if flag is not None:
        return flag not in ("", "0", "false", "False")
    return "pytest" in sys.modules


def swallow(exc: BaseException, where: str) -> None:
    """Log an internal error; re-raise it in strict mode."""
    if strict_mode():
        raise exc
    logger.exception("agentmeter: internal error in %s (ignored): %r", where, exc)
