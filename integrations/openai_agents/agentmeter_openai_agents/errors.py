"""``BudgetExceeded`` in a form the SDK lets through untouched.

The SDK wraps any exception a tool's hooks raise in ``UserError("Error running
tool ...")`` -- except its own ``AgentsException``. A budget that stops a tool must
reach the caller as ``agentmeter.BudgetExceeded``, so the hooks raise this subclass
of both: ``except agentmeter.BudgetExceeded`` catches it, the SDK re-raises it as
it is (and attaches its ``run_data``, the run's items so far).
"""

from __future__ import annotations

from agents.exceptions import AgentsException

import agentmeter

__all__ = ["BudgetExceeded"]


class BudgetExceeded(agentmeter.BudgetExceeded, AgentsException):
    """``agentmeter.BudgetExceeded`` raised out of an agent run (also an ``AgentsException``).

    Attributes: those of :class:`agentmeter.BudgetExceeded`, and the SDK's
    ``run_data`` once the run has attached it.
    """

    @classmethod
    def of(cls, exc: agentmeter.BudgetExceeded) -> BudgetExceeded:
        """The same refusal (owner, limit, amounts) as this class."""
        if isinstance(exc, cls):
            return exc
        new = cls(exc.owner, exc.limit_name, exc.limit, exc.used, exc.reserved, exc.requested)
        new.__cause__ = exc.__cause__
        return new
