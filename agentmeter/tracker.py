"""The Tracker: the public face over a recorder, an event bus and a budget ledger.

A ``Tracker`` owns three parts and adds only argument checks and attribution:

- :class:`~agentmeter._recorder.Recorder` -- the counters, and the lock-free path
  of a record into them (its module docstring tells that path);
- :class:`~agentmeter._events.EventBus` -- the sinks and subscribers that hear
  about every call, and the one place an event is built;
- :class:`~agentmeter._ledger.BudgetLedger` -- which budgets a call counts
  against, reservations before calls and their settlement after.

Each record: arguments checked (a rejected call changes nothing) -> the innermost
scope of this tracker supplies session / agent / customer / tool -> the cost from
the cached per-model rates -> one row into the recorder (a duplicate ``call_id``
counts once) -> budgets settled and the event emitted, each only when there are
any.
"""

from __future__ import annotations

import itertools
import logging
import os
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar, overload

from . import _fields, _periods, _validate, _views, decorators
from ._events import EventBus, Sink, Subscriber, build_event
from ._guard import swallow
from ._ledger import BudgetLedger
from ._recorder import FOLD_AT, Key, Recorder
from ._signature import KW, TRUSTED, KeywordsOnly, keywords_only, positional_error
from .budget import Budget, BudgetStore, Reservation, Spend
from .errors import BudgetExceeded, NotFoundError
from .models import (
    BudgetAlert,
    BudgetStatus,
    CustomerUsage,
    SessionUsage,
    Snapshot,
    ToolStats,
    ToolTable,
    Usage,
)
from .pricing import PriceBook
from .scope import NO_KEYS, STACK, Scope, innermost

__all__ = ["Sink", "Subscriber", "Tracker"]

logger = logging.getLogger("agentmeter")

LLM, EMBEDDING, TOOL, CACHE = _fields.LLM, _fields.EMBEDDING, _fields.TOOL, _fields.CACHE
_LLM_KINDS = frozenset({"chat", "completion", "image", "audio", "other"})
_MISSING: Any = object()
_INF = float("inf")
# The defaults of record_llm's optional counts and kind. An identity test against
# the default is the cheapest check there is, and every value it passes is valid:
# CPython keeps one 0 and interns "chat" (False, a float 0.0 or an int subclass is
# never this 0, so they still take the full check).
_ZERO: Any = 0
_CHAT: Any = "chat"
F = TypeVar("F", bound=Callable[..., Any])


def _id_prefix() -> str:
    """A random prefix per tracker: its call ids ("am-<48 random bits>-<n>") stay unique
    across trackers, processes and runs (a database may hold many of them)."""
    return f"am-{os.urandom(6).hex()}-"


# Trackers alive in this process: a child created by fork() inherits the parent's
# counters, so each tracker gets a new prefix there.
_LIVE: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _after_fork() -> None:
    for tracker in list(_LIVE):
        tracker.renew_id_prefix()


os.register_at_fork(after_in_child=_after_fork)


def _key(
    scope: Scope | None,
    session_id: str | None,
    model: str | None,
    provider: str | None,
    agent_id: str | None,
    tool: str | None,
    kind: str,
    customer_id: str | None = None,
) -> Key:
    """The row key of a record: explicit attribution first, else the scope's."""
    if scope is not None:
        if session_id is None:
            session_id = scope.session_id
        if agent_id is None:
            agent_id = scope.agent_id
        if tool is None:
            tool = scope.tool
        if customer_id is None:
            customer_id = scope.customer_id
    return (session_id, model, provider, agent_id, tool, scope, kind, customer_id)


def _tags(scope: Scope | None, tags: dict[str, str] | None) -> dict[str, str] | None:
    """The tags of an event: the scope's, overridden key by key by the record's own."""
    if scope is None or not scope.tags:
        return tags
    return {**scope.tags, **tags} if tags else scope.tags


class Tracker:
    """Counts LLM, embedding, tool and cache usage, and enforces budgets.

    ``agentmeter.get_tracker()`` is the process-wide default; construct ``Tracker()``
    for an isolated one (tests, one tracker per tenant).

    Args:
        budget_store: Where budget state lives (default: in this process's memory).
        default_session_budget: Budget given to every new session.
        clock: What "now" is for budget periods, alerts and refusals: a callable
            returning Unix seconds or an aware ``datetime`` (default
            :func:`time.time`). Tests pass their own to drive time without sleeping;
            the in-memory store the tracker creates uses it too (reservation TTL).
        dedup_window: How many recent ``call_id`` values are remembered to drop
            duplicates (bounded memory; duplicates arrive close together). A smaller
            window is also a little faster: measured inside a LangChain ``invoke``,
            the claim costs ~1.9 us per call with 10,000 ids and ~0.9 us with one.

    Attributes:
        prices: The tracker's :class:`~agentmeter.pricing.PriceBook`.
        recorder: The counters (internal: read them through the methods).
        events: The sinks and subscribers (internal: use ``subscribe`` / ``add_sink``).
        ledger: The budgets (internal: use ``set_budget`` / ``check_budget``).
    """

    def __init__(
        self,
        *,
        budget_store: BudgetStore | None = None,
        default_session_budget: Budget | None = None,
        dedup_window: int = 10_000,
        clock: Callable[[], Any] | None = None,
    ) -> None:
        if budget_store is not None and not isinstance(budget_store, BudgetStore):
            raise TypeError("budget_store must implement the BudgetStore protocol")
        if default_session_budget is not None and not isinstance(default_session_budget, Budget):
            raise TypeError("default_session_budget must be a Budget or None")
        self.recorder = Recorder(_validate.count("dedup_window", dedup_window))
        self.events = EventBus()
        self.prices = PriceBook()
        self._ids = itertools.count(1)
        self._id_prefix = _id_prefix()
        self.ledger = BudgetLedger(
            budget_store, default_session_budget, self._id_prefix, _periods.as_clock(clock)
        )
        self._alert_subscribers: tuple[Callable[[BudgetAlert], object], ...] = ()
        self.ledger.on_alerts = self._deliver_alerts
        self._release = self.release  # one bound method shared by every reservation
        _LIVE.add(self)  # a fork()ed child renames its call ids (see _after_fork)

    def renew_id_prefix(self) -> None:
        """Draw a new call-id prefix (done in a forked child, whose ids must differ)."""
        self._id_prefix = self.ledger.prefix = _id_prefix()

    # ------------------------------------------------------------------ config
    def configure(
        self,
        *,
        default_session_budget: Budget | object | None = _MISSING,
        budget_store: BudgetStore | object = _MISSING,
        dedup_window: int | object = _MISSING,
    ) -> None:
        """Change settings; arguments not given are left as they are."""
        if default_session_budget not in (_MISSING, None) and not isinstance(
            default_session_budget, Budget
        ):
            raise TypeError("default_session_budget must be a Budget or None")
        if budget_store is not _MISSING and not isinstance(budget_store, BudgetStore):
            raise TypeError("budget_store must implement the BudgetStore protocol")
        if dedup_window is not _MISSING:
            self.recorder.dedup_window = _validate.count("dedup_window", dedup_window)
        if isinstance(default_session_budget, Budget) or default_session_budget is None:
            self.ledger.default_budget = default_session_budget
        if isinstance(budget_store, BudgetStore):
            self.ledger.store = budget_store
        self.ledger.update_active()

    def set_price(
        self,
        model: str,
        *,
        input_per_mtok: float | Decimal | int,
        output_per_mtok: float | Decimal | int,
        cache_read_per_mtok: float | Decimal | int | None = None,
        cache_write_per_mtok: float | Decimal | int | None = None,
        provider: str | None = None,
    ) -> None:
        """Set a model's price in USD per million tokens (overrides genai-prices)."""
        self.prices.set_price(
            model,
            input_per_mtok=input_per_mtok,
            output_per_mtok=output_per_mtok,
            cache_read_per_mtok=cache_read_per_mtok,
            cache_write_per_mtok=cache_write_per_mtok,
            provider=provider,
        )

    def set_tool_price(self, tool: str, cost_usd: float | Decimal | int | None) -> None:
        """Price each call of ``tool`` at ``cost_usd`` dollars (``None`` removes the price).

        Agents pay per call for search APIs, scrapers and MCP servers: the cost lands
        on the tool call's event and in every aggregate it belongs to (tool,
        session, customer, agent, scope), and a cost budget reserves it before the
        tool runs (through ``@metered_tool`` and ``start_tool``).
        """
        self.prices.set_tool_price(tool, cost_usd)

    # --------------------------------------------------------------- recording
    @keywords_only
    def record_llm(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        _kw: KeywordsOnly = KW,  # keyword-only: see agentmeter._signature
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        provider: str | None = None,
        latency_ms: float | None = None,
        cost_usd: float | Decimal | None = None,
        call_id: object = None,
        kind: str = "chat",
        estimated: bool = False,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        tool: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        ok: bool = True,
        error: str | None = None,
    ) -> None:
        """Record one LLM call.

        Args:
            model: Model name as the provider or framework reports it.
            input_tokens: All prompt tokens, cached ones included.
            output_tokens: All completion tokens, reasoning included.
            cache_read_tokens: Prompt tokens read from the provider's cache (part of input).
            cache_write_tokens: Prompt tokens written to the cache (part of input).
            reasoning_tokens: Reasoning tokens (part of output).
            provider: Provider name (``"openai"``, ``"anthropic"`` ...), used for pricing.
            latency_ms: Wall-clock duration of the call.
            cost_usd: Cost the provider reported; takes precedence over prices.
            call_id: The framework's run id; a second record with the same id is ignored.
            kind: ``"chat"``, ``"completion"``, ``"image"``, ``"audio"`` or ``"other"``.
            estimated: True when the counts were estimated, not reported.
            session_id: Session to bill; defaults to the enclosing scope's.
            agent_id: Agent to attribute; defaults to the enclosing scope's.
            customer_id: Customer to bill; defaults to the enclosing scope's.
            tool: Tool to credit the usage to; defaults to the enclosing ``@metered_tool``.
            tags: Free-form ``{str: str}`` labels stored with the event (merged over
                the enclosing scopes' tags).
            metadata: Free-form data passed to subscribers.
            ok: False for a call that failed.
            error: Error description for a failed call.

        Raises:
            ValueError, TypeError: on bad arguments; nothing is counted then.
        """
        if _kw is KW:
            # Validation: one cheap test per argument inline; the helpers (which raise
            # or normalise) only run when a test fails.
            if type(model) is not str or not model or not model.isascii():
                _validate.name("model", model, optional=False)
            if type(input_tokens) is not int or input_tokens < 0:
                input_tokens = _validate.count("input_tokens", input_tokens)
            if type(output_tokens) is not int or output_tokens < 0:
                output_tokens = _validate.count("output_tokens", output_tokens)
            if cache_read_tokens is not _ZERO and (
                type(cache_read_tokens) is not int or cache_read_tokens < 0
            ):
                cache_read_tokens = _validate.count("cache_read_tokens", cache_read_tokens)
            if cache_write_tokens is not _ZERO and (
                type(cache_write_tokens) is not int or cache_write_tokens < 0
            ):
                cache_write_tokens = _validate.count("cache_write_tokens", cache_write_tokens)
            if reasoning_tokens is not _ZERO and (
                type(reasoning_tokens) is not int or reasoning_tokens < 0
            ):
                reasoning_tokens = _validate.count("reasoning_tokens", reasoning_tokens)
            if (
                cache_read_tokens + cache_write_tokens > input_tokens
                or reasoning_tokens > output_tokens
            ):
                _validate.parts(
                    input_tokens,
                    cache_read_tokens,
                    cache_write_tokens,
                    output_tokens,
                    reasoning_tokens,
                )
            if kind is not _CHAT and (kind.__class__ is not str or kind not in _LLM_KINDS):
                _validate.kind(kind, _LLM_KINDS)
            if latency_ms is not None and (
                latency_ms.__class__ is not float or not 0.0 <= latency_ms < _INF  # NaN fails too
            ):
                latency_ms = _validate.duration("latency_ms", latency_ms)
            cost = None if cost_usd is None else _validate.opt_cost_micros("cost_usd", cost_usd)
            if not (
                (
                    provider is None
                    or (provider.__class__ is str and provider and provider.isascii())
                )
                and (
                    session_id is None
                    or (session_id.__class__ is str and session_id.isascii() and session_id)
                )
                and (
                    agent_id is None
                    or (agent_id.__class__ is str and agent_id.isascii() and agent_id)
                )
                and (tool is None or (tool.__class__ is str and tool.isascii() and tool))
                and (
                    customer_id is None
                    or (customer_id.__class__ is str and customer_id.isascii() and customer_id)
                )
            ):
                _validate.names(
                    provider=provider,
                    session_id=session_id,
                    agent_id=agent_id,
                    tool=tool,
                    customer_id=customer_id,
                )
            if call_id is not None and (
                call_id.__class__ is not str or not call_id or not call_id.isascii()
            ):
                call_id = _validate.call_id(call_id)
            if estimated is not False and estimated is not True:
                _validate.flag("estimated", estimated)
            if ok is not True and ok is not False:
                _validate.flag("ok", ok)
            if error is not None:
                error = _validate.error(error)
            if metadata is not None:
                _validate.metadata(metadata)
            if tags is not None:
                tags = _validate.tags(tags)
        elif _kw is TRUSTED:
            # agentmeter.instrumentation's calls in flight checked every argument
            # when the call started and ended, and pass the cost in micro-dollars:
            # the same body without a second check or a second frame.
            cost = cost_usd  # type: ignore[assignment]
        else:
            raise positional_error("record_llm", 3)
        try:
            # The hot path. The row key is cached per scope and model when nothing
            # overrides the scope's attribution, so folding groups rows by identity.
            stack = STACK.get()
            scope = None
            if stack:
                scope = stack[-1]
                if scope.tracker is not self:
                    scope = innermost(self, stack)
            # Integrations usually name the session and the provider (a run's
            # metadata), so those are cached too, under (model, session, provider).
            if agent_id is None and tool is None and customer_id is None:
                keys = scope.row_keys if scope is not None else self.recorder.row_keys
                ck: Any = (
                    model
                    if session_id is None and provider is None
                    else (model, session_id, provider)
                )
                key = keys.get(ck)
                if key is None:
                    key = _key(scope, session_id, model, provider, None, None, LLM)
                    if keys is NO_KEYS:
                        keys = scope.row_keys = {}  # type: ignore[union-attr]
                    keys[ck] = key
            else:
                key = _key(scope, session_id, model, provider, agent_id, tool, LLM, customer_id)
            if cost is None:
                cost = self.prices.cost_micros(
                    model,
                    provider,
                    input_tokens,
                    output_tokens,
                    cache_read_tokens,
                    cache_write_tokens,
                )
            row = (
                key,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                reasoning_tokens,
                0 if ok else 1,
                1 if estimated else 0,
                cost or 0,
                1 if cost is None else 0,
                latency_ms or 0.0,
            )
            rec = self.recorder
            if call_id is not None and not rec.first_time(call_id, row):
                return
            log = rec.log
            log.append(row)  # atomic: no lock on the hot path
            if len(log) >= FOLD_AT:
                rec.fold_soon()
            # Budgets and listeners, each skipped up front when there are none.
            ledger = self.ledger
            if ledger.active or ledger.pending or (scope is not None and scope.budget_refs):
                ledger.settle(
                    scope,
                    key,
                    call_id,
                    Spend(
                        input_tokens + output_tokens, input_tokens, output_tokens, cost or 0, 1, 0
                    ),
                )
            if self.events.listening:
                self.events.emit(
                    build_event(
                        call_id if call_id.__class__ is str else self._event_id(call_id),
                        kind,
                        model,
                        provider,
                        input_tokens,
                        output_tokens,
                        cache_read_tokens,
                        cache_write_tokens,
                        reasoning_tokens,
                        cost,
                        latency_ms,
                        key[0],
                        key[3],
                        scope.path if scope is not None else (),
                        key[4],
                        scope.category if scope is not None and key[4] == scope.tool else None,
                        ok,
                        error,
                        estimated,
                        0,
                        metadata,
                        key[7],
                        _tags(scope, tags),
                    )
                )
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "record_llm")

    @keywords_only
    def record_embedding(
        self,
        model: str,
        input_tokens: int,
        _kw: KeywordsOnly = KW,  # keyword-only: see agentmeter._signature
        provider: str | None = None,
        latency_ms: float | None = None,
        cost_usd: float | Decimal | None = None,
        call_id: object = None,
        estimated: bool = False,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        tool: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        ok: bool = True,
        error: str | None = None,
    ) -> None:
        """Record one embedding call of ``input_tokens``; arguments as :meth:`record_llm`."""
        if _kw is not KW:
            raise positional_error("record_embedding", 2)
        _validate.name("model", model, optional=False)
        input_tokens = _validate.count("input_tokens", input_tokens)
        latency_ms = _validate.opt_duration("latency_ms", latency_ms)
        cost = _validate.opt_cost_micros("cost_usd", cost_usd)
        _validate.names(
            provider=provider,
            session_id=session_id,
            agent_id=agent_id,
            tool=tool,
            customer_id=customer_id,
        )
        call_id = _validate.call_id(call_id)
        _validate.flag("estimated", estimated)
        _validate.flag("ok", ok)
        error = _validate.error(error)
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        try:
            scope = self.current_scope()
            key = _key(scope, session_id, model, provider, agent_id, tool, EMBEDDING, customer_id)
            if cost is None:
                cost = self.prices.cost_micros(model, provider, input_tokens, 0)
            row = (key, input_tokens, 1 if estimated else 0, cost or 0, 1 if cost is None else 0)
            if not self.recorder.append(row, call_id):
                return
            self._settle(scope, key, call_id, Spend(input_tokens, input_tokens, 0, cost or 0, 0, 0))
            if self.events.listening:
                self._emit(
                    self._event_id(call_id),
                    "embedding",
                    model,
                    provider,
                    input_tokens,
                    0,
                    0,
                    0,
                    0,
                    cost,
                    latency_ms,
                    key,
                    scope,
                    None,
                    ok,
                    error,
                    estimated,
                    0,
                    metadata,
                    tags,
                )
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "record_embedding")

    @keywords_only
    def record_tool_call(
        self,
        tool: str,
        ok: bool,
        duration_ms: float,
        _kw: KeywordsOnly = KW,  # keyword-only: see agentmeter._signature
        category: str = "",
        call_id: object = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        error: str | None = None,
        cost_usd: float | Decimal | None = None,
    ) -> None:
        """Record one tool call.

        Args:
            tool: Tool name.
            ok: Whether the call succeeded.
            duration_ms: How long it ran.
            category: Free-form group (``"search"``, ``"db"`` ...) for by-category stats.
            call_id: The framework's run id; a second record with the same id is ignored,
                so a tool seen by a decorator and by a framework handler counts once.
            session_id: Defaults to the enclosing scope's.
            agent_id: Defaults to the enclosing scope's.
            customer_id: Customer to bill; defaults to the enclosing scope's.
            tags: Free-form ``{str: str}`` labels stored with the event.
            metadata: Free-form data passed to subscribers.
            error: Error description for a failed call.
            cost_usd: What the call cost (a paid search API, a scraper, an MCP
                server); default the tool's price (:meth:`set_tool_price`), else none.
                It counts in the call's cost and every aggregate it belongs to.
        """
        if _kw is not KW:
            raise positional_error("record_tool_call", 3)
        _validate.name("tool", tool, optional=False)
        _validate.flag("ok", ok)
        duration_ms = _validate.duration("duration_ms", duration_ms)
        if type(category) is not str:
            raise TypeError(f"category must be a str, got {type(category).__name__}")
        call_id = _validate.call_id(call_id)
        _validate.names(session_id=session_id, agent_id=agent_id, customer_id=customer_id)
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        error = _validate.error(error)
        cost = _validate.opt_cost_micros("cost_usd", cost_usd)
        try:
            scope = self.current_scope()
            key = _key(scope, session_id, None, None, agent_id, tool, TOOL, customer_id)
            cid = str(call_id) if call_id is not None else self.new_call_id()
            if cost is None:
                cost = self.prices.tool_cost_micros(tool)
            row = (key, 0 if ok else 1, duration_ms, cost or 0)
            rec = self.recorder
            if call_id is not None and not rec.first_time(call_id, row):
                return
            rec.add_tool(key, tool, category, ok, duration_ms, cid)
            rec.append(row, None)
            self._settle(scope, key, cid, Spend(0, 0, 0, cost or 0, 0, 1))
            if self.events.listening:
                self._emit(
                    cid,
                    "tool",
                    None,
                    None,
                    0,
                    0,
                    0,
                    0,
                    0,
                    cost,
                    duration_ms,
                    key,
                    scope,
                    category or None,
                    ok,
                    error,
                    False,
                    0,
                    metadata,
                    tags,
                )
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "record_tool_call")

    def record_cache_hit(
        self,
        tokens_saved: int = 0,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        model: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record a hit of the application's own cache (an LLM call that was not made)."""
        tokens_saved = _validate.count("tokens_saved", tokens_saved)
        self._record_cache(
            True, tokens_saved, session_id, agent_id, model, metadata, customer_id, tags
        )

    def record_cache_miss(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        model: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record a miss of the application's own cache."""
        self._record_cache(False, 0, session_id, agent_id, model, metadata, customer_id, tags)

    def _record_cache(
        self,
        hit: bool,
        saved: int,
        session_id: str | None,
        agent_id: str | None,
        model: str | None,
        metadata: dict[str, Any] | None,
        customer_id: str | None,
        tags: dict[str, str] | None,
    ) -> None:
        _validate.names(
            session_id=session_id, agent_id=agent_id, model=model, customer_id=customer_id
        )
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        try:
            scope = self.current_scope()
            key = _key(scope, session_id, model, None, agent_id, None, CACHE, customer_id)
            self.recorder.append((key, 1 if hit else 0, 0 if hit else 1, saved), None)
            if self.events.listening:
                self._emit(
                    self.new_call_id(),
                    "cache_hit" if hit else "cache_miss",
                    model,
                    None,
                    0,
                    0,
                    0,
                    0,
                    0,
                    None,
                    None,
                    key,
                    scope,
                    None,
                    True,
                    None,
                    False,
                    saved,
                    metadata,
                    tags,
                )
        except Exception as exc:
            swallow(exc, "record_cache")

    # ------------------------------------------------------------- internals
    def _settle(self, scope: Scope | None, key: Key, call_id: object, spend: Spend) -> None:
        """Count a recorded call against its budgets, if any apply."""
        ledger = self.ledger
        if ledger.active or ledger.pending or (scope is not None and scope.budget_refs):
            ledger.settle(scope, key, call_id, spend)

    def _emit(
        self,
        call_id: str,
        kind: str,
        model: str | None,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
        reasoning: int,
        cost: int | None,
        latency_ms: float | None,
        key: Key,
        scope: Scope | None,
        category: str | None,
        ok: bool,
        error: str | None,
        estimated: bool,
        saved: int,
        metadata: dict[str, Any] | None,
        tags: dict[str, str] | None,
    ) -> None:
        self.events.emit(
            build_event(
                call_id,
                kind,
                model,
                provider,
                input_tokens,
                output_tokens,
                cache_read,
                cache_write,
                reasoning,
                cost,
                latency_ms,
                key[0],
                key[3],
                scope.path if scope is not None else (),
                key[4],
                category,
                ok,
                error,
                estimated,
                saved,
                metadata,
                key[7],
                _tags(scope, tags),
            )
        )

    def _event_id(self, call_id: object) -> str:
        return str(call_id) if call_id is not None else self.new_call_id()

    def new_call_id(self) -> str:
        """A cheap process-unique call id (for callers that need one before recording)."""
        return f"{self._id_prefix}{next(self._ids)}"

    # ---------------------------------------------------------------- events
    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(event)`` after each recorded call, outside the tracker's lock.

        Callbacks run on the recording thread; one that raises is logged and skipped.
        No event is built while nobody subscribes.
        """
        self.events.subscribe(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop delivering events to ``callback`` (a delivery already under way may finish)."""
        self.events.unsubscribe(callback)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """The callbacks currently subscribed."""
        return self.events.subscribers

    def add_sink(self, sink: Sink) -> None:
        """Send every recorded call to ``sink`` (e.g. a SQL or JSONL sink).

        Sinks receive the raw event tuple (``UsageEvent.from_raw`` builds the model)
        so that enqueueing stays cheap on the recording thread.
        """
        self.events.add_sink(sink)

    def remove_sink(self, sink: Sink) -> None:
        """Stop sending events to ``sink`` (it is not closed)."""
        self.events.remove_sink(sink)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks currently attached."""
        return self.events.sinks

    def flush(self) -> None:
        """Flush every sink that buffers (waits until their events are stored)."""
        self.events.flush()

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> Snapshot:
        """A frozen picture of everything counted so far."""
        return _views.snapshot(*self.recorder.state())

    def snapshot_and_reset(self) -> Snapshot:
        """Atomically take a snapshot and clear the counters (e.g. per reporting period).

        Clearing frees the memory of every name seen so far (models, sessions,
        customers, tools), so a long-running process that snapshots periodically
        stays bounded however many distinct names it records.
        """
        return _views.snapshot(*self.recorder.state(clear=True))

    def reset(self) -> None:
        """Clear every counter and breakdown (budgets, prices and subscribers stay)."""
        self.recorder.clear()

    def merge(self, snapshot: Snapshot) -> None:
        """Add another tracker's (e.g. another process's) snapshot to this one.

        Merging is exact: the snapshot's cells carry the joint breakdown and its tool
        stats carry counts and duration histograms.
        """
        if isinstance(snapshot, dict):
            snapshot = Snapshot.model_validate(snapshot)
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"merge() takes a Snapshot, got {type(snapshot).__name__}")
        self.recorder.merge(snapshot)

    def session(self, session_id: str) -> SessionUsage:
        """One session's usage, per-model and per-agent breakdowns, tool stats and budget.

        Raises:
            NotFoundError: (a :class:`LookupError`) if nothing was recorded for the
                session and it has no budget -- the rule of every per-id read.
        """
        _validate.name("session_id", session_id, optional=False)
        cell_rows, tool_accs, found = self.recorder.session(session_id)
        budget = self.ledger.session_status(session_id)
        if not found and budget is None:
            raise NotFoundError("session", session_id)
        return _views.session_usage(session_id, cell_rows, tool_accs, budget)

    def customer(self, customer_id: str) -> CustomerUsage:
        """One customer's usage: per model, agent and session, its tool stats.

        A customer's view survives :meth:`close_session` of its sessions (the
        closed sessions' usage stays in it, and leaves ``by_session``).

        Raises:
            NotFoundError: (a :class:`LookupError`) if nothing was recorded for it.
        """
        _validate.name("customer_id", customer_id, optional=False)
        cell_rows, tool_accs, found = self.recorder.customer(customer_id)
        if not found:
            raise NotFoundError("customer", customer_id)
        ref = self.ledger.budget_for({"customer_id": customer_id})
        budget = None if ref is None else self.ledger.status(ref)
        return _views.customer_usage(customer_id, cell_rows, tool_accs, budget)

    def customers(self) -> list[str]:
        """Ids of the customers with recorded usage."""
        return self.recorder.customer_ids()

    def sessions(self) -> list[str]:
        """Ids of the sessions currently held (closed sessions are not)."""
        return self.recorder.session_ids()

    def close_session(self, session_id: str) -> SessionUsage:
        """End a session: return its final usage (for billing) and free its memory.

        The session's usage stays in the tracker's totals and in its model / agent /
        customer / tool breakdowns; only the per-session view and its budget are dropped.

        Raises:
            NotFoundError: if the session is unknown.
        """
        _validate.name("session_id", session_id, optional=False)
        budget = self.ledger.session_status(session_id)
        cells, tools = self.recorder.pop_session(session_id)
        if cells is None and tools is None and budget is None:
            raise NotFoundError("session", session_id)
        self.ledger.close_session(session_id)
        return _views.session_usage(
            session_id, list((cells or {}).items()), list((tools or {}).items()), budget
        )

    def tool_stats(self, session_id: str | None = None) -> dict[str, ToolStats]:
        """``{tool: ToolStats}`` over all sessions, or for one session (empty if unknown)."""
        if session_id is None:
            return ToolTable(self.snapshot().by_tool)
        _validate.name("session_id", session_id)
        try:
            return ToolTable(self.session(session_id).tools)
        except NotFoundError:
            return ToolTable()

    def scope_usage(self, scope: Scope) -> Usage:
        """The inclusive usage of one of this tracker's scopes (``scope.usage``)."""
        return Usage.from_row(self.recorder.scope_row(scope))

    def current_scope(self) -> Scope | None:
        """The innermost open scope of this tracker in the current thread / task."""
        stack = STACK.get()
        return innermost(self, stack) if stack else None

    # ------------------------------------------------------ scopes, decorators
    def meter(
        self,
        name: str = "scope",
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        budget: Budget | None = None,
        tags: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        customer_budget: Budget | None = None,
        session_budget: Budget | None = None,
        agent_budget: Budget | None = None,
    ) -> Scope:
        """Open an attribution scope: ``with tracker.meter("turn", session_id="s1") as scope:``.

        Works with ``with`` and ``async with``. Records inside are added to the
        scope and to every enclosing scope; ``scope.usage`` reads the totals. A
        ``budget`` limits what may be spent inside (see :meth:`check_budget`).
        ``customer_id`` (the party billed), ``session_id`` and ``agent_id`` are
        inherited by nested scopes unless they set their own; ``tags`` are merged
        key by key and stored with every event recorded inside.

        ``customer_budget`` / ``session_budget`` / ``agent_budget`` attach a budget to
        the ``customer_id`` / ``session_id`` / ``agent_id`` given in the same call,
        exactly as :meth:`set_budget` does: it counts every call of that customer,
        session or agent, inside this scope or not, and outlives the scope (a later
        ``set_budget`` or ``meter`` replaces it, keeping what was spent).
        """
        _validate.name("name", name, optional=False)
        _validate.names(session_id=session_id, agent_id=agent_id, customer_id=customer_id)
        keyed = (
            ("customer_budget", customer_budget, "customer_id", customer_id),
            ("session_budget", session_budget, "session_id", session_id),
            ("agent_budget", agent_budget, "agent_id", agent_id),
            ("budget", budget, "", ""),
        )
        for arg, value, id_arg, id_value in keyed:
            if value is not None and not isinstance(value, Budget):
                raise TypeError(f"{arg} must be an agentmeter.Budget, got {type(value).__name__}")
            if value is not None and id_arg and id_value is None:
                raise ValueError(f"{arg} needs {id_arg} in the same meter() call")
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        # Every argument is checked above: a bad one changes no budget.
        if customer_budget is not None:
            self.set_budget(budget=customer_budget, customer_id=customer_id)
        if session_budget is not None:
            self.set_budget(session_id, session_budget)
        if agent_budget is not None:
            self.set_budget(budget=agent_budget, agent=agent_id)
        return Scope(
            self,
            name,
            session_id,
            agent_id,
            budget,
            metadata,
            customer_id=customer_id,
            tags=tags,
        )

    @overload
    def metered(self, func: F, /) -> F: ...
    @overload
    def metered(
        self,
        name: str | None = None,
        /,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        budget: Budget | None = None,
        tags: dict[str, str] | None = None,
    ) -> Callable[[F], F]: ...
    def metered(
        self,
        func_or_name: Any = None,
        /,
        *,
        name: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        budget: Budget | None = None,
        tags: dict[str, str] | None = None,
    ) -> Any:
        """Meter every call of a function in its own scope.

        ``@metered``, ``@metered("plan", agent_id="planner")``, ``@metered(budget=...)``.
        Works on sync, async, generator and async-generator functions; an exception
        is noted on the scope and re-raised unchanged.
        """
        return decorators.metered(
            self,
            func_or_name,
            name=name,
            session_id=session_id,
            agent_id=agent_id,
            budget=budget,
            customer_id=customer_id,
            tags=tags,
        )

    @overload
    def metered_tool(self, func: F, /) -> F: ...
    @overload
    def metered_tool(
        self,
        name: str | None = None,
        /,
        *,
        category: str = "",
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        budget: Budget | None = None,
        tags: dict[str, str] | None = None,
        cost_usd: float | Decimal | None = None,
    ) -> Callable[[F], F]: ...
    def metered_tool(
        self,
        func_or_name: Any = None,
        /,
        *,
        name: str | None = None,
        category: str = "",
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        budget: Budget | None = None,
        tags: dict[str, str] | None = None,
        cost_usd: float | Decimal | None = None,
    ) -> Any:
        """Meter a tool function: calls, ok/failed, duration and the tokens spent inside.

        ``@metered_tool``, ``@metered_tool("web_search")``, ``@metered_tool(category="search")``.
        A failure is an exception raised by the tool (re-raised unchanged). When a
        budget limits tool calls (``max_tool_calls``, or ``tool_limits`` for this
        tool) or cost, a call over the limit raises :class:`~agentmeter.BudgetExceeded`
        before the tool body runs. ``cost_usd`` prices each call (default: the price
        set with :meth:`set_tool_price`); a cost budget reserves it before the call.
        """
        return decorators.metered_tool(
            self,
            func_or_name,
            name=name,
            category=category,
            session_id=session_id,
            agent_id=agent_id,
            budget=budget,
            customer_id=customer_id,
            tags=tags,
            cost_usd=cost_usd,
        )

    # ---------------------------------------------------------------- budgets
    def set_budget(
        self,
        session_id: str | None = None,
        budget: Budget | None = None,
        *,
        customer_id: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        tool: str | None = None,
    ) -> None:
        """Attach a budget to attribution keys (``budget=None`` removes it).

        ``set_budget("s1", Budget(...))`` gives a session a budget (its spend so far
        in this process counts against it); ``set_budget(budget=..., customer_id=
        "acme")`` a customer, and likewise ``agent``, ``model`` and ``tool``. With
        several keys the budget counts only the calls matching all of them
        (``customer_id="acme", model="gpt-4o"``). Every budget a call matches
        applies at once -- with the enclosing scopes' -- and the tightest refuses.
        A budget on other keys than a lone session starts from zero (or from what
        its store already holds for the current period).
        """
        attribution = _attribution_of(session_id, customer_id, agent, model, tool)
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(f"budget must be an agentmeter.Budget, got {type(budget).__name__}")
        if session_id is not None and len(attribution) == 1:
            sid = session_id

            def spent_so_far() -> Spend:
                rows, tool_calls = self.recorder.session_spend(sid)
                return Spend(*_views.spend_of(rows, tool_calls))

            self.ledger.set_session_budget(sid, budget, spent_so_far)
            return
        self.ledger.set_budget(attribution, budget)

    def budgeted_sessions(self) -> list[str]:
        """Ids of the sessions that have a budget of their own."""
        return sorted(self.ledger.session_refs)

    def budgets(self) -> list[dict[str, str]]:
        """The attribution keys of every budget set with :meth:`set_budget`."""
        out = [{"session_id": s} for s in sorted(self.ledger.session_refs)]
        return out + self.ledger.attribute_budgets()

    def budget_status(
        self,
        session_id: str | None = None,
        *,
        customer_id: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        tool: str | None = None,
    ) -> BudgetStatus | None:
        """The budget set on these keys against its spend (current period), or ``None``.

        After a refusal the status says so (``status.refused``, ``status.state ==
        "refused"``) for the rest of the period.
        """
        attribution = _attribution_of(session_id, customer_id, agent, model, tool)
        ref = self.ledger.budget_for(attribution)
        return None if ref is None else self.ledger.status(ref)

    def subscribe_alerts(self, callback: Callable[[BudgetAlert], object]) -> None:
        """Call ``callback(alert)`` when a budget crosses one of its ``alert_at`` thresholds.

        Each threshold fires once per limit and period, on the thread that settled
        the spend that crossed it, after that spend was settled and outside every
        lock (the callback may call back into the tracker). A callback that raises
        is logged and skipped. Sinks with an ``alert(alert)`` method get alerts too.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        if callback not in self._alert_subscribers:
            self._alert_subscribers = (*self._alert_subscribers, callback)

    def unsubscribe_alerts(self, callback: Callable[[BudgetAlert], object]) -> None:
        """Stop delivering alerts to ``callback``."""
        self._alert_subscribers = tuple(c for c in self._alert_subscribers if c != callback)

    def _deliver_alerts(self, alerts: list[BudgetAlert]) -> None:
        for alert in alerts:
            for callback in self._alert_subscribers:
                try:
                    callback(alert)
                except Exception:
                    logger.exception("agentmeter: alert subscriber %r raised", callback)
            for sink in self.events.sinks:
                fn = getattr(sink, "alert", None)
                if callable(fn):
                    try:
                        fn(alert)
                    except Exception:
                        logger.exception("agentmeter: sink %r raised on an alert", sink)

    def budget_applies(self, session_id: str | None = None) -> bool:
        """True when some budget would apply to a call made here (scope, session or default).

        Integrations use it to skip estimating a prompt's size when nothing is limited.
        """
        if self.ledger.active:
            return True
        # current_scope(), inline: integrations ask this on every model call.
        stack = STACK.get()
        if not stack:
            return False
        scope = stack[-1] if stack[-1].tracker is self else innermost(self, stack)
        return scope is not None and bool(scope.budget_refs)

    def check_budget(
        self,
        estimated_tokens: int = 0,
        *,
        kind: str = "llm",
        model: str | None = None,
        provider: str | None = None,
        estimated_cost_usd: float | Decimal | None = None,
        max_output_tokens: int | None = None,
        call_id: object = None,
        session_id: str | None = None,
        customer_id: str | None = None,
        agent_id: str | None = None,
        tool: str | None = None,
    ) -> Reservation | None:
        """Reserve budget for a call about to be made, or raise :class:`BudgetExceeded`.

        Integrations call this before each LLM / tool call. The request is checked
        against every budget that applies (the enclosing scopes', the session's and
        those set on the call's customer / agent / model / tool) atomically with
        booking it, so concurrent callers cannot jointly overshoot. Recording the
        call with the same ``call_id`` settles the reservation; a call that is not
        made after all should be given back with :meth:`release`.

        **Hard caps.** With ``max_output_tokens`` (the request's output limit) the
        reservation is the call's worst case: ``estimated_tokens`` input plus
        ``max_output_tokens`` output, priced at the model's input and output rates.
        A call whose input is as estimated then cannot take a token or cost budget
        past its limit. Without it the reservation counts the input only, and the
        budget can be overshot by at most the output of the calls in flight.

        Args:
            estimated_tokens: Prompt tokens the call will send (0 if unknown: the call
                is then refused only when the budget is already spent).
            kind: ``"llm"``, ``"embedding"`` or ``"tool"``.
            model: Model, to price the reservation; for ``kind="tool"``, unused.
            provider: Provider, for the price lookup.
            estimated_cost_usd: An explicit cost estimate (for a tool: its price per
                call, default the one set with :meth:`set_tool_price`).
            max_output_tokens: The request's maximum output tokens, if it sets one.
            call_id: The id the call will be recorded with. Without one, the next
                record made without a call id in the same thread or task settles it.
            session_id, customer_id, agent_id: Attribution; default the enclosing scope's.
            tool: The tool (for ``kind="tool"``: the tool about to run, checked
                against per-tool limits); defaults to the enclosing tool's.

        Returns:
            The reservation, or ``None`` when no budget applies.
        """
        estimated_tokens = _validate.count("estimated_tokens", estimated_tokens)
        _validate.kind(kind, _CHECK_KINDS)
        _validate.name("model", model)
        _validate.name("provider", provider)
        _validate.names(session_id=session_id, customer_id=customer_id, agent_id=agent_id)
        _validate.name("tool", tool)
        if max_output_tokens is not None:
            max_output_tokens = _validate.count("max_output_tokens", max_output_tokens)
        cost_est = _validate.opt_cost_micros("estimated_cost_usd", estimated_cost_usd)
        call_id = _validate.call_id(call_id)
        stack = STACK.get()
        scope = innermost(self, stack) if stack else None
        if scope is not None:
            session_id = session_id if session_id is not None else scope.session_id
            customer_id = customer_id if customer_id is not None else scope.customer_id
            agent_id = agent_id if agent_id is not None else scope.agent_id
            tool = tool if tool is not None else scope.tool
        is_tool = kind == "tool"
        refs = self.ledger.refs(
            scope,
            session_id,
            customer_id,
            agent_id,
            None if is_tool else model,
            tool,
            is_tool,
        )
        if not refs:
            return None
        if is_tool:
            if cost_est is None and tool is not None:
                cost_est = self.prices.tool_cost_micros(tool)
            request = Spend(0, 0, 0, cost_est or 0, 0, 1)
        else:
            out = max_output_tokens or 0
            if cost_est is None:
                cost_est = 0
                if model is not None and (estimated_tokens or out):
                    cost_est = self.prices.cost_micros(model, provider, estimated_tokens, out) or 0
            # A call of unknown size still needs one token (and one micro-dollar) left.
            need = max(estimated_tokens, 1)
            llm = 1 if kind == "llm" else 0
            request = Spend(need + out, need, max(llm, out), max(cost_est, 1), llm, 0)
        rid = str(call_id) if call_id is not None else self.new_call_id()
        return self.ledger.reserve(refs, request, rid, self._release, unnamed=call_id is None)

    def release(self, call_id: object) -> None:
        """Give back the reservation booked for ``call_id`` (the call was not made)."""
        call_id = _validate.call_id(call_id)
        if call_id is not None:
            self.ledger.release(str(call_id))


def _attribution_of(
    session_id: object, customer_id: object, agent: object, model: object, tool: object
) -> dict[str, str]:
    """The attribution keys of a budget, checked; at least one is required."""
    _validate.name("session_id", session_id)
    _validate.name("customer_id", customer_id)
    _validate.name("agent", agent)
    _validate.name("model", model)
    _validate.name("tool", tool)
    out = {
        k: v
        for k, v in (
            ("session_id", session_id),
            ("customer_id", customer_id),
            ("agent", agent),
            ("model", model),
            ("tool", tool),
        )
        if v is not None
    }
    if not out:
        raise TypeError(
            "set_budget needs at least one of session_id, customer_id, agent, model, tool"
        )
    return out  # type: ignore[return-value]


_CHECK_KINDS = frozenset({"llm", "embedding", "tool"})
