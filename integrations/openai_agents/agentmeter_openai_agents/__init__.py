"""agentmeter for the OpenAI Agents SDK.

Meter every model call (tokens with cached and reasoning parts, model, the agent
that made it), tool call (duration, failures) and streamed run of an agent run
into an agentmeter tracker, per session, customer, agent, model and tool, with
budgets that stop the next model or tool call before it is made::

    import agentmeter
    from agents import Runner
    from agentmeter_openai_agents import AgentMeterRunHooks, instrument

    instrument()                      # every run of the process, or per run:
    await Runner.run(agent, "hi", hooks=AgentMeterRunHooks(session_id="s1"))
    agentmeter.get_tracker().session("s1").usage
"""

from __future__ import annotations

from .errors import BudgetExceeded
from .hooks import AgentMeterRunHooks, UnreportedUsageWarning
from .instrument import instrument, instrumented_hooks, uninstrument

__all__ = [
    "AgentMeterRunHooks",
    "BudgetExceeded",
    "UnreportedUsageWarning",
    "instrument",
    "instrumented_hooks",
    "uninstrument",
]
