"""Budgets: limits on a scope or a session, enforced by reserving before a call.

The protocol is reserve -> call -> settle. :meth:`BudgetStore.reserve` checks
``used + reserved + requested`` against every limit and books the request in one
atomic step, so concurrent callers cannot all pass the check on the same
remaining budget (the check-then-consume race of per-thread registries). After
the call the real spend replaces the reservation (:meth:`BudgetStore.settle`).
A budget can therefore be overshot only by what calls already in flight spend
beyond what they reserved, and a refused call is refused *before* it is made.

Periods reach the store through the key: a budget with a ``period`` counts into a
key that ends in the period's start (``customer:acme|2026-12-01T00:00:00+00:00``),
so a new period is simply a new key, every process computes the same key from its
clock, and the store may forget a key once its period is over (``expires_at``).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Literal, NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from . import _validate
from .errors import BudgetExceeded
from .models import BudgetStatus, micros_to_usd

__all__ = [
    "AlertClaimingStore",
    "AlertsWon",
    "Budget",
    "BudgetStore",
    "InMemoryBudgetStore",
    "Reservation",
    "Spend",
]


class Budget(BaseModel):
    """Limits for a scope, a session, a customer, an agent, a model or a tool.

    ``None`` means unlimited. ``max_tokens`` counts LLM input + output tokens and
    embedding tokens; ``max_cost_usd`` counts priced calls (model calls and priced
    tools; an unpriced call costs nothing here).

    Args:
        period: ``"day"``, ``"week"`` (from Monday) or ``"month"``: usage counts
            within the current calendar period in ``timezone`` and the budget
            renews at its boundary. A :class:`~datetime.timedelta` is a fixed
            window aligned to the Unix epoch (``timedelta(hours=1)`` renews on
            every full UTC hour), the same in every process. ``None``: one budget
            for the whole life of what it is attached to.
        timezone: IANA name (``"Europe/Paris"``) of the calendar periods.
        alert_at: Fractions in (0, 1] of a limit at which a
            :class:`~agentmeter.BudgetAlert` fires (once per threshold, limit and
            period), e.g. ``(0.5, 0.8, 1.0)``.
        tool_limits: ``{tool name: max calls}``: how many times one tool may be
            called within what the budget is attached to (and its period); a call
            over the limit is refused before the tool runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: Decimal | None = None
    max_llm_calls: int | None = None
    max_tool_calls: int | None = None
    period: Literal["day", "week", "month"] | timedelta | None = None
    timezone: str = "UTC"
    alert_at: tuple[float, ...] = ()
    tool_limits: dict[str, int] | None = None

    @field_validator("period", mode="before")
    @classmethod
    def _period(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, str):
            if v not in ("day", "week", "month"):
                raise ValueError(f"period must be 'day', 'week', 'month' or a timedelta, got {v!r}")
            return v
        if isinstance(v, timedelta):
            if v.total_seconds() < 1:
                raise ValueError(f"period must be at least one second, got {v!r}")
            if v.microseconds:
                raise ValueError(f"period must be a whole number of seconds, got {v!r}")
            return v
        raise TypeError(
            f"period must be 'day', 'week', 'month' or a timedelta, got {type(v).__name__}: {v!r}"
        )

    @field_validator("timezone", mode="before")
    @classmethod
    def _timezone(cls, v: object) -> object:
        if not isinstance(v, str):
            raise TypeError(f"timezone must be an IANA name (str), got {type(v).__name__}: {v!r}")
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone must be an IANA time zone name, got {v!r}") from None
        return v

    @field_validator("alert_at", mode="before")
    @classmethod
    def _alert_at(cls, v: object) -> object:
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = (v,)
        if isinstance(v, str | bytes) or not isinstance(v, tuple | list | set | frozenset):
            raise TypeError(
                f"alert_at must be a sequence of fractions in (0, 1], got {type(v).__name__}: {v!r}"
            )
        out: set[float] = set()
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int | float | Decimal):
                raise TypeError(f"alert_at must hold numbers, got {type(x).__name__}: {x!r}")
            f = float(x)
            if not math.isfinite(f) or not 0.0 < f <= 1.0:
                raise ValueError(f"alert_at fractions must be in (0, 1], got {x!r}")
            out.add(f)
        return tuple(sorted(out))

    @field_validator("tool_limits", mode="before")
    @classmethod
    def _tool_limits(cls, v: object) -> object:
        if v is None:
            return v
        if not isinstance(v, Mapping):
            raise TypeError(
                f"tool_limits must be a mapping of tool name to max calls, got {type(v).__name__}"
            )
        out: dict[str, int] = {}
        for k, n in v.items():
            _validate.name("tool_limits key", k, optional=False)
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"tool_limits[{k!r}] must be an int, got {type(n).__name__}")
            if n < 0:
                raise ValueError(f"tool_limits[{k!r}] must be >= 0, got {n}")
            out[k] = n
        return out

    def __hash__(self) -> int:
        # Frozen, so hashable like every other value object -- tool_limits is a dict.
        limits = self.tool_limits
        return hash(
            (
                type(self),
                tuple(v for k, v in self.__dict__.items() if k != "tool_limits"),
                None if limits is None else tuple(sorted(limits.items())),
            )
        )

    @property
    def period_label(self) -> str | None:
        """``"day"`` / ``"week"`` / ``"month"``, ``"<n>s"`` for a window, ``None`` without."""
        p = self.period
        if p is None or isinstance(p, str):
            return p
        return f"{int(p.total_seconds())}s"

    @field_validator(
        "max_tokens",
        "max_input_tokens",
        "max_output_tokens",
        "max_llm_calls",
        "max_tool_calls",
        mode="before",
    )
    @classmethod
    def _int_limit(cls, v: object, info: ValidationInfo) -> object:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{info.field_name} must be an int, got {type(v).__name__}: {v!r}")
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v}")
        return v

    @field_validator("max_cost_usd", mode="before")
    @classmethod
    def _cost_limit(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float | Decimal | str):
            raise TypeError(
                f"max_cost_usd must be a number of dollars, got {type(v).__name__}: {v!r}"
            )
        try:
            d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        except ArithmeticError:  # decimal.InvalidOperation: "abc", ""
            raise ValueError(f"max_cost_usd must be a number of dollars, got {v!r}") from None
        if not d.is_finite() or (d.is_signed() and d != 0):
            raise ValueError(f"max_cost_usd must be a finite number >= 0, got {v!r}")
        if d.as_tuple().exponent < -6:  # type: ignore[operator]
            # Budgets are kept in micro-dollars: a finer limit would be rounded silently.
            d = d.quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
        return d

    def limits(self) -> Spend:
        """The limits as a :class:`Spend` vector; ``-1`` marks an unlimited dimension."""
        cost = self.max_cost_usd
        return Spend(
            -1 if self.max_tokens is None else self.max_tokens,
            -1 if self.max_input_tokens is None else self.max_input_tokens,
            -1 if self.max_output_tokens is None else self.max_output_tokens,
            -1 if cost is None else int((cost * 1_000_000).to_integral_value()),
            -1 if self.max_llm_calls is None else self.max_llm_calls,
            -1 if self.max_tool_calls is None else self.max_tool_calls,
        )


class Spend(NamedTuple):
    """An amount spent or requested, one field per budget dimension (cost in micro-USD)."""

    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    llm_calls: int = 0
    tool_calls: int = 0


_LIMIT_NAMES = (
    "max_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "max_cost_usd",
    "max_llm_calls",
    "max_tool_calls",
)
ZERO = Spend()


def _public(i: int, value: int) -> int | Decimal:
    return micros_to_usd(value) if i == 3 else value


def first_violation(limits: Spend, used: Spend, reserved: Spend, request: Spend) -> int:
    """Index of the first dimension the request would overspend, or -1."""
    for i in range(6):
        lim = limits[i]
        req = request[i]
        if lim >= 0 and req > 0 and used[i] + reserved[i] + req > lim:
            return i
    return -1


def exceeded(
    owner: str, i: int, limits: Spend, used: Spend, reserved: Spend, request: Spend
) -> BudgetExceeded:
    """The exception for dimension ``i``, with public units (dollars for cost)."""
    return BudgetExceeded(
        owner,
        _LIMIT_NAMES[i],
        _public(i, limits[i]),
        _public(i, used[i]),
        _public(i, reserved[i]),
        _public(i, request[i]),
    )


def status(
    owner: str,
    budget: Budget,
    used: Spend,
    reserved: Spend,
    extra: Mapping[str, tuple[int, int, int]] | None = None,
    **period: object,
) -> BudgetStatus:
    """A :class:`BudgetStatus` for the limits the budget sets.

    ``extra`` adds limits kept under other keys (the per-tool limits:
    ``{"tool_limits[search]": (limit, used, reserved)}``); ``period`` passes the
    period fields (``period``, ``period_start``, ``resets_at``, ``refused``).
    """
    limits = budget.limits()
    lim: dict[str, int | Decimal] = {}
    u: dict[str, int | Decimal] = {}
    r: dict[str, int | Decimal] = {}
    for i, name in enumerate(_LIMIT_NAMES):
        if limits[i] >= 0:
            lim[name] = _public(i, limits[i])
            u[name] = _public(i, used[i])
            r[name] = _public(i, reserved[i])
    for name, (a, b, c) in (extra or {}).items():
        lim[name], u[name], r[name] = a, b, c
    return BudgetStatus(owner=owner, limits=lim, used=u, reserved=r, **period)


@runtime_checkable
class BudgetStore(Protocol):
    """Where budget state (used and reserved amounts) lives.

    The in-memory store serves one process; a shared store (Redis) lets several
    processes spend against one budget. Keys are opaque strings such as
    ``"session:s1"`` or, for a budget with a period, ``"customer:acme|<period
    start, ISO 8601>"``. Every method must be atomic per key.

    ``expires_at`` (Unix seconds, or ``None`` for never) tells the store when it may
    forget a key entirely: the end of the key's period plus a margin. The tracker
    passes it only for budgets with a period, so a store written before periods
    existed keeps working for the others. ``settle`` may return the key's used
    amounts after settling (alerts then need no second round trip); ``None`` makes
    the tracker read them with :meth:`usage` when an alert may be due.
    """

    def reserve(
        self,
        key: str,
        owner: str,
        limits: Spend,
        request: Spend,
        reservation_id: str,
        *,
        expires_at: float | None = None,
    ) -> None:
        """Book ``request`` if it fits every limit, else raise :class:`BudgetExceeded`."""

    def settle(
        self,
        key: str,
        reservation_id: str | None,
        actual: Spend,
        *,
        expires_at: float | None = None,
    ) -> Spend | None:
        """Replace a reservation (or nothing) with the spend that really happened."""

    def release(self, key: str, reservation_id: str) -> None:
        """Drop a reservation whose call was never made."""

    def usage(self, key: str) -> tuple[Spend, Spend]:
        """``(used, reserved)`` for a key."""

    def drop(self, key: str) -> None:
        """Forget a key (its scope ended or its session closed)."""


AlertsWon = Callable[[list[str], Spend], object]
"""``deliver(won, used)``: the alert thresholds a settle won (``"<limit>:<fraction>"``
names) and the budget key's used amounts after it; see :class:`AlertClaimingStore`."""


@runtime_checkable
class AlertClaimingStore(Protocol):
    """A :class:`BudgetStore` shared by many processes that decides, for all of them,
    which settle fires an alert threshold.

    A tracker on such a store fires each ``alert_at`` threshold once per period for
    every process sharing the key, not once per process. Without this method (the
    in-memory store, a store of your own) the tracker fires a threshold once per
    period per tracker, from the used amounts ``settle`` answers.
    """

    def settle_claiming_alerts(
        self,
        key: str,
        reservation_id: str | None,
        actual: Spend,
        thresholds: Sequence[tuple[str, int]],
        deliver: AlertsWon,
        *,
        expires_at: float | None = None,
    ) -> None:
        """Settle like :meth:`BudgetStore.settle`; claim, atomically with it, each of
        ``thresholds`` (``(name, used amount at which it fires)``) the key's used
        amount reached and no settle claimed before; then call ``deliver(won, used)``
        once, outside every lock, if it won any."""


class _KeyState:
    __slots__ = ("check_at", "expires_at", "reservations", "reserved", "used")

    def __init__(self) -> None:
        self.used = ZERO
        self.reserved = ZERO
        # Oldest first: expiry pops from the front and stops at the first live one,
        # so a reserve never walks the reservations still in flight.
        self.reservations: OrderedDict[str, tuple[Spend, int]] = OrderedDict()
        self.expires_at: float | None = None
        # No reservation can be stale before this moment: reserve skips expiry until then.
        self.check_at = 0.0


def _add(a: Spend, b: Spend) -> Spend:
    return Spend(a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])


def _sub(a: Spend, b: Spend) -> Spend:
    return Spend(a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], a[5] - b[5])


class InMemoryBudgetStore:
    """The default :class:`BudgetStore`: a dict under one lock, for one process.

    Every operation is O(1) in the number of reservations outstanding (expiry
    touches only the stale ones) and O(log n) in the number of keys with an
    ``expires_at``.

    Args:
        reservation_ttl_s: A reservation not settled or released within this many
            seconds (its caller died, or a stream was never closed) stops counting.
        clock: Unix seconds now (default :func:`time.time`); the tracker passes its
            own clock to the store it creates, so tests drive expiry with it.
    """

    def __init__(
        self, reservation_ttl_s: float = 600.0, clock: Callable[[], float] | None = None
    ) -> None:
        if isinstance(reservation_ttl_s, bool) or not isinstance(reservation_ttl_s, int | float):
            raise TypeError("reservation_ttl_s must be a number of seconds")
        if not reservation_ttl_s > 0:
            raise ValueError(f"reservation_ttl_s must be > 0, got {reservation_ttl_s!r}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning Unix seconds")
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._ttl = float(reservation_ttl_s)
        self._clock: Callable[[], float] = clock or time.time
        self._expiring: list[tuple[float, str]] = []  # heap of (expires_at, key)
        # Reservations keep their booking time in ticks of 1/64 of the TTL (at most a
        # second); the int object of the current tick is shared by all of them (a float
        # each would be 24 bytes).
        self._tick_s = min(1.0, self._ttl / 64)
        self._tick = 0

    def _state(self, key: str, now: float, expires_at: float | None) -> _KeyState:
        if self._expiring and self._expiring[0][0] <= now:
            self._forget_expired(now)
        st = self._keys.get(key)
        if st is None:
            st = self._keys[key] = _KeyState()
        if expires_at is not None and (st.expires_at is None or expires_at > st.expires_at):
            st.expires_at = expires_at
            heapq.heappush(self._expiring, (expires_at, key))
        return st

    def _forget_expired(self, now: float) -> None:
        heap = self._expiring
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            st = self._keys.get(key)
            if st is not None and st.expires_at == at:  # not extended since
                del self._keys[key]

    def reserve(
        self,
        key: str,
        owner: str,
        limits: Spend,
        request: Spend,
        reservation_id: str,
        *,
        expires_at: float | None = None,
    ) -> None:
        now = self._clock()
        with self._lock:
            st = self._state(key, now, expires_at)
            res = st.reservations
            if res and now >= st.check_at:
                self._expire(st, now)
            # The same call reserving again (two handlers seeing one run) replaces its
            # own booking: it is checked against what the *other* calls reserved.
            old = res.get(reservation_id)
            others = st.reserved if old is None else _sub(st.reserved, old[0])
            i = first_violation(limits, st.used, others, request)
            if i >= 0:
                used, reserved = st.used, others
            else:
                if old is not None:
                    del res[reservation_id]  # re-booked: it moves to the young end
                tick = int(now / self._tick_s)
                if tick != self._tick:
                    self._tick = tick
                res[reservation_id] = (request, self._tick)
                st.reserved = _add(others, request)
                return
        raise exceeded(owner, i, limits, used, reserved, request)

    def _expire(self, st: _KeyState, now: float) -> None:
        res = st.reservations
        # Booking ticks are floored: one tick of slack, so none expires early.
        cutoff = (now - self._ttl) / self._tick_s - 1.0
        while res:
            rid, (req, t) = next(iter(res.items()))
            if t >= cutoff:
                # The oldest live one: nothing can go stale before it does.
                st.check_at = (t + 1) * self._tick_s + self._ttl
                return
            del res[rid]
            st.reserved = _sub(st.reserved, req)
        st.check_at = 0.0

    def settle(
        self,
        key: str,
        reservation_id: str | None,
        actual: Spend,
        *,
        expires_at: float | None = None,
    ) -> Spend:
        now = self._clock()
        with self._lock:
            st = self._state(key, now, expires_at)
            if reservation_id is not None:
                booked = st.reservations.pop(reservation_id, None)
                if booked is not None:
                    st.reserved = _sub(st.reserved, booked[0])
            st.used = used = _add(st.used, actual)
        return used

    def release(self, key: str, reservation_id: str) -> None:
        with self._lock:
            st = self._keys.get(key)
            if st is None:
                return
            booked = st.reservations.pop(reservation_id, None)
            if booked is not None:
                st.reserved = _sub(st.reserved, booked[0])

    def usage(self, key: str) -> tuple[Spend, Spend]:
        now = self._clock()
        with self._lock:
            st = self._keys.get(key)
            if st is None:
                return (ZERO, ZERO)
            if st.expires_at is not None and st.expires_at <= now:
                return (ZERO, ZERO)
            if st.reservations:
                self._expire(st, now)
            return (st.used, st.reserved)

    def outstanding(self, key: str) -> int:
        """How many reservations of ``key`` are booked and not yet expired (for tests)."""
        with self._lock:
            st = self._keys.get(key)
            return 0 if st is None else len(st.reservations)

    def drop(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)


@dataclass(frozen=True, slots=True, eq=False)
class BudgetRef:
    """A budget attached to something: its store key, owner label and limits.

    A budget with a period has one ref per period: ``key`` is ``base`` plus the
    period's start, ``period_start`` / ``resets_at`` / ``expires_at`` are Unix
    seconds. A per-tool limit is a ref of its own (``tool`` set, ``root`` the key of
    the budget it belongs to).
    """

    key: str
    owner: str
    budget: Budget
    limits: Spend
    base: str = ""
    attribution: Mapping[str, str] = field(default_factory=dict)
    tool: str | None = None
    root: str = ""
    period_start: float | None = None
    resets_at: float | None = None
    expires_at: float | None = None
    alone: tuple[BudgetRef, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        # The one-ref tuple a call with only this budget books, built once, not per call.
        object.__setattr__(self, "alone", (self,))

    @property
    def periodic(self) -> bool:
        """True when the budget renews (its key changes with the period)."""
        return self.budget.period is not None


@dataclass(slots=True)
class Reservation:
    """What :func:`~agentmeter.check_budget` booked for one upcoming call.

    Recording the call with the same ``call_id`` settles it; :meth:`release` gives it
    back when the call is not made after all.
    """

    call_id: str
    request: Spend
    refs: tuple[BudgetRef, ...]
    _release: object = None

    def release(self) -> None:
        """Give the reserved amounts back (the call was not made)."""
        fn = self._release
        if callable(fn):
            fn(self.call_id)
