"""The framework half of ``agentmeter demo``: real LangChain / LangGraph and LlamaIndex objects.

Each part runs only when its integration package is installed; nothing here is
imported by ``import agentmeter``. No network: LangChain gets a fake chat model
that reports usage like a provider, LlamaIndex its own ``MockLLM`` and
``MockEmbedding``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import warnings
from collections.abc import AsyncIterator, Callable

from .tracker import Tracker

Say = Callable[[str], None]


def available(package: str) -> bool:
    """True when ``package`` can be imported."""
    return importlib.util.find_spec(package) is not None


def run_langchain(tracker: Tracker, say: Say) -> None:
    """A LangGraph ReAct agent with two tools (one fails), two sessions, one handler."""
    from agentmeter_langchain import AgentMeterCallbackHandler
    from agentmeter_langchain.testing import UsageChat
    from langchain_core.tools import tool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import ToolNode, create_react_agent

    @tool
    def search_docs(query: str) -> str:
        """Search the documentation."""
        return f"3 results for {query}"

    @tool
    def flaky_database(query: str) -> str:
        """Query the database (it is down today)."""
        raise ConnectionError("database unavailable")

    model = UsageChat(
        model_name="gpt-4o-mini", provider="openai", tool_script=["search_docs", "flaky_database"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The failing tool's error goes back to the model as a ToolMessage(status="error").
        tools = ToolNode([search_docs, flaky_database], handle_tool_errors=True)
        agent = create_react_agent(model, tools)
    handler = AgentMeterCallbackHandler(tracker, agent_id="lc-researcher")
    for thread in ("lc-thread-1", "lc-thread-2"):
        agent.invoke(
            {"messages": [("user", f"research {thread}")]},
            config={
                "callbacks": [handler],
                "configurable": {"thread_id": thread},
                # The customer billed for this run (the handler reads it from metadata).
                "metadata": {"customer_id": "initech"},
            },
        )
    say(f"langchain: LangGraph agent ran 2 threads, {model.requests} model requests")


def run_llamaindex(tracker: Tracker, say: Say) -> None:
    """LlamaIndex: MockLLM completions and chat, and a vector index over MockEmbedding."""
    import agentmeter_llamaindex
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    # Mock models have no public price: give them one (a user override beats genai-prices).
    tracker.set_price("MockLLM", input_per_mtok=0.5, output_per_mtok=1.5)
    tracker.set_price("MockEmbedding", input_per_mtok=0.02, output_per_mtok=0)
    agentmeter_llamaindex.instrument(tracker)
    try:
        llm = MockLLM(max_tokens=32)
        embed = MockEmbedding(embed_dim=8)
        with tracker.meter(
            "llamaindex-turn", session_id="li-session", agent_id="li-agent", customer_id="globex"
        ):
            llm.complete("Summarise agentmeter in one line.")
            llm.chat([ChatMessage(role="user", content="And what does it cost?")])
            docs = [Document(text=f"agentmeter note {i}: tokens, cost, tools") for i in range(4)]
            index = VectorStoreIndex.from_documents(docs, embed_model=embed)
            engine = index.as_query_engine(llm=llm)
            asyncio.run(engine.aquery("what does agentmeter meter?"))
    finally:
        agentmeter_llamaindex.uninstrument()
    say("llamaindex: MockLLM complete + chat, VectorStoreIndex over MockEmbedding, one query")


def run_pydantic_ai(tracker: Tracker, say: Say) -> None:
    """pydantic-ai: an agent with the AgentMeter capability, a tool that asks for a retry,
    two sessions from the run's deps, a stream, and a budget that stops a request."""
    from dataclasses import dataclass

    from agentmeter_pydantic_ai import AgentMeter
    from pydantic_ai import Agent, ModelRetry
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import RequestUsage

    from .budget import Budget
    from .errors import BudgetExceeded

    @dataclass
    class Deps:
        session_id: str
        customer_id: str

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # Calls the tool until it answers, then replies; usage as a provider reports it.
        last = messages[-1].parts[-1]
        used = RequestUsage(input_tokens=420, output_tokens=36, cache_read_tokens=256)
        if getattr(last, "part_kind", "") == "tool-return":
            return ModelResponse(parts=[TextPart("Your order ships Monday.")], usage=used)
        return ModelResponse(parts=[ToolCallPart("order_status", {"order": "A-17"})], usage=used)

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for word in ("Thanks ", "for ", "waiting."):
            yield word

    model = FunctionModel(respond, stream_function=stream, model_name="gpt-4o-mini")
    agent = Agent(
        model, name="pa-support", deps_type=Deps, capabilities=[AgentMeter(tracker=tracker)]
    )
    lookups = {"n": 0}

    @agent.tool_plain
    def order_status(order: str) -> str:
        """Look an order up (the first lookup times out and asks the model to retry)."""
        lookups["n"] += 1
        if lookups["n"] == 1:
            raise ModelRetry("order service timed out, try again")
        return f"{order}: packed"

    async def main() -> None:
        for sid in ("pa-session-1", "pa-session-2"):
            await agent.run("Where is my order?", deps=Deps(sid, "acme"))
        async with agent.run_stream("Say thanks", deps=Deps("pa-session-2", "acme")) as run:
            await run.get_output()
        # A budget of one request: the second (after the tool) is stopped before it is sent.
        with tracker.meter("pa-capped", session_id="pa-capped", budget=Budget(max_llm_calls=1)):
            try:
                await agent.run("Where is my order?", deps=Deps("pa-capped", "acme"))
            except BudgetExceeded:
                say("pydantic-ai: budget stopped the 2nd request of pa-capped before it was sent")

    asyncio.run(main())
    say("pydantic-ai: AgentMeter agent ran 2 sessions + a stream, one tool retry (ModelRetry)")


def run_openai_agents(tracker: Tracker, say: Say) -> None:
    """OpenAI Agents SDK: the real OpenAI Responses model over an in-process API, a tool,
    a hand-off, a streamed run, two sessions from the run's context, a budget stop."""
    from agentmeter_openai_agents import instrument, uninstrument
    from agentmeter_openai_agents.testing import MockOpenAI
    from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool

    from .budget import Budget
    from .errors import BudgetExceeded

    api = MockOpenAI(reply="Sunny, 24 C.", tool_args='{"city": "Lisbon"}')
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=api.client())

    @function_tool
    def get_forecast(city: str) -> str:
        """Tomorrow's forecast for a city."""
        return f"{city}: sunny, 24 C"

    settings = ModelSettings(include_usage=True)
    planner = Agent(name="oa_planner", model=model, tools=[get_forecast], model_settings=settings)
    triage = Agent(name="oa_triage", model=model, handoffs=[planner], model_settings=settings)
    # No trace leaves the process (the SDK would export it to OpenAI otherwise).
    config = RunConfig(tracing_disabled=True)

    async def main() -> None:
        ctx = {"session_id": "oa-session-1", "customer_id": "acme"}
        await Runner.run(triage, "Trip to Lisbon?", context=ctx, run_config=config)
        await Runner.run(planner, "Weather in Lisbon?", context=ctx, run_config=config)
        ctx2 = {"session_id": "oa-session-2", "customer_id": "acme"}
        result = Runner.run_streamed(planner, "And tomorrow?", context=ctx2, run_config=config)
        async for _ in result.stream_events():
            pass
        # A budget of one model call: the second request is stopped before it is sent.
        tracker.set_budget("oa-capped", Budget(max_llm_calls=1))
        sent = len(api.requests)
        try:
            capped = {"session_id": "oa-capped", "customer_id": "acme"}
            await Runner.run(planner, "Weather?", context=capped, run_config=config)
        except BudgetExceeded:
            say(
                f"openai-agents: budget stopped oa-capped after {len(api.requests) - sent} "
                "request, before the next was sent"
            )

    instrument(tracker)
    try:
        asyncio.run(main())
    finally:
        uninstrument()
    say(
        f"openai-agents: triage handed off to planner, a tool, a streamed run, "
        f"{len(api.requests)} model requests"
    )
