"""agentmeter for LangChain and LangGraph.

Meter chat models, LLMs, streams, tools and LangGraph agents into an agentmeter
tracker, per session, agent, model and tool, with budgets that stop a call
before it is sent::

    import agentmeter
    from agentmeter_langchain import AgentMeterCallbackHandler, instrument

    handler = AgentMeterCallbackHandler()
    graph.invoke(inputs, config={"callbacks": [handler], "configurable": {"thread_id": "s1"}})
    agentmeter.get_tracker().session("s1").tools

    instrument()          # or: meter every run, no callbacks to pass
"""

from __future__ import annotations

from ._context import current_tool_run_id
from ._quiet import install as _install_quiet_budget_stops
from ._quiet import set_quiet_budget_stops
from .embeddings import MeteredEmbeddings
from .handler import AgentMeterCallbackHandler, BudgetNotEnforcedWarning, UnreportedUsageWarning
from .instrument import instrument, instrumented_handler, uninstrument

__all__ = [
    "AgentMeterCallbackHandler",
    "BudgetNotEnforcedWarning",
    "MeteredEmbeddings",
    "UnreportedUsageWarning",
    "current_tool_run_id",
    "instrument",
    "instrumented_handler",
    "set_quiet_budget_stops",
    "uninstrument",
]

# A budget refusal reaches the caller as BudgetExceeded, without LangChain's
# "Error in ... callback" warning (see _quiet.py for why a logging filter).
_install_quiet_budget_stops()
