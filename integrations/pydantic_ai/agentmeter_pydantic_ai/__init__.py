"""agentmeter for pydantic-ai: tokens, cost, tool calls and budgets, checked before each request.

Meter an agent's runs with its capability::

    import agentmeter
    from pydantic_ai import Agent
    from agentmeter_pydantic_ai import AgentMeter

    agent = Agent("openai:gpt-4o", name="support", capabilities=[AgentMeter()])
    with agentmeter.meter("turn", session_id="s1", budget=agentmeter.Budget(max_usd=1)):
        await agent.run("...")    # BudgetExceeded before a request that would overspend
    agentmeter.get_tracker().session("s1").usage

or one run only (``agent.run(..., capabilities=[AgentMeter(session_id="s1")])``),
or just a model's requests (``Agent(metered("openai:gpt-4o"))``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._usage import from_request_usage
from .capability import AgentMeter
from .model import MeteredModel, metered

try:
    __version__ = version("agentmeter-pydantic-ai")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AgentMeter",
    "MeteredModel",
    "__version__",
    "from_request_usage",
    "metered",
]
