"""The tracker's budget bookkeeping: which budgets apply, reservations, settlement.

The numbers themselves live in a :class:`~agentmeter.BudgetStore`; this module
decides which store keys a call touches (the budgets of the enclosing scopes and
of the session), books reservations before calls and settles them after.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING

from .budget import ZERO, Budget, BudgetRef, BudgetStore, InMemoryBudgetStore, Reservation, Spend
from .budget import status as budget_status
from .models import BudgetStatus

if TYPE_CHECKING:
    from .scope import Scope

_PENDING_MAX = 65_536  # reservations awaiting settlement; the oldest is dropped past this

# The last reservation made without a call id in this thread / task: the next record
# without a call id settles it (plain ``check_budget(); record_llm(...)`` code).
_UNNAMED: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "agentmeter_unnamed_reservation", default=None
)


class BudgetLedger:
    """Budgets of one tracker. ``active`` is the hot path's "anything to do?" flag."""

    def __init__(
        self, store: BudgetStore | None, default_budget: Budget | None, key_prefix: str
    ) -> None:
        self.store: BudgetStore = store or InMemoryBudgetStore()
        self.default_budget = default_budget
        self.session_refs: dict[str, BudgetRef] = {}
        self.pending: dict[str, Reservation] = {}
        self.prefix = key_prefix
        self.active = default_budget is not None  # session budgets may apply

    def _drop(self, key: str) -> None:
        # A shared store (Redis) holds one budget for every process: one process
        # closing its session must not reset what the others spend against.
        if not getattr(self.store, "shared", False):
            self.store.drop(key)

    def update_active(self) -> None:
        """Recompute :attr:`active` after the session or default budgets changed."""
        self.active = self.default_budget is not None or bool(self.session_refs)

    # -- which budgets apply ----------------------------------------------------
    def session_ref(self, session_id: str) -> BudgetRef | None:
        """The session's budget, creating it from the default budget on first use."""
        ref = self.session_refs.get(session_id)
        if ref is None and self.default_budget is not None:
            ref = self.session_refs.setdefault(
                session_id, _ref_for(session_id, self.default_budget)
            )
        return ref

    def refs(self, scope: Scope | None, session_id: str | None) -> tuple[BudgetRef, ...]:
        """Every budget a call in ``scope`` for ``session_id`` counts against."""
        refs = scope.budget_refs if scope is not None else ()
        if self.active and session_id is not None:
            ref = self.session_ref(session_id)
            if ref is not None:
                refs = (*refs, ref)
        return refs

    def scope_ref(self, scope: Scope) -> BudgetRef:
        """A budget ref for a scope that has its own budget."""
        assert scope.budget is not None
        return BudgetRef(
            f"scope:{self.prefix}{scope.uid}",
            f"scope {'/'.join(scope.path)!r}",
            scope.budget,
            scope.budget.limits(),
        )

    def scope_status(self, scope: Scope) -> BudgetStatus | None:
        """A scope's own budget against its spend, ``None`` without one."""
        if scope.budget is None or not scope.budget_refs:
            return None
        return self.status(scope.budget_refs[-1])

    def drop_scope(self, scope: Scope) -> None:
        """Forget a finished scope's budget state."""
        self.store.drop(f"scope:{self.prefix}{scope.uid}")

    # -- session budgets ---------------------------------------------------------
    def set_session_budget(
        self, session_id: str, budget: Budget | None, spent_so_far: Callable[[], Spend]
    ) -> None:
        """Attach (or with ``None`` remove) a session's budget.

        A new budget starts from what the session already spent in this process
        (``spent_so_far``) unless its store already holds usage for it (a shared
        store that other processes fed).
        """
        old = self.session_refs.pop(session_id, None)
        if budget is None:
            if old is not None:
                self._drop(old.key)
        else:
            ref = _ref_for(session_id, budget)
            if old is None and self.store.usage(ref.key)[0] == ZERO:
                spent = spent_so_far()
                if spent != ZERO:
                    self.store.settle(ref.key, None, spent)
            self.session_refs[session_id] = ref
        self.update_active()

    def close_session(self, session_id: str) -> None:
        """Drop a closed session's budget."""
        ref = self.session_refs.pop(session_id, None)
        if ref is not None:
            self._drop(ref.key)
        self.update_active()

    def session_status(self, session_id: str) -> BudgetStatus | None:
        """The session's budget status, or ``None`` without a budget."""
        ref = self.session_refs.get(session_id)
        return None if ref is None else self.status(ref)

    def status(self, ref: BudgetRef) -> BudgetStatus:
        """A budget's limits against its store's used and reserved amounts."""
        used, reserved = self.store.usage(ref.key)
        return budget_status(ref.owner, ref.budget, used, reserved)

    # -- reserve / release / settle ---------------------------------------------
    def reserve(
        self,
        refs: tuple[BudgetRef, ...],
        request: Spend,
        rid: str,
        release: Callable[[object], None],
        unnamed: bool = False,
    ) -> Reservation:
        """Book ``request`` on every ref, all or nothing; raises BudgetExceeded."""
        done: list[BudgetRef] = []
        try:
            for ref in refs:
                self.store.reserve(ref.key, ref.owner, ref.limits, request, rid)
                done.append(ref)
        except BaseException:
            for ref in done:
                self.store.release(ref.key, rid)
            raise
        reservation = Reservation(rid, request, refs, release)
        pending = self.pending
        pending[rid] = reservation
        if len(pending) > _PENDING_MAX:
            pending.pop(next(iter(pending)), None)
        if unnamed:
            _UNNAMED.set(reservation)
        return reservation

    def release(self, rid: str) -> None:
        """Give back a reservation whose call was not made."""
        res = self.pending.pop(rid, None)
        if res is not None:
            for ref in res.refs:
                self.store.release(ref.key, res.call_id)

    def settle(
        self, scope: Scope | None, session_id: str | None, call_id: object, spend: Spend
    ) -> None:
        """Count a finished call's spend, replacing its reservation if it had one."""
        res = None
        if self.pending:
            if call_id is None:
                unnamed = _UNNAMED.get()
                if unnamed is not None:
                    _UNNAMED.set(None)
                    res = self.pending.pop(unnamed.call_id, None)
            else:
                res = self.pending.pop(str(call_id), None)
        refs = self.refs(scope, session_id)
        if res is None:
            for ref in refs:
                self.store.settle(ref.key, None, spend)
            return
        booked = {r.key for r in res.refs}
        keyed = {r.key: r for r in (*refs, *res.refs)}
        for key in keyed:
            self.store.settle(key, res.call_id if key in booked else None, spend)


def _ref_for(session_id: str, budget: Budget) -> BudgetRef:
    return BudgetRef(f"session:{session_id}", f"session {session_id!r}", budget, budget.limits())
