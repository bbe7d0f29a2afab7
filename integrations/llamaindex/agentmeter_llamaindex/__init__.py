"""agentmeter for LlamaIndex: tokens, cost, tool calls, agents and workflows, with budgets.

Meter everything LlamaIndex does in the process::

    import agentmeter
    import agentmeter_llamaindex

    agentmeter_llamaindex.instrument()          # once; uninstrument() undoes it
    with agentmeter.meter("turn", session_id="s1"):
        await agent.run("...")                   # LLM, embedding and tool calls counted
    agentmeter.get_tracker().session("s1").tools

Budgets stop a call *before* it is made on every path -- LLMs called directly,
query engines, chat engines, agents and workflows::

    with agentmeter.meter("turn", budget=agentmeter.Budget(max_cost_usd=0.50)):
        index.as_query_engine(llm=llm).query("...")   # raises BudgetExceeded, not sent

(The dispatcher cannot stop a call; ``instrument()`` puts its own
``AgentMeterCallbackHandler`` on the callback manager each model is about to call
with. Where nothing can stop a call, ``BudgetNotEnforcedWarning`` says so once.)
"""

from __future__ import annotations

import threading
from importlib.metadata import PackageNotFoundError, version

from agentmeter import Tracker, get_tracker

from ._instrument import Instrumentor
from ._llm import STREAM_USAGE_FIX, BudgetNotEnforcedWarning, StreamUsageWarning
from .callback import AgentMeterCallbackHandler

try:
    __version__ = version("agentmeter-llamaindex")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "STREAM_USAGE_FIX",
    "AgentMeterCallbackHandler",
    "BudgetNotEnforcedWarning",
    "Instrumentor",
    "StreamUsageWarning",
    "__version__",
    "instrument",
    "instrumentor",
    "uninstrument",
]

_lock = threading.Lock()
_current: Instrumentor | None = None


def instrument(
    tracker: Tracker | None = None,
    *,
    session_from_run_id: bool = True,
    stream_usage: bool = False,
    enforce_budgets: bool = True,
) -> Instrumentor:
    """Meter every LlamaIndex LLM, embedding and tool call, agent and workflow run.

    Registers an event handler and a span handler on the root instrumentation
    dispatcher. Idempotent: calling it again with the same arguments returns the
    same :class:`Instrumentor`; with other arguments it replaces it.

    Attribution: a record's session and agent come from ``instrument_tags``
    (``session_id`` / ``agent_id``), else from the caller's ``agentmeter.meter()``
    scopes; a workflow run opens a scope whose session is, when nothing else
    gives one, the workflow's run id (``session_from_run_id``), and whose agent is
    the running agent's name. Tokens spent inside a tool are credited to the tool.

    Args:
        tracker: Where to record (default: ``agentmeter.get_tracker()``).
        session_from_run_id: Use the workflow run id as the session of a run that
            has none from tags or enclosing scopes.
        stream_usage: Make llama-index OpenAI LLMs ask for usage in their streams
            (sets ``additional_kwargs["stream_options"] = {"include_usage": True}`` on
            them). Without it, their streams are estimated and a warning says so.
        enforce_budgets: Refuse a call that would exceed a budget, before it is made
            (``BudgetExceeded``), on every LLM and embedding model: the
            instrumentation adds its :class:`AgentMeterCallbackHandler` to the
            callback manager a model calls with, while a budget applies. ``False``
            meters only (and says once that budgets are not enforced).

    Returns:
        The active :class:`Instrumentor` (its ``errors`` lists internal errors).
    """
    global _current
    tracker = tracker if tracker is not None else get_tracker()
    if not isinstance(tracker, Tracker):
        raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
    with _lock:
        cur = _current
        if (
            cur is not None
            and cur.tracker is tracker
            and cur.session_from_run_id == session_from_run_id
            and cur.stream_usage == stream_usage
            and cur.enforce_budgets == enforce_budgets
        ):
            return cur
        if cur is not None:
            cur.detach()
        if enforce_budgets is not True and enforce_budgets is not False:
            raise TypeError(f"enforce_budgets must be a bool, got {enforce_budgets!r}")
        new = Instrumentor(
            tracker,
            session_from_run_id=session_from_run_id,
            stream_usage=stream_usage,
            enforce_budgets=enforce_budgets,
        )
        new.attach()
        _current = new
        return new


def uninstrument() -> None:
    """Remove what :func:`instrument` registered (a no-op when not instrumented)."""
    global _current
    with _lock:
        cur, _current = _current, None
        if cur is not None:
            cur.detach()


def instrumentor() -> Instrumentor | None:
    """The active :class:`Instrumentor`, or ``None``."""
    return _current
