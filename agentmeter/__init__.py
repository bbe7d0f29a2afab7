"""agentmeter: meter what AI agents spend.

LLM and embedding tokens, cost and tool calls, attributed to the scope, session,
agent, model and tool that spent them, with budgets that stop a run before it
overspends::

    import agentmeter

    @agentmeter.metered_tool(category="search")
    def search(q: str) -> str: ...

    budget = agentmeter.Budget(max_tokens=50_000)
    with agentmeter.meter("turn", session_id="s1", budget=budget) as scope:
        agentmeter.check_budget(estimated_tokens=1200)
        agentmeter.record_llm(model="gpt-4o-mini", input_tokens=1200, output_tokens=80)
    print(scope.usage, agentmeter.get_tracker().session("s1").tools)

Every module-level function is a bound method of the process-wide default
tracker (:func:`get_tracker`); ``Tracker()`` makes an isolated one.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# _display and frames register themselves as the value objects' renderers (_render).
from . import _default_tracker, _display, frames  # noqa: F401
from .budget import Budget, BudgetStore, InMemoryBudgetStore, Reservation
from .errors import AgentMeterError, BudgetExceeded, BudgetStoreUnavailable, NotFoundError
from .models import (
    BudgetAlert,
    BudgetRefusal,
    BudgetStatus,
    CustomerUsage,
    SessionUsage,
    Snapshot,
    ToolStats,
    Usage,
    UsageCell,
    UsageEvent,
)
from .pricing import UnpricedModelWarning, normalise_model
from .scope import Scope, register_call_id_provider, run_in_context
from .tracker import Tracker

try:
    __version__ = version("agentmeter-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_default = Tracker()
_default_tracker.install(_default)


def get_tracker() -> Tracker:
    """The process-wide default tracker that the module-level functions use."""
    return _default


record_llm = _default.record_llm
record_embedding = _default.record_embedding
record_tool_call = _default.record_tool_call
record_cache_hit = _default.record_cache_hit
record_cache_miss = _default.record_cache_miss
meter = _default.meter
metered = _default.metered
metered_tool = _default.metered_tool
current_scope = _default.current_scope
check_budget = _default.check_budget
release = _default.release
set_budget = _default.set_budget
budget_status = _default.budget_status
subscribe_alerts = _default.subscribe_alerts
unsubscribe_alerts = _default.unsubscribe_alerts
set_tool_price = _default.set_tool_price
set_price = _default.set_price
configure = _default.configure
snapshot = _default.snapshot
snapshot_and_reset = _default.snapshot_and_reset
reset = _default.reset
merge = _default.merge
session = _default.session
customer = _default.customer
close_session = _default.close_session
tool_stats = _default.tool_stats
subscribe = _default.subscribe
unsubscribe = _default.unsubscribe

__all__ = [
    "AgentMeterError",
    "Budget",
    "BudgetAlert",
    "BudgetExceeded",
    "BudgetRefusal",
    "BudgetStatus",
    "BudgetStore",
    "BudgetStoreUnavailable",
    "CustomerUsage",
    "InMemoryBudgetStore",
    "NotFoundError",
    "Reservation",
    "Scope",
    "SessionUsage",
    "Snapshot",
    "ToolStats",
    "Tracker",
    "UnpricedModelWarning",
    "Usage",
    "UsageCell",
    "UsageEvent",
    "__version__",
    "budget_status",
    "check_budget",
    "close_session",
    "configure",
    "current_scope",
    "customer",
    "get_tracker",
    "merge",
    "meter",
    "metered",
    "metered_tool",
    "normalise_model",
    "record_cache_hit",
    "record_cache_miss",
    "record_embedding",
    "record_llm",
    "record_tool_call",
    "register_call_id_provider",
    "release",
    "reset",
    "run_in_context",
    "session",
    "set_budget",
    "set_price",
    "set_tool_price",
    "snapshot",
    "snapshot_and_reset",
    "subscribe",
    "subscribe_alerts",
    "tool_stats",
    "unsubscribe",
    "unsubscribe_alerts",
]
