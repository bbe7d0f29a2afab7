"""The Tracker: counts every record once, into every aggregate it belongs to.

How a record travels (the hot path, kept to a few microseconds):

1. arguments are checked (a rejected call changes nothing);
2. the innermost scope of this tracker supplies the defaults for session,
   agent and tool; the cost comes from the cached per-model rates;
3. a duplicate ``call_id`` is dropped (an atomic ``dict.setdefault``) and one
   flat row is appended to ``_log`` (an atomic ``deque.append``): no lock;
4. every ``_FOLD_AT`` rows (and before every read) the log is folded under the
   lock: rows are grouped by key and summed column-wise in C
   (``zip``/``sum``/``map``) into the per-key cells and into the scopes and
   their ancestors;
5. budgets are settled and sinks / subscribers get the event -- each only if
   there are any.

Cells are keyed ``session -> (model, provider, agent, tool)``; every breakdown
(by model, session, agent, tool, category) is a group-by over them at read time.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import groupby
from operator import add, itemgetter
from typing import Any, Protocol, TypeVar, overload

from . import _fields, _tools, _validate, _views, decorators
from ._guard import swallow
from ._ledger import BudgetLedger
from .budget import Budget, BudgetStore, Reservation, Spend
from .errors import BudgetExceeded, NotFoundError
from .models import (
    BudgetStatus,
    CustomerUsage,
    RawEvent,
    SessionUsage,
    Snapshot,
    ToolStats,
    Usage,
    UsageEvent,
)
from .pricing import PriceBook
from .scope import STACK, Scope, innermost

__all__ = ["Tracker"]

logger = logging.getLogger("agentmeter")

_FOLD_AT = 512
_ROW_KEY = itemgetter(0)
LLM, EMBEDDING, TOOL, CACHE = _fields.LLM, _fields.EMBEDDING, _fields.TOOL, _fields.CACHE
# A row key: session, model, provider, agent, tool, scope, row kind (see _fields.LAYOUTS),
# customer.
_Key = tuple[
    str | None, str | None, str | None, str | None, str | None, Scope | None, str, str | None
]


def _id_prefix() -> str:
    """A random prefix per tracker: its call ids ("am-<48 random bits>-<n>") stay unique
    across trackers, processes and runs (a database may hold many of them)."""
    return f"am-{os.urandom(6).hex()}-"


# Trackers alive in this process: a child created by fork() inherits the parent's
# counters, so each tracker gets a new prefix there.
_LIVE: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _after_fork() -> None:
    for tracker in list(_LIVE):
        tracker._id_prefix = tracker._budgets._prefix = _id_prefix()


os.register_at_fork(after_in_child=_after_fork)


def _key(scope: Scope | None, session_id: str | None, model: str | None, provider: str | None,
         agent_id: str | None, tool: str | None, kind: str,
         customer_id: str | None = None) -> _Key:
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
_LLM_KINDS = frozenset({"chat", "completion", "image", "audio", "other"})
_MISSING: Any = object()
_IDX = _fields.INDEX

Subscriber = Callable[[UsageEvent], object]
F = TypeVar("F", bound=Callable[..., Any])


class Sink(Protocol):
    """Receives every recorded call as a raw event tuple (see ``models.EVENT_FIELDS``)."""

    def submit(self, raw: RawEvent) -> None:
        """Take one event; must be quick (queue it, write it later)."""


class Tracker:
    """Counts LLM, embedding, tool and cache usage, and enforces budgets.

    ``agentmeter.get_tracker()`` is the process-wide default; construct ``Tracker()``
    for an isolated one (tests, one tracker per tenant).

    Args:
        budget_store: Where budget state lives (default: in this process's memory).
        default_session_budget: Budget given to every new session.
        dedup_window: How many recent ``call_id`` values are remembered to drop
            duplicates (bounded memory; duplicates arrive close together).
    """

    def __init__(
        self,
        *,
        budget_store: BudgetStore | None = None,
        default_session_budget: Budget | None = None,
        dedup_window: int = 10_000,
    ) -> None:
        self._lock = threading.Lock()
        # Rows waiting to be folded. Recording threads append without the lock
        # (deque.append is atomic); folding pops them under the lock.
        self._log: deque[tuple[Any, ...]] = deque()
        self._cells: dict[str | None, dict[_views.CellKey, list[Any]]] = {}
        self._tools: dict[str | None, dict[str, _tools.ToolAcc]] = {}
        # Tool stats per customer (only records that have one); sessions above keep theirs.
        self._ctools: dict[str, dict[str, _tools.ToolAcc]] = {}
        self._seen: dict[object, object] = {}  # call id -> the row that claimed it
        self._keys: dict[str, _Key] = {}  # row keys of records made outside any scope
        self._seen_order: deque[object] = deque()
        self._dedup_window = dedup_window
        self._ids = itertools.count(1)
        self._id_prefix = _id_prefix()
        _LIVE.add(self)  # a fork()ed child renames its call ids (see _after_fork)
        self.prices = PriceBook()
        self._subscribers: tuple[Subscriber, ...] = ()
        self._sinks: tuple[Sink, ...] = ()
        # Sinks that also want scope boundaries (``scope_started`` / ``scope_ended``,
        # e.g. the OpenTelemetry sink's spans); empty in the common case.
        self._scope_sinks: tuple[Any, ...] = ()
        self._sink_submits: tuple[Callable[[RawEvent], None], ...] = ()
        self._listening = False  # any subscriber or sink: build events only then
        self._budgets = BudgetLedger(budget_store, default_session_budget, self._id_prefix)

    # ------------------------------------------------------------------ config
    def configure(
        self,
        *,
        default_session_budget: Budget | object | None = _MISSING,
        budget_store: BudgetStore | object = _MISSING,
        dedup_window: int | object = _MISSING,
    ) -> None:
        """Change settings; arguments not given are left as they are."""
        if default_session_budget is not _MISSING:
            if default_session_budget is not None and not isinstance(
                default_session_budget, Budget
            ):
                raise TypeError("default_session_budget must be a Budget or None")
            self._budgets.default_budget = default_session_budget
        if budget_store is not _MISSING:
            if not isinstance(budget_store, BudgetStore):
                raise TypeError("budget_store must implement the BudgetStore protocol")
            self._budgets.store = budget_store
        if dedup_window is not _MISSING:
            self._dedup_window = _validate.count("dedup_window", dedup_window)
        self._budgets._update_active()

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

    # --------------------------------------------------------------- recording
    # fmt: off
    def record_llm(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
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
        metadata: dict[str, Any] | None = None,
        *,
        tool: str | None = None,
        ok: bool = True,
        error: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
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
            metadata: Free-form data passed to subscribers.
            tool: Tool to credit the usage to; defaults to the enclosing ``@metered_tool``.
            ok: False for a call that failed.
            error: Error description for a failed call.
            customer_id: Customer to bill; defaults to the enclosing scope's.
            tags: Free-form ``{str: str}`` labels stored with the event (merged over
                the enclosing scopes' tags).

        Raises:
            ValueError, TypeError: on bad arguments; nothing is counted then.
        """
        # Validation: one cheap test per argument inline; the helpers (which raise
        # or normalise) only run when a test fails.
        if type(model) is not str or not model:
            _validate.name("model", model, optional=False)
        if type(input_tokens) is not int or input_tokens < 0:
            input_tokens = _validate.count("input_tokens", input_tokens)
        if type(output_tokens) is not int or output_tokens < 0:
            output_tokens = _validate.count("output_tokens", output_tokens)
        if type(cache_read_tokens) is not int or cache_read_tokens < 0:
            cache_read_tokens = _validate.count("cache_read_tokens", cache_read_tokens)
        if type(cache_write_tokens) is not int or cache_write_tokens < 0:
            cache_write_tokens = _validate.count("cache_write_tokens", cache_write_tokens)
        if type(reasoning_tokens) is not int or reasoning_tokens < 0:
            reasoning_tokens = _validate.count("reasoning_tokens", reasoning_tokens)
        if (cache_read_tokens + cache_write_tokens > input_tokens
                or reasoning_tokens > output_tokens):
            _validate.parts(input_tokens, cache_read_tokens, cache_write_tokens,
                            output_tokens, reasoning_tokens)
        if kind not in _LLM_KINDS:
            if kind == "embedding":
                raise ValueError("kind='embedding': use record_embedding()")
            raise ValueError(f"kind must be one of {sorted(_LLM_KINDS)}, got {kind!r}")
        if latency_ms is not None:
            latency_ms = _validate.duration("latency_ms", latency_ms)
        cost = None if cost_usd is None else _validate.opt_cost_micros("cost_usd", cost_usd)
        if not ((provider is None or provider.__class__ is str)
                and (session_id is None or (session_id.__class__ is str and session_id))
                and (agent_id is None or (agent_id.__class__ is str and agent_id))
                and (tool is None or (tool.__class__ is str and tool))
                and (customer_id is None or (customer_id.__class__ is str and customer_id))):
            _validate.names(provider=provider, session_id=session_id, agent_id=agent_id, tool=tool,
                            customer_id=customer_id)
        if call_id is not None and type(call_id) is not str:
            call_id = _validate.call_id(call_id)
        if estimated is not False and estimated is not True:
            _validate.flag("estimated", estimated)
        if ok is not True and ok is not False:
            _validate.flag("ok", ok)
        if error is not None and error.__class__ is not str:
            raise TypeError(f"error must be a str, got {type(error).__name__}")
        if metadata is not None:
            _validate.metadata(metadata)
        if tags is not None:
            tags = _validate.tags(tags)
        try:
            # The hot path. The row key is cached per scope and model when nothing
            # overrides the scope's attribution, so folding groups rows by identity.
            stack = STACK.get()
            scope = None
            if stack:
                scope = stack[-1]
                if scope.tracker is not self:
                    scope = innermost(self, stack)
            if (session_id is None and agent_id is None and tool is None and provider is None
                    and customer_id is None):
                keys = scope._keys if scope is not None else self._keys
                key = keys.get(model)
                if key is None:
                    key = keys[model] = _key(scope, None, model, None, None, None, LLM)
            else:
                key = _key(scope, session_id, model, provider, agent_id, tool, LLM, customer_id)
            if cost is None:
                prices = self.prices
                rates = prices._cache.get(model if provider is None else (model, provider),
                                          _MISSING)
                if rates is _MISSING:
                    rates = prices.rates(model, provider)
                if rates is not None:
                    cost = rates.cost_micros(input_tokens, output_tokens, cache_read_tokens,
                                             cache_write_tokens)
            row = (key, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                   reasoning_tokens, 0 if ok else 1, 1 if estimated else 0, cost or 0,
                   1 if cost is None else 0, latency_ms or 0.0)
            if call_id is not None and not self._first_time(call_id, row):
                return
            log = self._log
            log.append(row)  # atomic: no lock on the hot path
            if len(log) >= _FOLD_AT:
                self._fold_soon()
            # Budgets and listeners, each skipped up front when there are none.
            budgets = self._budgets
            if budgets.active or budgets.pending or (scope is not None and scope.budget_refs):
                budgets.settle(scope, key[0], call_id, Spend(
                    input_tokens + output_tokens, input_tokens, output_tokens, cost or 0, 1, 0))
            if self._listening:
                self._emit(self._event(
                    call_id if call_id.__class__ is str else self._event_id(call_id), kind,
                    model, provider, input_tokens, output_tokens, cache_read_tokens,
                    cache_write_tokens, reasoning_tokens, cost, latency_ms, key, scope,
                    scope.category if scope is not None and key[4] == scope.tool else None,
                    ok, error, estimated, 0, metadata, tags,
                ))
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "record_llm")

    def record_embedding(
        self,
        model: str,
        input_tokens: int,
        provider: str | None = None,
        latency_ms: float | None = None,
        cost_usd: float | Decimal | None = None,
        call_id: object = None,
        estimated: bool = False,
        session_id: str | None = None,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        tool: str | None = None,
        ok: bool = True,
        error: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Record one embedding call of ``input_tokens``; arguments as :meth:`record_llm`."""
        _validate.name("model", model, optional=False)
        input_tokens = _validate.count("input_tokens", input_tokens)
        latency_ms = _validate.opt_duration("latency_ms", latency_ms)
        cost = _validate.opt_cost_micros("cost_usd", cost_usd)
        _validate.names(provider=provider, session_id=session_id, agent_id=agent_id, tool=tool,
                        customer_id=customer_id)
        call_id = _validate.call_id(call_id)
        _validate.flag("estimated", estimated)
        _validate.flag("ok", ok)
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        if error is not None and type(error) is not str:
            raise TypeError(f"error must be a str, got {type(error).__name__}")
        try:
            scope = self.current_scope()
            key = _key(scope, session_id, model, provider, agent_id, tool, EMBEDDING, customer_id)
            if cost is None:
                rates = self.prices.rates(model, provider)
                if rates is not None:
                    cost = rates.cost_micros(input_tokens, 0)
            row = (key, input_tokens, 1 if estimated else 0, cost or 0, 1 if cost is None else 0)
            if not self._append(row, call_id):
                return
            self._settle(scope, key, call_id, Spend(input_tokens, input_tokens, 0, cost or 0, 0, 0))
            if self._listening:
                self._emit(self._event(
                    self._event_id(call_id), "embedding", model, provider, input_tokens, 0, 0,
                    0, 0, cost, latency_ms, key, scope, None, ok, error, estimated, 0, metadata,
                    tags,
                ))
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "record_embedding")

    def record_tool_call(
        self,
        tool: str,
        ok: bool,
        duration_ms: float,
        category: str = "",
        call_id: object = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        error: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
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
            metadata: Free-form data passed to subscribers.
            error: Error description for a failed call.
            customer_id: Customer to bill; defaults to the enclosing scope's.
            tags: Free-form ``{str: str}`` labels stored with the event.
        """
        _validate.name("tool", tool, optional=False)
        _validate.flag("ok", ok)
        duration_ms = _validate.duration("duration_ms", duration_ms)
        if type(category) is not str:
            raise TypeError(f"category must be a str, got {type(category).__name__}")
        call_id = _validate.call_id(call_id)
        _validate.names(session_id=session_id, agent_id=agent_id, customer_id=customer_id)
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        if error is not None and type(error) is not str:
            raise TypeError(f"error must be a str, got {type(error).__name__}")
        try:
            scope = self.current_scope()
            key = _key(scope, session_id, None, None, agent_id, tool, TOOL, customer_id)
            cid = str(call_id) if call_id is not None else self.new_call_id()
            row = (key, 0 if ok else 1, duration_ms)
            if call_id is not None and not self._first_time(call_id, row):
                return
            session = key[0]
            with self._lock:  # the tool accumulator's fields change together
                tools = self._tools.get(session)
                if tools is None:
                    tools = self._tools[session] = {}
                acc = tools.get(tool)
                if acc is None:
                    acc = tools[tool] = _tools.ToolAcc(category)
                elif category and acc.category != category:
                    acc.category = category
                acc.add(ok, duration_ms, cid)
                customer = key[7]
                if customer is not None:
                    ctools = self._ctools.get(customer)
                    if ctools is None:
                        ctools = self._ctools[customer] = {}
                    cacc = ctools.get(tool)
                    if cacc is None:
                        cacc = ctools[tool] = _tools.ToolAcc(category)
                    elif category and cacc.category != category:
                        cacc.category = category
                    cacc.add(ok, duration_ms, cid)
            self._append(row, None)
            self._settle(scope, key, cid, Spend(0, 0, 0, 0, 0, 1))
            if self._listening:
                self._emit(self._event(
                    cid, "tool", None, None, 0, 0, 0, 0, 0, None, duration_ms, key, scope,
                    category or None, ok, error, False, 0, metadata, tags,
                ))
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
        metadata: dict[str, Any] | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Record a hit of the application's own cache (an LLM call that was not made)."""
        tokens_saved = _validate.count("tokens_saved", tokens_saved)
        self._record_cache(True, tokens_saved, session_id, agent_id, model, metadata,
                           customer_id, tags)

    def record_cache_miss(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Record a miss of the application's own cache."""
        self._record_cache(False, 0, session_id, agent_id, model, metadata, customer_id, tags)

    def _record_cache(
        self, hit: bool, saved: int, session_id: str | None, agent_id: str | None,
        model: str | None, metadata: dict[str, Any] | None, customer_id: str | None,
        tags: dict[str, str] | None,
    ) -> None:
        _validate.names(session_id=session_id, agent_id=agent_id, model=model,
                        customer_id=customer_id)
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        try:
            scope = self.current_scope()
            key = _key(scope, session_id, model, None, agent_id, None, CACHE, customer_id)
            self._append((key, 1 if hit else 0, 0 if hit else 1, saved), None)
            if self._listening:
                self._emit(self._event(
                    self.new_call_id(), "cache_hit" if hit else "cache_miss", model, None, 0,
                    0, 0, 0, 0, None, None, key, scope, None, True, None, False, saved,
                    metadata, tags,
                ))
        except Exception as exc:
            swallow(exc, "record_cache")
    # fmt: on

    # ------------------------------------------------------------- internals
    def _append(self, row: tuple[Any, ...], call_id: object) -> bool:
        """Queue a row for folding; False if ``call_id`` was already recorded."""
        if call_id is not None and not self._first_time(call_id, row):
            return False
        log = self._log
        log.append(row)
        if len(log) >= _FOLD_AT:
            self._fold_soon()
        return True

    def _settle(self, scope: Scope | None, key: _Key, call_id: object, spend: Spend) -> None:
        """Count a recorded call against its budgets, if any apply."""
        budgets = self._budgets
        if budgets.active or budgets.pending or (scope is not None and scope.budget_refs):
            budgets.settle(scope, key[0], call_id, spend)

    def _first_time(self, call_id: object, row: tuple[Any, ...]) -> bool:
        """Claim ``call_id`` for ``row``; False if it was already recorded (a duplicate).

        ``dict.setdefault`` is atomic, so two threads recording the same id cannot
        both win, without taking the lock. Memory is bounded by the dedup window.
        """
        if self._seen.setdefault(call_id, row) is not row:
            return False
        order = self._seen_order
        order.append(call_id)
        if len(order) > self._dedup_window:
            try:
                self._seen.pop(order.popleft(), None)
            except IndexError:  # another thread evicted concurrently
                pass
        return True

    def _event_id(self, call_id: object) -> str:
        return str(call_id) if call_id is not None else self.new_call_id()

    @staticmethod
    def _event(
        call_id: str, kind: str, model: str | None, provider: str | None, input_tokens: int,
        output_tokens: int, cache_read: int, cache_write: int, reasoning: int,
        cost: int | None, latency_ms: float | None, key: _Key, scope: Scope | None,
        category: str | None, ok: bool, error: str | None, estimated: bool, saved: int,
        metadata: dict[str, Any] | None, tags: dict[str, str] | None,
    ) -> RawEvent:
        """The raw event tuple of a recorded call (``models.EVENT_FIELDS`` order): the one
        place it is built."""
        return (
            call_id, time.time(), kind, model, provider, input_tokens, output_tokens,
            cache_read, cache_write, reasoning, cost, latency_ms, key[0], key[3],
            scope.path if scope is not None else (), key[4], category,
            "ok" if ok else "error", error, estimated, saved, metadata, key[7],
            _tags(scope, tags),
        )

    def new_call_id(self) -> str:
        """A cheap process-unique call id (for callers that need one before recording)."""
        return f"{self._id_prefix}{next(self._ids)}"

    def _fold_soon(self) -> None:
        """Fold from a recording thread, unless another thread is folding or reading."""
        if self._lock.acquire(blocking=False):
            try:
                self._fold()
            finally:
                self._lock.release()

    def _fold(self) -> None:
        """Sum the pending log into the cells and scopes (caller holds the lock).

        Recording threads only ever append to the log, so taking the ``n`` rows
        present now is safe while they keep appending. Consecutive rows with the
        same key (the usual case: one context recording many calls; the key object
        is shared, so comparing is an identity test) are summed column-wise in C.
        """
        log = self._log
        n = len(log)
        if not n:
            return
        rows = [log.popleft() for _ in range(n)]
        cells = self._cells
        for key, run in groupby(rows, _ROW_KEY):
            group = list(run)
            if len(group) == 1:
                sums: Sequence[Any] = group[0][1:]
            else:
                cols = zip(*group, strict=True)  # rows of one key have one layout
                next(cols)
                sums = list(map(sum, cols))
            session, model, provider, agent, tool, scope, kind, customer = key
            full = _fields.expand(kind, len(group), sums)
            bucket = cells.get(session)
            if bucket is None:
                bucket = cells[session] = {}
            ckey = (model, provider, agent, tool, customer)
            cell = bucket.get(ckey)
            if cell is None:
                bucket[ckey] = full
            else:
                cell[:] = map(add, cell, full)
            while scope is not None:
                scope.row[:] = map(add, scope.row, full)
                scope = scope.parent

    def _emit(self, raw: RawEvent) -> None:
        """Hand a recorded call to the sinks (raw) and subscribers (as a UsageEvent)."""
        for submit in self._sink_submits:
            try:
                submit(raw)
            except Exception as exc:
                swallow(exc, f"sink {submit!r}")
        if self._subscribers:
            event = UsageEvent.from_raw(raw)
            for callback in self._subscribers:
                try:
                    callback(event)
                except Exception:
                    # A subscriber's bug is the subscriber's: log it, keep delivering.
                    logger.exception(
                        "agentmeter: subscriber %r raised; event %s dropped for it",
                        callback,
                        event.call_id,
                    )

    # ---------------------------------------------------------------- events
    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(event)`` after each recorded call, outside the tracker's lock.

        Callbacks run on the recording thread; one that raises is logged and skipped.
        No event is built while nobody subscribes.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        with self._lock:
            if callback not in self._subscribers:
                self._subscribers = (*self._subscribers, callback)
            self._listening = True

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop delivering events to ``callback`` (a delivery already under way may finish)."""
        with self._lock:
            self._subscribers = tuple(c for c in self._subscribers if c != callback)
            self._listening = bool(self._subscribers or self._sinks)

    def add_sink(self, sink: Sink) -> None:
        """Send every recorded call to ``sink`` (e.g. a SQL or JSONL sink).

        Sinks receive the raw event tuple (``UsageEvent.from_raw`` builds the model)
        so that enqueueing stays cheap on the recording thread.
        """
        if not callable(getattr(sink, "submit", None)):
            raise TypeError("a sink needs a submit(raw_event) method")
        with self._lock:
            if sink not in self._sinks:
                self._sinks = (*self._sinks, sink)
            self._listening = True
            self._update_scope_sinks()

    def remove_sink(self, sink: Sink) -> None:
        """Stop sending events to ``sink`` (it is not closed)."""
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)
            self._listening = bool(self._subscribers or self._sinks)
            self._update_scope_sinks()

    def _update_scope_sinks(self) -> None:
        self._sink_submits = tuple(s.submit for s in self._sinks)
        self._scope_sinks = tuple(
            s for s in self._sinks if callable(getattr(s, "scope_started", None))
        )

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks currently attached."""
        return self._sinks

    def flush(self) -> None:
        """Flush every sink that buffers (waits until their events are stored)."""
        for sink in self._sinks:
            fn = getattr(sink, "flush", None)
            if callable(fn):
                fn()

    # ---------------------------------------------------------------- reading
    def _copy_state(self) -> tuple[_views.CellRows, _views.ToolRows, _views.ToolRows]:
        """Copy cells and tool accumulators (caller holds the lock, log folded)."""
        cells = [(s, k, list(row)) for s, b in self._cells.items() for k, row in b.items()]
        tools = [(s, t, acc.copy()) for s, b in self._tools.items() for t, acc in b.items()]
        ctools: _views.ToolRows = [
            (c, t, acc.copy()) for c, b in self._ctools.items() for t, acc in b.items()
        ]
        return cells, tools, ctools

    def snapshot(self) -> Snapshot:
        """A frozen picture of everything counted so far."""
        with self._lock:
            self._fold()
            cells, tools, ctools = self._copy_state()
        return _views.snapshot(cells, tools, ctools)

    def snapshot_and_reset(self) -> Snapshot:
        """Atomically take a snapshot and clear the counters (e.g. per reporting period)."""
        with self._lock:
            self._fold()
            cells, tools, ctools = self._copy_state()
            self._clear()
        return _views.snapshot(cells, tools, ctools)

    def reset(self) -> None:
        """Clear every counter and breakdown (budgets, prices and subscribers stay)."""
        with self._lock:
            self._fold()  # open scopes still get what was recorded before the reset
            self._clear()

    def _clear(self) -> None:
        # The log and the dedup memory are cleared in place: recording threads may
        # hold references to them.
        self._cells = {}
        self._tools = {}
        self._ctools = {}
        self._seen.clear()
        self._seen_order.clear()

    def merge(self, snapshot: Snapshot) -> None:
        """Add another tracker's (e.g. another process's) snapshot to this one.

        Merging is exact: the snapshot's cells carry the joint breakdown and its tool
        stats carry counts and duration histograms.
        """
        if isinstance(snapshot, dict):
            snapshot = Snapshot.model_validate(snapshot)
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"merge() takes a Snapshot, got {type(snapshot).__name__}")
        rows = [
            (c.session_id, (c.model, c.provider, c.agent_id, c.tool, c.customer_id),
             c.usage.to_row())
            for c in snapshot.cells
        ]
        with self._lock:
            self._fold()
            for session, key, row in rows:
                _views.acc_row(self._cells.setdefault(session, {}), key, row)
            for session, stats in snapshot.session_tool_stats:
                bucket = self._tools.setdefault(session, {})
                acc = bucket.get(stats.tool)
                if acc is None:
                    acc = bucket[stats.tool] = _tools.ToolAcc(stats.category)
                acc.absorb(stats)
            for customer, by_tool in snapshot.by_customer_tool.items():
                cbucket = self._ctools.setdefault(customer, {})
                for name, stats in by_tool.items():
                    acc = cbucket.get(name)
                    if acc is None:
                        acc = cbucket[name] = _tools.ToolAcc(stats.category)
                    acc.absorb(stats)

    def session(self, session_id: str) -> SessionUsage:
        """One session's usage, per-model and per-agent breakdowns, tool stats and budget.

        Raises:
            NotFoundError: (a :class:`LookupError`) if nothing was recorded for the
                session and it has no budget -- the rule of every per-id read.
        """
        _validate.name("session_id", session_id, optional=False)
        with self._lock:
            self._fold()
            cells = self._cells.get(session_id)
            tools = self._tools.get(session_id)
            cell_rows = [(k, list(r)) for k, r in (cells or {}).items()]
            tool_accs = [(t, a.copy()) for t, a in (tools or {}).items()]
        budget = self._budgets.session_status(session_id)
        if cells is None and tools is None and budget is None:
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
        with self._lock:
            self._fold()
            cell_rows = [
                (s, k, list(r))
                for s, b in self._cells.items()
                for k, r in b.items()
                if k[4] == customer_id
            ]
            tools = self._ctools.get(customer_id)
            tool_accs = [(t, a.copy()) for t, a in (tools or {}).items()]
        if not cell_rows and tools is None:
            raise NotFoundError("customer", customer_id)
        return _views.customer_usage(customer_id, cell_rows, tool_accs, None)

    def customers(self) -> list[str]:
        """Ids of the customers with recorded usage."""
        with self._lock:
            self._fold()
            ids = {k[4] for b in self._cells.values() for k in b} | set(self._ctools)
        return sorted(i for i in ids if i is not None)

    def sessions(self) -> list[str]:
        """Ids of the sessions currently held (closed sessions are not)."""
        with self._lock:
            self._fold()
            ids = (set(self._cells) | set(self._tools)) - {None}
        return sorted(i for i in ids if i is not None)

    def close_session(self, session_id: str) -> SessionUsage:
        """End a session: return its final usage (for billing) and free its memory.

        The session's usage stays in the tracker's totals and in its model / agent /
        tool breakdowns; only the per-session view and its budget are dropped.

        Raises:
            NotFoundError: if the session is unknown.
        """
        _validate.name("session_id", session_id, optional=False)
        budget = self._budgets.session_status(session_id)
        with self._lock:
            self._fold()
            cells = self._cells.pop(session_id, None)
            tools = self._tools.pop(session_id, None)
            if cells:
                rest = self._cells.setdefault(None, {})
                for key, row in cells.items():
                    _views.acc_row(rest, key, row)
            if tools:
                rest_t = self._tools.setdefault(None, {})
                for name, acc in tools.items():
                    cur = rest_t.get(name)
                    if cur is None:
                        rest_t[name] = acc.copy()
                    else:
                        cur.absorb(acc)
        if cells is None and tools is None and budget is None:
            raise NotFoundError("session", session_id)
        self._budgets.close_session(session_id)
        return _views.session_usage(
            session_id, list((cells or {}).items()), list((tools or {}).items()), budget
        )

    def tool_stats(self, session_id: str | None = None) -> dict[str, ToolStats]:
        """``{tool: ToolStats}`` over all sessions, or for one session."""
        from ._display import ToolTable

        if session_id is None:
            return ToolTable(self.snapshot().by_tool)
        _validate.name("session_id", session_id)
        try:
            return ToolTable(self.session(session_id).tools)
        except NotFoundError:
            return ToolTable()

    def _scope_usage(self, scope: Scope) -> Usage:
        with self._lock:
            self._fold()
            row = list(scope.row)
        return Usage.from_row(row)

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
        budget: Budget | None = None,
        metadata: dict[str, Any] | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Scope:
        """Open an attribution scope: ``with tracker.meter("turn", session_id="s1") as scope:``.

        Works with ``with`` and ``async with``. Records inside are added to the
        scope and to every enclosing scope; ``scope.usage`` reads the totals. A
        ``budget`` limits what may be spent inside (see :meth:`check_budget`).
        ``customer_id`` (the party billed), ``session_id`` and ``agent_id`` are
        inherited by nested scopes unless they set their own; ``tags`` are merged
        key by key and stored with every event recorded inside.
        """
        _validate.name("name", name, optional=False)
        _validate.names(session_id=session_id, agent_id=agent_id, customer_id=customer_id)
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(f"budget must be an agentmeter.Budget, got {type(budget).__name__}")
        _validate.metadata(metadata)
        tags = _validate.tags(tags)
        return Scope(
            self, name, session_id, agent_id, budget, metadata, customer_id=customer_id,
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
        budget: Budget | None = None,
        customer_id: str | None = None,
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
        budget: Budget | None = None,
        customer_id: str | None = None,
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
        budget: Budget | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
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
        budget: Budget | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Any:
        """Meter a tool function: calls, ok/failed, duration and the tokens spent inside.

        ``@metered_tool``, ``@metered_tool("web_search")``, ``@metered_tool(category="search")``.
        A failure is an exception raised by the tool (re-raised unchanged). When a
        budget limits tool calls, a call over the limit raises
        :class:`~agentmeter.BudgetExceeded` before the tool body runs.
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
        )

    # ---------------------------------------------------------------- budgets
    def set_budget(self, session_id: str, budget: Budget | None) -> None:
        """Give a session a budget (``None`` removes it). Spend so far counts against it."""
        _validate.name("session_id", session_id, optional=False)
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(f"budget must be an agentmeter.Budget, got {type(budget).__name__}")

        def spent_so_far() -> Spend:
            with self._lock:
                self._fold()
                rows = [list(r) for r in self._cells.get(session_id, {}).values()]
                tool_calls = sum(a.calls for a in self._tools.get(session_id, {}).values())
            return Spend(*_views.spend_of(rows, tool_calls))

        self._budgets.set_session_budget(session_id, budget, spent_so_far)

    def budget_status(self, session_id: str) -> BudgetStatus | None:
        """A session's budget against its spend, or ``None`` if it has no budget."""
        _validate.name("session_id", session_id, optional=False)
        return self._budgets.session_status(session_id)

    def budget_applies(self, session_id: str | None = None) -> bool:
        """True when some budget would apply to a call made here (scope, session or default).

        Integrations use it to skip estimating a prompt's size when nothing is limited.
        """
        budgets = self._budgets
        if budgets.active:
            return True
        scope = self.current_scope()
        return scope is not None and bool(scope.budget_refs)

    def _scope_budget_ref(self, scope: Scope) -> Any:
        return self._budgets.scope_ref(scope)

    def _drop_scope_budget(self, scope: Scope) -> None:
        self._budgets.drop_scope(scope)

    def _scope_budget_status(self, scope: Scope) -> BudgetStatus | None:
        if scope.budget is None or not scope.budget_refs:
            return None
        return self._budgets.status(scope.budget_refs[-1])

    def check_budget(
        self,
        estimated_tokens: int = 0,
        *,
        kind: str = "llm",
        model: str | None = None,
        provider: str | None = None,
        estimated_cost_usd: float | Decimal | None = None,
        call_id: object = None,
        session_id: str | None = None,
    ) -> Reservation | None:
        """Reserve budget for a call about to be made, or raise :class:`BudgetExceeded`.

        Integrations call this before each LLM / tool call. The request is checked
        against every budget that applies (the enclosing scopes' and the session's)
        atomically with booking it, so concurrent callers cannot jointly overshoot.
        Recording the call with the same ``call_id`` settles the reservation; a call
        that is not made after all should be given back with :meth:`release`.

        Args:
            estimated_tokens: Prompt tokens the call will send (0 if unknown: the call
                is then refused only when the budget is already spent).
            kind: ``"llm"``, ``"embedding"`` or ``"tool"``.
            model: Model, to estimate the cost of the prompt.
            provider: Provider, for the price lookup.
            estimated_cost_usd: An explicit cost estimate.
            call_id: The id the call will be recorded with. Without one, the next
                record made without a call id in the same thread or task settles it.
            session_id: Session; defaults to the enclosing scope's.

        Returns:
            The reservation, or ``None`` when no budget applies.
        """
        estimated_tokens = _validate.count("estimated_tokens", estimated_tokens)
        if kind not in ("llm", "embedding", "tool"):
            raise ValueError(f"kind must be 'llm', 'embedding' or 'tool', got {kind!r}")
        _validate.name("model", model)
        _validate.name("provider", provider)
        _validate.name("session_id", session_id)
        cost_est = _validate.opt_cost_micros("estimated_cost_usd", estimated_cost_usd)
        call_id = _validate.call_id(call_id)
        stack = STACK.get()
        scope = innermost(self, stack) if stack else None
        if session_id is None and scope is not None:
            session_id = scope.session_id
        refs = self._budgets.refs(scope, session_id)
        if not refs:
            return None
        if kind == "tool":
            request = Spend(0, 0, 0, 0, 0, 1)
        else:
            if cost_est is None:
                cost_est = 0
                if model is not None and estimated_tokens:
                    rates = self.prices.rates(model, provider)
                    if rates is not None:
                        cost_est = rates.cost_micros(estimated_tokens, 0)
            # A call of unknown size still needs one token (and one micro-dollar) left.
            need = max(estimated_tokens, 1)
            llm = 1 if kind == "llm" else 0
            request = Spend(need, need, llm, max(cost_est, 1), llm, 0)
        rid = str(call_id) if call_id is not None else self.new_call_id()
        return self._budgets.reserve(refs, request, rid, self.release, unnamed=call_id is None)

    def release(self, call_id: object) -> None:
        """Give back the reservation booked for ``call_id`` (the call was not made)."""
        call_id = _validate.call_id(call_id)
        if call_id is not None:
            self._budgets.release(str(call_id))
