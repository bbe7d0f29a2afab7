"""The tracker's budget bookkeeping: which budgets apply, reservations, settlement, alerts.

The numbers themselves live in a :class:`~agentmeter.BudgetStore`; this module
decides which store keys a call touches, books reservations before calls and
settles them after, and notices when a settled spend crossed an alert threshold.

A call counts against:

- the budgets of its enclosing scopes (``meter(budget=...)``);
- its session's budget (its own, or the default session budget);
- every budget set with :meth:`~agentmeter.Tracker.set_budget` on attribution keys
  the call matches -- ``customer_id="acme"``, ``agent="planner"``, or several keys
  at once (``customer_id="acme", model="gpt-4o"`` counts the calls matching both);
- for a tool call, each of those budgets' ``tool_limits`` entry for the tool (a key
  of its own, ``<budget key>/tool:<name>``).

All of them are reserved all-or-nothing, so the tightest refuses. A budget with a
period counts into the key of its current period (see :mod:`agentmeter._periods`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from . import _periods
from .budget import (
    _LIMIT_NAMES,
    ZERO,
    Budget,
    BudgetRef,
    BudgetStore,
    InMemoryBudgetStore,
    Reservation,
    Spend,
    _public,
)
from .budget import status as budget_status
from .errors import BudgetExceeded
from .models import BudgetAlert, BudgetRefusal, BudgetStatus

if TYPE_CHECKING:
    from .scope import Scope

logger = logging.getLogger("agentmeter")

_PENDING_MAX = 65_536  # reservations awaiting settlement; the oldest is released past this

# The attribution keys a budget can be set on, in the order keys are built from them.
DIMS: tuple[str, ...] = ("session_id", "customer_id", "agent", "model", "tool")
_KEY_WORD = {
    "session_id": "session",
    "customer_id": "customer",
    "agent": "agent",
    "model": "model",
    "tool": "tool",
}

# The last reservation made without a call id in this thread / task: the next record
# without a call id settles it (plain ``check_budget(); record_llm(...)`` code).
_UNNAMED: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar(
    "agentmeter_unnamed_reservation", default=None
)

AlertHandler = Callable[[list[BudgetAlert]], None]


def _esc(value: str) -> str:
    # Key separators inside a name must not make two budgets share a key.
    return value.replace("%", "%25").replace("/", "%2F").replace("|", "%7C")


def attr_ref(attribution: Mapping[str, str], budget: Budget) -> BudgetRef:
    """The ref of a budget set on attribution keys (``{"customer_id": "acme"}``)."""
    parts = [(d, attribution[d]) for d in DIMS if d in attribution]
    key = "/".join(f"{_KEY_WORD[d]}:{_esc(v)}" for d, v in parts)
    owner = " / ".join(f"{_KEY_WORD[d]} {v!r}" for d, v in parts)
    return BudgetRef(key, owner, budget, budget.limits(), key, dict(parts), None, key)


class BudgetLedger:
    """Budgets of one tracker. ``active`` is the hot path's "anything to do?" flag."""

    def __init__(
        self,
        store: BudgetStore | None,
        default_budget: Budget | None,
        key_prefix: str,
        clock: _periods.Clock | None = None,
    ) -> None:
        self.clock: _periods.Clock = clock or _periods.as_clock(None)
        self.store: BudgetStore = store or InMemoryBudgetStore(clock=self.clock)
        self.default_budget = default_budget
        self.session_refs: dict[str, BudgetRef] = {}
        # Budgets on other attribution keys: {dims: {values: ref}}, so finding the
        # ones a call matches costs one dict lookup per combination of keys in use.
        self.attr: dict[tuple[str, ...], dict[tuple[str, ...], BudgetRef]] = {}
        # Oldest first; an OrderedDict because popping a plain dict's first key again
        # and again walks the holes the earlier pops left (O(n) per eviction).
        self.pending: OrderedDict[str, Reservation] = OrderedDict()
        self.prefix = key_prefix
        self.active = default_budget is not None  # session budgets may apply
        self.on_alerts: AlertHandler | None = None
        self._windows: dict[str, BudgetRef] = {}  # base key -> ref of its current period
        self._tool_refs: dict[tuple[str, str], BudgetRef] = {}  # (base, tool) -> limit ref
        self._refusals: dict[str, tuple[float | None, BudgetRefusal]] = {}  # root base -> last
        self._fired: dict[str, set[tuple[int, float]]] = {}  # period key -> thresholds fired
        self._alert_lock = threading.Lock()
        # A store shared by processes that claims each alert threshold for all of them.
        claim = getattr(self.store, "settle_claiming_alerts", None)
        self._claiming: Callable[..., None] | None = claim if callable(claim) else None

    def _drop(self, key: str) -> None:
        # A shared store (Redis) holds one budget for every process: one process
        # closing its session must not reset what the others spend against.
        if not getattr(self.store, "shared", False):
            self.store.drop(key)

    def update_active(self) -> None:
        """Recompute :attr:`active` after the session, default or attribute budgets changed."""
        self.active = self.default_budget is not None or bool(self.session_refs or self.attr)

    # -- which budgets apply ----------------------------------------------------
    def session_ref(self, session_id: str) -> BudgetRef | None:
        """The session's budget, creating it from the default budget on first use."""
        ref = self.session_refs.get(session_id)
        if ref is None and self.default_budget is not None:
            ref = self.session_refs.setdefault(
                session_id, _ref_for(session_id, self.default_budget)
            )
        return ref

    def refs(
        self,
        scope: Scope | None,
        session_id: str | None,
        customer_id: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        tool: str | None = None,
        tool_call: bool = False,
    ) -> tuple[BudgetRef, ...]:
        """Every budget a call with this attribution counts against (current periods)."""
        refs = scope.budget_refs if scope is not None else ()
        if self.active:
            if session_id is not None:
                ref = self.session_ref(session_id)
                if ref is not None:
                    refs = (*refs, ref) if refs else ref.alone
            if self.attr:
                values = (session_id, customer_id, agent, model, tool)
                for dims, table in self.attr.items():
                    try:
                        look = tuple(values[DIMS.index(d)] for d in dims)
                    except ValueError:  # pragma: no cover - dims are always DIMS members
                        continue
                    if None in look:
                        continue
                    ref = table.get(look)  # type: ignore[arg-type]
                    if ref is not None:
                        refs = (*refs, ref)
        if not refs:
            return refs
        if tool_call and tool is not None:
            limited = tuple(
                self._tool_ref(r, tool)
                for r in refs
                if r.budget.tool_limits and tool in r.budget.tool_limits
            )
            if limited:
                refs = (*refs, *limited)
        for r in refs:
            if r.budget.period is not None:
                now = self.clock()
                return tuple(self._resolve(x, now) for x in refs)
        return refs

    def _tool_ref(self, ref: BudgetRef, tool: str) -> BudgetRef:
        """The ref of ``ref``'s limit on calls of ``tool`` (a key of its own)."""
        base = ref.base or ref.key
        cached = self._tool_refs.get((base, tool))
        if cached is None:
            limit = (ref.budget.tool_limits or {})[tool]
            key = f"{base}/tool:{_esc(tool)}"
            cached = BudgetRef(
                key,
                f"{ref.owner}, tool {tool!r}",
                ref.budget,
                Spend(-1, -1, -1, -1, -1, limit),
                key,
                {**ref.attribution, "tool": tool},
                tool,
                ref.root or base,
            )
            self._tool_refs[(base, tool)] = cached
        return cached

    def _resolve(self, ref: BudgetRef, now: float) -> BudgetRef:
        """``ref`` for the period containing ``now`` (unchanged without a period)."""
        budget = ref.budget
        if budget.period is None:
            return ref
        base = ref.base or ref.key
        cur = self._windows.get(base)
        if cur is not None and cur.period_start <= now < cur.resets_at:  # type: ignore[operator]
            return cur
        start, end, iso = _periods.window(budget.period, budget.timezone, now)
        new = dataclasses.replace(
            ref,
            key=f"{base}|{iso}",
            base=base,
            root=ref.root or base,
            period_start=start,
            resets_at=end,
            expires_at=end + _periods.EXPIRY_MARGIN_S,
        )
        self._windows[base] = new
        if cur is not None:
            with self._alert_lock:
                self._fired.pop(cur.key, None)  # the old period's alerts are done
        return new

    def scope_ref(self, scope: Scope) -> BudgetRef:
        """A budget ref for a scope that has its own budget."""
        assert scope.budget is not None
        key = f"scope:{self.prefix}{scope.uid}"
        return BudgetRef(
            key,
            f"scope {'/'.join(scope.path)!r}",
            scope.budget,
            scope.budget.limits(),
            key,
            {"scope": "/".join(scope.path)},
            None,
            key,
        )

    def scope_status(self, scope: Scope) -> BudgetStatus | None:
        """A scope's own budget against its spend, ``None`` without one."""
        if scope.budget is None or not scope.budget_refs:
            return None
        return self.status(scope.budget_refs[-1])

    def drop_scope(self, scope: Scope) -> None:
        """Forget a finished scope's budget state (its keys, its limit refs, its period)."""
        base = f"scope:{self.prefix}{scope.uid}"
        budget = scope.budget
        bases = [base]
        if budget is not None and budget.tool_limits:
            for tool in budget.tool_limits:
                bases.append(f"{base}/tool:{_esc(tool)}")
                self._tool_refs.pop((base, tool), None)
        for b in bases:
            cur = self._windows.pop(b, None)
            self.store.drop(b if cur is None else cur.key)
            if cur is not None:
                with self._alert_lock:
                    self._fired.pop(cur.key, None)
        self._refusals.pop(base, None)

    # -- setting budgets ---------------------------------------------------------
    def set_budget(
        self,
        attribution: Mapping[str, str],
        budget: Budget | None,
        spent_so_far: Callable[[], Spend] | None = None,
    ) -> None:
        """Attach (or with ``None`` remove) a budget on attribution keys."""
        if set(attribution) == {"session_id"}:
            self.set_session_budget(attribution["session_id"], budget, spent_so_far or _zero)
            return
        dims = tuple(d for d in DIMS if d in attribution)
        values = tuple(attribution[d] for d in dims)
        table = self.attr.get(dims)
        old = table.pop(values, None) if table is not None else None
        if old is not None:
            # Replaced: its spend stays (a raised limit continues from what was used);
            # removed: its keys go.
            self._forget(old) if budget is None else self._uncache(old)
            if not table:
                del self.attr[dims]
        if budget is not None:
            self.attr.setdefault(dims, {})[values] = attr_ref(attribution, budget)
        self.update_active()

    def _uncache(self, ref: BudgetRef) -> list[str]:
        """Forget the refs derived from ``ref`` (its periods, its tool limits); returns
        the store keys they used."""
        base = ref.base or ref.key
        keys = []
        for b in [base, *(f"{base}/tool:{_esc(t)}" for t in ref.budget.tool_limits or ())]:
            cur = self._windows.pop(b, None)
            keys.append(b if cur is None else cur.key)
        for tool in ref.budget.tool_limits or ():
            self._tool_refs.pop((base, tool), None)
        return keys

    def _forget(self, ref: BudgetRef) -> None:
        """A budget was removed: drop its keys (in a private store) and its refusal."""
        for key in self._uncache(ref):
            self._drop(key)
        self._refusals.pop(ref.base or ref.key, None)

    def budget_for(self, attribution: Mapping[str, str]) -> BudgetRef | None:
        """The budget set on exactly these attribution keys, if any."""
        if set(attribution) == {"session_id"}:
            return self.session_refs.get(attribution["session_id"])
        dims = tuple(d for d in DIMS if d in attribution)
        table = self.attr.get(dims)
        return None if table is None else table.get(tuple(attribution[d] for d in dims))

    def attribute_budgets(self) -> list[dict[str, str]]:
        """The attribution of every budget set on keys other than a lone session."""
        return [dict(ref.attribution) for table in self.attr.values() for ref in table.values()]

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
        if old is not None:
            self._forget(old) if budget is None else self._uncache(old)
        if budget is not None:
            ref = _ref_for(session_id, budget)
            cur = self._resolve(ref, self.clock()) if ref.periodic else ref
            if old is None and self.store.usage(cur.key)[0] == ZERO:
                spent = spent_so_far()
                if spent != ZERO:
                    self._settle_key(cur, None, spent)
            self.session_refs[session_id] = ref
        self.update_active()

    def close_session(self, session_id: str) -> None:
        """Drop a closed session's budgets (its own, and those on it and other keys)."""
        ref = self.session_refs.pop(session_id, None)
        if ref is not None:
            self._forget(ref)
        for dims in [d for d in self.attr if "session_id" in d]:
            table = self.attr[dims]
            i = dims.index("session_id")
            for values in [v for v in table if v[i] == session_id]:
                self._forget(table.pop(values))
            if not table:
                del self.attr[dims]
        self.update_active()

    def session_status(self, session_id: str) -> BudgetStatus | None:
        """The session's budget status, or ``None`` without a budget."""
        ref = self.session_refs.get(session_id)
        return None if ref is None else self.status(ref)

    def status(self, ref: BudgetRef) -> BudgetStatus:
        """A budget's limits against its store's used and reserved amounts (this period)."""
        budget = ref.budget
        now = self.clock() if budget.period is not None else 0.0
        cur = self._resolve(ref, now)
        used, reserved = self.store.usage(cur.key)
        extra: dict[str, tuple[int, int, int]] = {}
        for tool, limit in (budget.tool_limits or {}).items():
            t = self._resolve(self._tool_ref(ref, tool), now)
            tu, tr = self.store.usage(t.key)
            extra[f"tool_limits[{tool}]"] = (limit, tu[5], tr[5])
        refused = self._refusals.get(cur.root or cur.key)
        tz = budget.timezone
        return budget_status(
            ref.owner,
            budget,
            used,
            reserved,
            extra,
            period=budget.period_label,
            period_start=_periods.to_datetime(cur.period_start, tz),
            resets_at=_periods.to_datetime(cur.resets_at, tz),
            refused=refused[1] if refused is not None and refused[0] == cur.period_start else None,
        )

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
        store = self.store
        try:
            for ref in refs:
                if ref.expires_at is None:
                    store.reserve(ref.key, ref.owner, ref.limits, request, rid)
                else:
                    store.reserve(
                        ref.key, ref.owner, ref.limits, request, rid, expires_at=ref.expires_at
                    )
                done.append(ref)
        except BudgetExceeded as exc:
            for ref in done:
                store.release(ref.key, rid)
            self._refused(refs[len(done)], exc)
            raise
        except BaseException:
            for ref in done:
                store.release(ref.key, rid)
            raise
        reservation = Reservation(rid, request, refs, release)
        pending = self.pending
        pending[rid] = reservation
        if len(pending) > _PENDING_MAX:
            # Too many never settled: give the oldest back in the store too, so it
            # neither leaks there nor counts against the budget until its TTL.
            try:
                _, old = pending.popitem(last=False)
            except KeyError:  # emptied by other threads meanwhile
                pass
            else:
                for ref in old.refs:
                    store.release(ref.key, old.call_id)
        if unnamed:
            _UNNAMED.set(reservation)
        return reservation

    def _refused(self, ref: BudgetRef, exc: BudgetExceeded) -> None:
        """Remember the refusal: the budget's status reports it for the rest of the period."""
        try:
            limit = exc.limit_name
            if ref.tool is not None:
                limit = f"tool_limits[{ref.tool}]"
            refusal = BudgetRefusal(
                limit=limit,
                requested=exc.requested,
                at=_periods.to_datetime(self.clock()),
                message=str(exc),
            )
            self._refusals[ref.root or ref.base or ref.key] = (ref.period_start, refusal)
        except Exception:  # bookkeeping must not mask the refusal itself
            logger.exception("agentmeter: could not note a budget refusal")

    def release(self, rid: str) -> None:
        """Give back a reservation whose call was not made."""
        res = self.pending.pop(rid, None)
        if res is not None:
            for ref in res.refs:
                self.store.release(ref.key, res.call_id)

    def settle(
        self, scope: Scope | None, key: tuple[Any, ...], call_id: object, spend: Spend
    ) -> None:
        """Count a finished call's spend, replacing its reservation if it had one.

        ``key`` is the recorder's row key of the call (its attribution). Alerts the
        spend set off are delivered after every store operation, outside every lock.
        """
        res = None
        if self.pending:
            if call_id is None:
                unnamed = _UNNAMED.get()
                if unnamed is not None:
                    _UNNAMED.set(None)
                    res = self.pending.pop(unnamed.call_id, None)
            else:
                res = self.pending.pop(str(call_id), None)
        refs = self.refs(scope, key[0], key[7], key[3], key[1], key[4], spend[5] > 0)
        alerts: list[BudgetAlert] | None = None
        if res is None:
            for ref in refs:
                a = self._settle_key(ref, None, spend)
                if a:
                    alerts = a if alerts is None else alerts + a
        else:
            # The booked keys take the spend (even when the period rolled over since
            # the call started); a budget that applies now but was not booked (set
            # while the call was in flight) takes it without a reservation.
            booked = {r.base or r.key for r in res.refs}
            for ref in res.refs:
                a = self._settle_key(ref, res.call_id, spend)
                if a:
                    alerts = a if alerts is None else alerts + a
            for ref in refs:
                if (ref.base or ref.key) not in booked:
                    a = self._settle_key(ref, None, spend)
                    if a:
                        alerts = a if alerts is None else alerts + a
        if alerts and self.on_alerts is not None:
            self.on_alerts(alerts)

    def _settle_key(self, ref: BudgetRef, rid: str | None, spend: Spend) -> list[BudgetAlert]:
        store = self.store
        if ref.budget.alert_at and self._claiming is not None:
            thresholds = self._open_thresholds(ref, spend)
            if thresholds:
                # The shared store decides which process fires each threshold; the
                # alerts arrive later, through _won, from the thread that sent it.
                self._claiming(
                    ref.key,
                    rid,
                    spend,
                    thresholds,
                    functools.partial(self._won, ref),
                    expires_at=ref.expires_at,
                )
                return []
        if ref.expires_at is None:
            used = store.settle(ref.key, rid, spend)
        else:
            used = store.settle(ref.key, rid, spend, expires_at=ref.expires_at)
        if not ref.budget.alert_at or self._claiming is not None:
            return []
        return self._crossed(ref, used, spend)

    def _open_thresholds(self, ref: BudgetRef, spend: Spend) -> list[tuple[str, int]]:
        """``(name, amount)`` of the thresholds this spend may cross that this tracker
        has not seen fire this period (for a store that claims them for everyone)."""
        fired = self._fired.get(ref.key, ())
        out: list[tuple[str, int]] = []
        for i, lim in enumerate(ref.limits):
            if lim < 0 or spend[i] <= 0:
                continue
            for t in ref.budget.alert_at:
                if (i, t) not in fired:
                    # used >= t * lim, for an integer used, is used >= ceil(t * lim).
                    amount = (Decimal(repr(t)) * lim).to_integral_value(rounding=ROUND_CEILING)
                    out.append((f"{i}:{t!r}", int(amount)))
        return out

    def _won(self, ref: BudgetRef, names: list[str], used: Spend) -> None:
        """The shared store says these thresholds were crossed by this tracker's settle."""
        won: list[tuple[int, float]] = []
        for name in names:
            i, _, t = name.partition(":")
            won.append((int(i), float(t)))
        with self._alert_lock:
            fired = self._fired.setdefault(ref.key, set())
            new = [w for w in won if w not in fired]
            fired.update(new)
        if new and self.on_alerts is not None:
            self.on_alerts(self._alerts(ref, new, used))

    def _crossed(self, ref: BudgetRef, used: object, spend: Spend) -> list[BudgetAlert]:
        """Alerts for the thresholds this spend made ``ref`` cross (each once a period)."""
        budget = ref.budget
        limits = ref.limits
        fired = self._fired.get(ref.key)
        n = len(budget.alert_at)
        if fired is not None and len(fired) >= n * sum(1 for x in limits if x >= 0):
            return []  # every threshold of every limit already fired this period
        if not isinstance(used, Spend):
            used = self.store.usage(ref.key)[0]
        assert isinstance(used, Spend)
        out: list[BudgetAlert] = []
        crossed: list[tuple[int, float]] = []
        for i, lim in enumerate(limits):
            if lim < 0 or spend[i] <= 0:
                continue
            u = used[i]
            for t in budget.alert_at:
                if Decimal(u) >= Decimal(repr(t)) * lim:
                    crossed.append((i, t))
        if not crossed:
            return out
        with self._alert_lock:
            fired = self._fired.setdefault(ref.key, set())
            new = [c for c in crossed if c not in fired]
            fired.update(new)
        if not new:
            return out
        return self._alerts(ref, new, used)

    def _alerts(
        self, ref: BudgetRef, new: list[tuple[int, float]], used: Spend
    ) -> list[BudgetAlert]:
        """The :class:`BudgetAlert` of each ``(limit index, threshold)`` in ``new``."""
        budget = ref.budget
        limits = ref.limits
        out: list[BudgetAlert] = []
        now = self.clock()
        tz = budget.timezone
        for i, t in new:
            name = _LIMIT_NAMES[i] if ref.tool is None else f"tool_limits[{ref.tool}]"
            out.append(
                BudgetAlert(
                    owner=ref.owner,
                    key=dict(ref.attribution),
                    limit=name,
                    threshold=t,
                    used=_public(i, used[i]),
                    limit_value=_public(i, limits[i]),
                    period=budget.period_label,
                    period_start=_periods.to_datetime(ref.period_start, tz),
                    resets_at=_periods.to_datetime(ref.resets_at, tz),
                    at=_periods.to_datetime(now),
                )
            )
        return out


def _zero() -> Spend:
    return ZERO


def _ref_for(session_id: str, budget: Budget) -> BudgetRef:
    key = f"session:{session_id}"
    return BudgetRef(
        key,
        f"session {session_id!r}",
        budget,
        budget.limits(),
        key,
        {"session_id": session_id},
        None,
        key,
    )
