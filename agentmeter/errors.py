"""Exceptions agentmeter raises on purpose.

Only :class:`BudgetExceeded` ever escapes into the host program during
recording; bad arguments to public functions raise ``ValueError`` /
``TypeError`` before anything is counted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["AgentMeterError", "BudgetExceeded", "BudgetStoreUnavailable", "NotFoundError"]


class AgentMeterError(Exception):
    """Base class of agentmeter's own exceptions."""


class BudgetExceeded(AgentMeterError):
    """A call was refused before it was made because it would overspend a budget.

    Attributes:
        owner: What the budget belongs to, e.g. ``"session 's1'"`` or ``"scope 'turn'"``.
        limit_name: The :class:`~agentmeter.Budget` field that would be exceeded
            (``"max_tokens"``, ``"max_cost_usd"``, ...).
        limit: The configured limit (an ``int``, or a ``Decimal`` for cost).
        used: What was already spent against it.
        reserved: What calls still in flight have reserved.
        requested: What the refused call asked for.
    """

    def __init__(
        self,
        owner: str,
        limit_name: str,
        limit: int | Decimal,
        used: int | Decimal,
        reserved: int | Decimal,
        requested: int | Decimal,
    ) -> None:
        self.owner = owner
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.reserved = reserved
        self.requested = requested
        super().__init__(
            f"budget of {owner} exceeded: {limit_name}={limit}, used {used}, "
            f"reserved by calls in flight {reserved}, requested {requested}"
        )

    def __reduce__(self) -> tuple[type[BudgetExceeded], tuple[object, ...]]:
        # Keep the exception picklable (multiprocessing, Celery) with its numbers.
        return (
            type(self),
            (self.owner, self.limit_name, self.limit, self.used, self.reserved, self.requested),
        )


class BudgetStoreUnavailable(AgentMeterError):
    """The shared budget store cannot be reached, so a budget cannot be enforced.

    Attributes:
        url: The store's address (password masked).
    """

    def __init__(self, url: str, operation: str, cause: BaseException) -> None:
        self.url = url
        self.operation = operation
        super().__init__(f"agentmeter budget store at {url} is unreachable ({operation}): {cause}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unavailable, (self.url, self.operation, str(self)))


def _rebuild_unavailable(url: str, operation: str, message: str) -> BudgetStoreUnavailable:
    err = BudgetStoreUnavailable.__new__(BudgetStoreUnavailable)
    err.url, err.operation = url, operation
    Exception.__init__(err, message)
    return err


class NotFoundError(AgentMeterError, LookupError):
    """A session, customer, agent or model with nothing recorded was read.

    The one rule of every reader (:class:`~agentmeter.Tracker`,
    :class:`agentmeter.storage.UsageStore`, the REST API's 404): asking for one
    id's view raises this; listings and breakdowns simply leave unknown ids out.
    It is a :class:`LookupError`, so ``except LookupError`` catches it.

    Attributes:
        kind: ``"session"``, ``"customer"``, ``"agent"`` or ``"model"``.
        key: The id that was asked for.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"unknown {kind} {key!r}")

    def __str__(self) -> str:
        # LookupError subclasses would otherwise print like KeyError does (quoted).
        return f"unknown {self.kind} {self.key!r}"

    def __reduce__(self) -> tuple[type[NotFoundError], tuple[str, str]]:
        return (type(self), (self.kind, self.key))
