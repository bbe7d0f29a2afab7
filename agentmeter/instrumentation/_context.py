"""Attribution captured at one point and attached at another.

Frameworks fire a call's start and end callbacks in places agentmeter does not
choose: another thread (a callback pool), another asyncio task, after the
caller's ``with meter(...)`` block has been left. An :class:`Attribution` is
what was in force when the call started -- the tracker, the scope stack of the
caller's context, and any explicit session / agent / customer / tool / tags --
and :func:`attached` puts it back around the code that records the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple, ParamSpec, TypeVar

from .. import _default_tracker, _validate
from ..scope import STACK, Scope, innermost

if TYPE_CHECKING:
    from ..tracker import Tracker

__all__ = ["Attribution", "attached", "capture", "run_attached"]

P = ParamSpec("P")
R = TypeVar("R")


class Attribution(NamedTuple):
    """Who a call is billed to, captured when it started (an immutable tuple).

    Attributes:
        tracker: The tracker the call is recorded into.
        stack: The scope stack of the context the call started in (every scope on
            it receives the call).
        session_id: Explicit session (``None``: the innermost scope's).
        agent_id: Explicit agent (``None``: the innermost scope's).
        customer_id: Explicit customer (``None``: the innermost scope's).
        tool: Explicit tool to credit (``None``: the enclosing tool's, if any).
        tags: Explicit tags, merged over the scopes' tags.
    """

    tracker: Tracker
    stack: tuple[Scope, ...]
    session_id: str | None = None
    agent_id: str | None = None
    customer_id: str | None = None
    tool: str | None = None
    tags: dict[str, str] | None = None

    @property
    def scope(self) -> Scope | None:
        """The innermost scope of :attr:`tracker` on the captured stack."""
        return innermost(self.tracker, self.stack) if self.stack else None

    @property
    def effective_session_id(self) -> str | None:
        """The session the call is billed to: explicit, else the innermost scope's."""
        if self.session_id is not None:
            return self.session_id
        scope = self.scope
        return scope.session_id if scope is not None else None

    def replace(self, **changes: object) -> Attribution:
        """A copy with some fields changed (``attribution.replace(session_id="s2")``)."""
        return self._replace(**changes)  # type: ignore[arg-type]

    @property
    def budgeted(self) -> bool:
        """Whether a budget may apply to a call made here (decided without building one)."""
        if self.tracker.ledger.active:
            return True
        scope = self.scope
        return scope is not None and bool(scope.budget_refs)

    @property
    def tools_budgeted(self) -> bool:
        """Whether a budget may limit a *tool* called here (not for the hot path).

        True when a budget that applies here limits tool calls (``max_tool_calls``,
        ``tool_limits``), when some budget is set on a tool (``set_budget(tool=...)``),
        or when a cost budget applies while some tool has a price. An integration
        that cannot see a framework's tool runs asks this to say so, loudly, only
        when it matters.
        """
        tracker = self.tracker
        ledger = tracker.ledger
        if not ledger.active and not self.stack:
            return False
        if any("tool" in dims for dims in ledger.attr):
            return True
        scope = self.scope
        session, agent, customer = self.session_id, self.agent_id, self.customer_id
        if scope is not None:
            session = session or scope.session_id
            agent = agent or scope.agent_id
            customer = customer or scope.customer_id
        priced = tracker.prices.has_tool_prices
        for ref in ledger.refs(scope, session, customer, agent):
            b = ref.budget
            if b.max_tool_calls is not None or b.tool_limits:
                return True
            if priced and b.max_cost_usd is not None:
                return True
        return False


def _plain(value: object) -> bool:
    """``value`` is ``None`` or a non-empty ASCII str: valid without further checks."""
    return value is None or (type(value) is str and value.isascii() and bool(value))


def capture(
    tracker: Tracker | None = None,
    *,
    session_id: str | None = None,
    agent_id: str | None = None,
    customer_id: str | None = None,
    tool: str | None = None,
    tags: dict[str, str] | None = None,
) -> Attribution:
    """Capture the attribution in force here (call it in the framework's start callback).

    Args:
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        session_id: Explicit session; ``None`` leaves it to the enclosing scope.
        agent_id: Explicit agent.
        customer_id: Explicit customer.
        tool: Explicit tool to credit.
        tags: Explicit ``{str: str}`` tags.

    Raises:
        TypeError, ValueError: on bad arguments (naming the argument).
    """
    return capture_now(tracker, session_id, agent_id, customer_id, tool, tags)


_new_tuple = tuple.__new__


def capture_now(
    tracker: Tracker | None,
    session_id: str | None,
    agent_id: str | None,
    customer_id: str | None,
    tool: str | None,
    tags: dict[str, str] | None,
) -> Attribution:
    """:func:`capture` with positional arguments (the calls in flight start through it)."""
    if tracker is None or tracker.__class__ not in _TRACKER_TYPES:
        tracker = resolve_tracker(tracker)
    # A non-empty ASCII str (or None) is valid as it is; anything else is checked.
    if not (
        (
            session_id is None
            or (session_id.__class__ is str and session_id.isascii() and session_id)
        )
        and (agent_id is None or (agent_id.__class__ is str and agent_id.isascii() and agent_id))
        and (
            customer_id is None
            or (customer_id.__class__ is str and customer_id.isascii() and customer_id)
        )
        and (tool is None or (tool.__class__ is str and tool.isascii() and tool))
    ):
        _validate.names(
            session_id=session_id, agent_id=agent_id, customer_id=customer_id, tool=tool
        )
    if tags is not None:
        tags = _validate.tags(tags)
    attribution: Attribution = _new_tuple(
        Attribution, (tracker, STACK.get(), session_id, agent_id, customer_id, tool, tags)
    )
    return attribution


def checked(attribution: Attribution) -> Attribution:
    """An attribution given by the caller, checked as :func:`capture` checks its arguments
    (one built by hand or by ``replace()`` may hold anything)."""
    if not isinstance(attribution, Attribution):
        raise TypeError(f"attribution must be an Attribution, got {type(attribution).__name__}")
    tracker, stack, session_id, agent_id, customer_id, tool, tags = attribution
    if tracker.__class__ not in _TRACKER_TYPES:
        resolve_tracker(tracker)
    if stack.__class__ is not tuple:
        raise TypeError(f"attribution.stack must be a tuple of scopes, got {type(stack).__name__}")
    if not (_plain(session_id) and _plain(agent_id) and _plain(customer_id) and _plain(tool)):
        _validate.names(
            session_id=session_id, agent_id=agent_id, customer_id=customer_id, tool=tool
        )
    if tags is not None:
        valid = _validate.tags(tags)
        if valid is not tags:
            attribution = attribution._replace(tags=valid)
    return attribution


@contextlib.contextmanager
def attached(attribution: Attribution) -> Iterator[Attribution]:
    """Run the ``with`` block with ``attribution``'s scopes as the current ones.

    Records made inside go to the captured scopes (and their session, agent and
    customer), whichever thread or task runs the block.
    """
    if not isinstance(attribution, Attribution):
        raise TypeError(f"attribution must be an Attribution, got {type(attribution).__name__}")
    token = STACK.set(attribution.stack)
    try:
        yield attribution
    finally:
        try:
            STACK.reset(token)
        except ValueError:  # left in another context than entered (async generators)
            STACK.set(())


def run_attached(
    attribution: Attribution, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Call ``func(*args, **kwargs)`` with ``attribution`` attached (see :func:`attached`)."""
    with attached(attribution):
        return func(*args, **kwargs)


def resolve_tracker(tracker: Tracker | None) -> Tracker:
    """``tracker``, or the default one; a ``TypeError`` for anything but a tracker."""
    if tracker is None:
        return _default_tracker.get()
    if tracker.__class__ in _TRACKER_TYPES:
        return tracker
    # Duck-typed: this layer sits below the tracker module and must not import it.
    if not callable(getattr(tracker, "record_llm", None)) or not hasattr(tracker, "ledger"):
        raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
    _TRACKER_TYPES.add(tracker.__class__)
    return tracker


# Classes already seen to be trackers (Tracker and its subclasses): checked once.
_TRACKER_TYPES: set[type] = set()
