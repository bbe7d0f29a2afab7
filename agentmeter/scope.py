"""Scopes: nested attribution regions kept on a ``ContextVar`` stack.

The stack is an immutable tuple, so each thread and each asyncio task sees its
own (a task copies its creator's context and so records into the scopes that
were open when it was created). A scope only holds its own counter row; the
tracker adds each record to the innermost scope and, when it folds its log,
to every enclosing scope of the same tracker, so a parent sees its children's
totals without any per-record walk up the stack.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import time
from collections.abc import Callable
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from . import _render
from ._guard import swallow

if TYPE_CHECKING:
    from .budget import Budget, BudgetRef
    from .models import BudgetStatus, Usage
    from .tracker import Tracker

__all__ = ["Scope", "register_call_id_provider", "run_in_context"]

P = ParamSpec("P")
R = TypeVar("R")

STACK: contextvars.ContextVar[tuple[Scope, ...]] = contextvars.ContextVar(
    "agentmeter_scopes", default=()
)
_uids = itertools.count(1)
# The row-key cache of a scope nothing has recorded into yet: read-only (a record
# that caches a key gives the scope a dict of its own first).
NO_KEYS: dict[Any, Any] = cast(dict[Any, Any], MappingProxyType({}))
_now = time.time  # bound once: enter and exit run on every @metered call

# Functions that return the id of the framework call (e.g. a LangChain tool run)
# the current code runs inside. Integrations register one so that a decorated tool
# and the framework's own tool callback record the same call id, and count once.
_CALL_ID_PROVIDERS: list[Callable[[], object | None]] = []


def register_call_id_provider(provider: Callable[[], object | None]) -> None:
    """Let an integration tell decorators which framework call is running (idempotent)."""
    if provider not in _CALL_ID_PROVIDERS:
        _CALL_ID_PROVIDERS.append(provider)


def unregister_call_id_provider(provider: Callable[[], object | None]) -> None:
    """Undo :func:`register_call_id_provider`."""
    if provider in _CALL_ID_PROVIDERS:
        _CALL_ID_PROVIDERS.remove(provider)


def ambient_call_id() -> str | None:
    """The framework call id the current code runs inside, if an integration knows it."""
    for provider in _CALL_ID_PROVIDERS:
        try:
            value = provider()
        except Exception:
            continue
        if value is not None:
            return str(value)
    return None


def innermost(tracker: Tracker, stack: tuple[Scope, ...]) -> Scope | None:
    """The innermost open scope of ``tracker`` on ``stack``."""
    for scope in reversed(stack):
        if scope.tracker is tracker:
            return scope
    return None


class Scope:
    """An attribution region: everything recorded inside it is added to its usage.

    Create scopes with :func:`agentmeter.meter` (or ``tracker.meter``); use them as
    ``with`` or ``async with`` blocks. Nested scopes inherit ``session_id``,
    ``agent_id``, ``customer_id``, ``tags`` (merged key by key) and the tool of an
    enclosing ``@metered_tool`` unless they set their own. A scope can be entered once.

    Attributes:
        name: The scope's name.
        path: Names from the outermost enclosing scope of the same tracker to this one.
        session_id: Effective session (own or inherited).
        agent_id: Effective agent (own or inherited).
        customer_id: Effective customer (own or inherited).
        tags: Effective tags: the enclosing scopes' merged with this scope's own.
        budget: This scope's own budget, if any.
        error: Name of the exception type that left the scope, if one did.
    """

    __slots__ = (
        "__weakref__",
        "_agent_id",
        "_customer_id",
        "_final_budget",
        "_session_id",
        "_token",
        "budget",
        "budget_refs",
        "category",
        "ended_at",
        "error",
        "metadata",
        "name",
        "parent",
        "path",
        "row",
        "row_keys",
        "started_at",
        "tags",
        "tool",
        "tracker",
        "uid",
    )

    def __init__(
        self,
        tracker: Tracker,
        name: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        budget: Budget | None = None,
        metadata: dict[str, Any] | None = None,
        tool: str | None = None,
        category: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        # Every parameter is positional-or-keyword: @metered builds one Scope per
        # call from a partial of positionals, and CPython binds keyword-only
        # parameters by dictionary lookups (see agentmeter._signature).
        self.tracker = tracker
        self.name = name
        self._session_id = session_id
        self._agent_id = agent_id
        self._customer_id = customer_id
        self.tags = tags
        self.budget = budget
        self.metadata = metadata
        self.tool = tool
        self.category = category
        self.parent: Scope | None = None
        self.path: tuple[str, ...] = (name,)
        self.budget_refs: tuple[BudgetRef, ...] = ()
        # The counter row and the row-key cache are made by the first record (most
        # @metered scopes of a tool or a helper record nothing: two allocations less).
        self.row: list[Any] | None = None
        self._token: contextvars.Token[tuple[Scope, ...]] | None = None
        self.uid = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error: str | None = None
        self._final_budget: BudgetStatus | None = None
        # Row keys of records made in this scope, by model or (model, session, provider)
        # (see Tracker.record_llm); the shared read-only NO_KEYS until one is cached.
        self.row_keys: dict[Any, Any] = NO_KEYS

    # -- entering and leaving -------------------------------------------------
    def enter(self) -> Scope:
        """Enter the scope in the current context (``with`` does this); returns it."""
        if self.started_at is not None:
            raise RuntimeError(f"scope {self.name!r} was already entered; create a new one")
        stack = STACK.get()
        parent = innermost(self.tracker, stack) if stack else None
        if parent is not None:
            self.parent = parent
            self.path = (*parent.path, self.name)
            if self._session_id is None:
                self._session_id = parent.session_id
            if self._agent_id is None:
                self._agent_id = parent.agent_id
            if self._customer_id is None:
                self._customer_id = parent.customer_id
            if parent.tags:
                # A child's own tags win over inherited ones of the same key.
                self.tags = {**parent.tags, **self.tags} if self.tags else parent.tags
            if self.tool is None:
                self.tool = parent.tool
                self.category = parent.category
            self.budget_refs = parent.budget_refs
        if self.budget is not None:
            self.uid = next(_uids)  # names the scope's budget keys: only a budget needs one
            self.budget_refs = (*self.budget_refs, self.tracker.ledger.scope_ref(self))
        self.started_at = _now()
        self._token = STACK.set((*stack, self))
        if self.tracker.events.scope_sinks:
            self._notify("scope_started")
        return self

    def enter_detached(self) -> tuple[Scope, ...]:
        """Enter the scope without leaving it on the current stack.

        Returns the stack that holds it: generators run each of their steps under
        it (see :mod:`agentmeter.decorators`), so the consumer's code between two
        ``yield`` s does not record into the generator's scope. End with :meth:`exit`.
        """
        self.enter()
        stack = STACK.get()
        token, self._token = self._token, None
        if token is not None:
            STACK.reset(token)
        return stack

    def exit(self, exc: BaseException | None = None) -> None:
        """Leave the scope (``with`` does this); ``exc`` is the exception leaving it, if any."""
        if exc is not None and self.error is None:
            self.error = type(exc).__name__
        token = self._token
        self._token = None
        self.ended_at = _now()
        if token is not None:
            try:
                STACK.reset(token)
            except ValueError:
                # Left in another context than it was entered in (e.g. an async
                # generator finalised elsewhere): remove just this scope.
                STACK.set(tuple(s for s in STACK.get() if s is not self))
        if self.budget is not None:
            ledger = self.tracker.ledger
            self._final_budget = ledger.scope_status(self)
            ledger.drop_scope(self)
        if self.tracker.events.scope_sinks:
            self._notify("scope_ended")

    def _notify(self, method: str) -> None:
        """Tell the sinks that follow scopes (e.g. for spans) that this one started / ended."""
        for sink in self.tracker.events.scope_sinks:
            try:
                getattr(sink, method)(self)
            except Exception as exc:
                swallow(exc, f"sink {sink!r}.{method}")

    def __enter__(self) -> Scope:
        return self.enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exit(exc)

    async def __aenter__(self) -> Scope:
        return self.enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exit(exc)

    # -- attribution -------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        """Effective session: the scope's own, else inherited from the enclosing scope."""
        return self._session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        # Records made from now on go to the new session: forget the cached row keys.
        self._session_id = value
        self.row_keys = NO_KEYS

    @property
    def agent_id(self) -> str | None:
        """Effective agent: the scope's own, else inherited (e.g. changed on a hand-off)."""
        return self._agent_id

    @agent_id.setter
    def agent_id(self, value: str | None) -> None:
        self._agent_id = value
        self.row_keys = NO_KEYS

    @property
    def customer_id(self) -> str | None:
        """Effective customer (the party billed): own, else inherited from the enclosing scope."""
        return self._customer_id

    @customer_id.setter
    def customer_id(self, value: str | None) -> None:
        self._customer_id = value
        self.row_keys = NO_KEYS

    # -- reading -----------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        """Inclusive totals of everything recorded inside this scope (and its children)."""
        return self.tracker.scope_usage(self)

    @property
    def budget_status(self) -> BudgetStatus | None:
        """This scope's own budget against its spend (final once left), ``None`` without one."""
        if self._final_budget is not None:
            return self._final_budget
        return self.tracker.ledger.scope_status(self)

    @property
    def active(self) -> bool:
        """True between entering and leaving."""
        return self._token is not None

    @property
    def duration_ms(self) -> float | None:
        """Wall-clock time spent inside, once left (or so far, while open)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return (end - self.started_at) * 1000.0

    def __repr__(self) -> str:
        return (
            f"<Scope {'/'.join(self.path)!r} session={self.session_id!r} "
            f"agent={self.agent_id!r} customer={self.customer_id!r} active={self.active}>"
        )

    def __str__(self) -> str:
        return _render.text("scope_text", self)

    def _repr_html_(self) -> str:
        return _render.text("scope_html", self)


def run_in_context(func: Callable[P, R]) -> Callable[P, R]:
    """Bind ``func`` to the caller's current scopes, for use in another thread.

    Threads do not inherit ``contextvars``: a thread started inside ``meter()``
    records outside it. Wrap the thread's target (or what you submit to an
    executor) to keep the attribution::

        with agentmeter.meter("batch", session_id="s1"):
            pool.submit(agentmeter.run_in_context(work), item)

    Each call runs in its own copy of the captured context, so one wrapper can be
    called from several threads at once.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(func)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(func, *args, **kwargs)

    return bound
