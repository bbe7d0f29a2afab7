"""Budgets: limits on a scope or a session, enforced by reserving before a call.

The protocol is reserve -> call -> settle. :meth:`BudgetStore.reserve` checks
``used + reserved + requested`` against every limit and books the request in one
atomic step, so concurrent callers cannot all pass the check on the same
remaining budget (the check-then-consume race of per-thread registries). After
the call the real spend replaces the reservation (:meth:`BudgetStore.settle`).
A budget can therefore be overshot only by what calls already in flight spend
beyond what they reserved, and a refused call is refused *before* it is made.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from .errors import BudgetExceeded
from .models import BudgetStatus, micros_to_usd

__all__ = ["Budget", "BudgetStore", "InMemoryBudgetStore", "Reservation", "Spend"]


class Budget(BaseModel):
    """Limits for a scope or a session. ``None`` means unlimited.

    ``max_tokens`` counts LLM input + output tokens and embedding tokens;
    ``max_cost_usd`` counts priced calls only (an unpriced call costs nothing here).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: Decimal | None = None
    max_llm_calls: int | None = None
    max_tool_calls: int | None = None

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


def status(owner: str, budget: Budget, used: Spend, reserved: Spend) -> BudgetStatus:
    """A :class:`BudgetStatus` for the limits the budget sets."""
    limits = budget.limits()
    lim: dict[str, int | Decimal] = {}
    u: dict[str, int | Decimal] = {}
    r: dict[str, int | Decimal] = {}
    for i, name in enumerate(_LIMIT_NAMES):
        if limits[i] >= 0:
            lim[name] = _public(i, limits[i])
            u[name] = _public(i, used[i])
            r[name] = _public(i, reserved[i])
    return BudgetStatus(owner=owner, limits=lim, used=u, reserved=r)


@runtime_checkable
class BudgetStore(Protocol):
    """Where budget state (used and reserved amounts) lives.

    The in-memory store serves one process; a shared store (Redis) lets several
    processes spend against one budget. Keys are opaque strings such as
    ``"session:s1"``. Every method must be atomic per key.
    """

    def reserve(
        self, key: str, owner: str, limits: Spend, request: Spend, reservation_id: str
    ) -> None:
        """Book ``request`` if it fits every limit, else raise :class:`BudgetExceeded`."""

    def settle(self, key: str, reservation_id: str | None, actual: Spend) -> None:
        """Replace a reservation (or nothing) with the spend that really happened."""

    def release(self, key: str, reservation_id: str) -> None:
        """Drop a reservation whose call was never made."""

    def usage(self, key: str) -> tuple[Spend, Spend]:
        """``(used, reserved)`` for a key."""

    def drop(self, key: str) -> None:
        """Forget a key (its scope ended or its session closed)."""


class _KeyState:
    __slots__ = ("reservations", "reserved", "used")

    def __init__(self) -> None:
        self.used = ZERO
        self.reserved = ZERO
        self.reservations: dict[str, tuple[Spend, float]] = {}


def _add(a: Spend, b: Spend) -> Spend:
    return Spend(a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])


def _sub(a: Spend, b: Spend) -> Spend:
    return Spend(a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4], a[5] - b[5])


class InMemoryBudgetStore:
    """The default :class:`BudgetStore`: a dict under one lock, for one process.

    Args:
        reservation_ttl_s: A reservation not settled or released within this many
            seconds (its caller died, or a stream was never closed) stops counting.
    """

    def __init__(self, reservation_ttl_s: float = 600.0) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._ttl = reservation_ttl_s

    def reserve(
        self, key: str, owner: str, limits: Spend, request: Spend, reservation_id: str
    ) -> None:
        now = time.monotonic()
        with self._lock:
            st = self._keys.get(key)
            if st is None:
                st = self._keys[key] = _KeyState()
            if st.reservations:
                self._expire(st, now)
            # The same call reserving again (two handlers seeing one run) replaces its
            # own booking: it is checked against what the *other* calls reserved.
            old = st.reservations.get(reservation_id)
            others = st.reserved if old is None else _sub(st.reserved, old[0])
            i = first_violation(limits, st.used, others, request)
            if i >= 0:
                used, reserved = st.used, others
            else:
                st.reservations[reservation_id] = (request, now)
                st.reserved = _add(others, request)
                return
        raise exceeded(owner, i, limits, used, reserved, request)

    def _expire(self, st: _KeyState, now: float) -> None:
        stale = [rid for rid, (_, t) in st.reservations.items() if now - t > self._ttl]
        for rid in stale:
            req, _ = st.reservations.pop(rid)
            st.reserved = _sub(st.reserved, req)

    def settle(self, key: str, reservation_id: str | None, actual: Spend) -> None:
        with self._lock:
            st = self._keys.get(key)
            if st is None:
                st = self._keys[key] = _KeyState()
            if reservation_id is not None:
                booked = st.reservations.pop(reservation_id, None)
                if booked is not None:
                    st.reserved = _sub(st.reserved, booked[0])
            st.used = _add(st.used, actual)

    def release(self, key: str, reservation_id: str) -> None:
        with self._lock:
            st = self._keys.get(key)
            if st is None:
                return
            booked = st.reservations.pop(reservation_id, None)
            if booked is not None:
                st.reserved = _sub(st.reserved, booked[0])

    def usage(self, key: str) -> tuple[Spend, Spend]:
        with self._lock:
            st = self._keys.get(key)
            return (ZERO, ZERO) if st is None else (st.used, st.reserved)

    def drop(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)


@dataclass(frozen=True, slots=True)
class BudgetRef:
    """A budget attached to something: its store key, owner label and limits."""

    key: str
    owner: str
    budget: Budget
    limits: Spend


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
