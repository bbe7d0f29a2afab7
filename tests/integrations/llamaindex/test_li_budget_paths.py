"""Budgets hold on every LlamaIndex path: the call is not made, ``BudgetExceeded`` propagates.

Real LlamaIndex classes throughout (VectorStoreIndex over MockEmbedding, query and
chat engines, FunctionAgent, ReActAgent, a Workflow, FunctionTool) with models
that count the requests they received; the issue's case (the legacy handler on
the LLM's callback manager, which a query engine replaces) with llama-index's
OpenAI client over a mock transport. Where nothing can stop a call, agentmeter
says so once (``BudgetNotEnforcedWarning`` and a log record).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import agentmeter_llamaindex as ami
import pytest
from li_fakes import FakeOpenAI
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step
from llama_index.llms.openai import OpenAI
from pydantic import PrivateAttr

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.filterwarnings("ignore::agentmeter_llamaindex.StreamUsageWarning"),
    pytest.mark.timeout(120),
]

NONE = agentmeter.Budget(max_llm_calls=0)
DOCS = [Document(text=f"agentmeter fact number {i}: budgets hold.") for i in range(4)]


class CountingLLM(CustomLLM):
    """A completion model that counts the requests it received (chat comes through it)."""

    reply: str = "an answer"
    _requests: list[str] = PrivateAttr(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self._requests)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="counting-llm", num_output=64)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._requests.append(prompt)
        return CompletionResponse(text=self.reply)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        self._requests.append(prompt)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=self.reply, delta=self.reply)

        return gen()


class CountingEmbedding(MockEmbedding):
    _queries: list[str] = PrivateAttr(default_factory=list)

    def _get_query_embedding(self, query: str) -> list[float]:
        self._queries.append(query)
        return super()._get_query_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        self._queries.append(query)
        return super()._get_query_embedding(query)


def counting_fc_llm() -> tuple[MockFunctionCallingLLM, list[int]]:
    """llama-index's function-calling mock, counting the requests its generator answers."""
    llm = MockFunctionCallingLLM()
    default = llm.response_generator
    seen: list[int] = []

    def generator(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        seen.append(len(messages))
        return default(messages, **kwargs)

    llm.response_generator = generator
    return llm, seen


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    saved_llm, saved_emb = Settings._llm, Settings._embed_model
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield
    Settings._llm, Settings._embed_model = saved_llm, saved_emb


WIRINGS = ("instrument", "handler_on_llm", "settings_handler")


def wire(mode: str, tracker: agentmeter.Tracker, llm: Any) -> None:
    """Meter ``llm`` the way ``mode`` says (as users do)."""
    if mode == "instrument":
        ami.instrument(tracker)
    elif mode == "handler_on_llm":
        llm.callback_manager = CallbackManager([ami.AgentMeterCallbackHandler(tracker)])
    else:
        Settings.callback_manager = CallbackManager([ami.AgentMeterCallbackHandler(tracker)])


def _refused(tracker: agentmeter.Tracker, fn: Callable[[], Any]) -> None:
    with pytest.raises(agentmeter.BudgetExceeded, match="max_llm_calls"):
        with tracker.meter("turn", budget=NONE):
            fn()


def _arefused(tracker: agentmeter.Tracker, fn: Callable[[], Any]) -> None:
    async def main() -> None:
        async with tracker.meter("turn", budget=NONE):
            await asyncio.wait_for(fn(), 30)

    with pytest.raises(agentmeter.BudgetExceeded, match="max_llm_calls"):
        asyncio.run(main())


# ------------------------------------------------------------ the issue's case
def test_issue_case_query_engine_over_the_real_openai_client(
    li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI, index: VectorStoreIndex
) -> None:
    """The legacy handler on the LLM's callback manager: the query engine replaces it."""
    llm = OpenAI(
        model="gpt-4o-mini", api_key="sk-test", max_retries=0, http_client=openai_server.client()
    )
    llm.callback_manager = CallbackManager([ami.AgentMeterCallbackHandler(li_tracker)])
    engine = index.as_query_engine(llm=llm)
    _refused(li_tracker, lambda: engine.query("what holds?"))
    assert [p for p in openai_server.paths if p.endswith("/chat/completions")] == []
    assert li_tracker.snapshot().totals.llm_calls == 0
    # And without a budget the same engine answers, metered.
    engine.query("what holds?")
    assert len(openai_server.requests) == 1
    assert li_tracker.snapshot().totals.llm_calls == 1


# ------------------------------------------------------------- query engines
@pytest.mark.parametrize("mode", WIRINGS)
@pytest.mark.parametrize("streaming", [False, True])
def test_query_engine(
    mode: str, streaming: bool, li_tracker: agentmeter.Tracker, index: VectorStoreIndex
) -> None:
    llm = CountingLLM()
    wire(mode, li_tracker, llm)
    engine = index.as_query_engine(llm=llm, streaming=streaming)

    def query() -> Any:
        response = engine.query("what holds?")
        # A streaming answer asks the model when it is read (llm.stream is lazy).
        return list(response.response_gen) if streaming else response

    async def aquery() -> Any:
        response = await engine.aquery("what holds?")
        return [t async for t in response.async_response_gen()] if streaming else response

    _refused(li_tracker, query)
    assert llm.requests == 0
    _arefused(li_tracker, aquery)
    assert llm.requests == 0


@pytest.mark.parametrize("mode", WIRINGS)
def test_query_engine_allows_then_stops(
    mode: str, li_tracker: agentmeter.Tracker, index: VectorStoreIndex
) -> None:
    """One call allowed: the first query is answered (no double booking), the next refused."""
    llm = CountingLLM()
    wire(mode, li_tracker, llm)
    engine = index.as_query_engine(llm=llm)
    with li_tracker.meter("job", budget=agentmeter.Budget(max_llm_calls=1)) as scope:
        engine.query("first")
        with pytest.raises(agentmeter.BudgetExceeded):
            engine.query("second")
    assert llm.requests == 1
    assert scope.usage.llm_calls == 1
    status = scope.budget_status
    assert status is not None and set(status.reserved.values()) == {0}


def test_session_budget_through_instrument_tags(
    li_tracker: agentmeter.Tracker, index: VectorStoreIndex
) -> None:
    from llama_index.core.instrumentation.dispatcher import instrument_tags

    llm = CountingLLM()
    ami.instrument(li_tracker)
    li_tracker.set_budget("tenant", agentmeter.Budget(max_llm_calls=1))
    engine = index.as_query_engine(llm=llm)
    with instrument_tags({"session_id": "tenant"}):
        engine.query("one")
        with pytest.raises(agentmeter.BudgetExceeded):
            engine.query("two")
    assert llm.requests == 1 and li_tracker.session("tenant").usage.llm_calls == 1


def test_embedding_of_the_query_is_refused(
    li_tracker: agentmeter.Tracker, index: VectorStoreIndex
) -> None:
    embed = CountingEmbedding(embed_dim=8)
    ami.instrument(li_tracker)
    retriever = index.as_retriever(embed_model=embed)
    with pytest.raises(agentmeter.BudgetExceeded, match="max_tokens"):
        with li_tracker.meter("job", budget=agentmeter.Budget(max_tokens=0)):
            retriever.retrieve("a query of some tokens")
    assert embed._queries == []


# -------------------------------------------------------------- chat engines
# A chat engine's stream_chat drains the model's stream in a thread of its own, which
# re-raises what it hit after handing it to the reader (response_gen): llama-index's
# thread reports the refusal too, as it does any error of a stream.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("mode", WIRINGS)
@pytest.mark.parametrize("chat_mode", ["condense_plus_context", "context", "simple"])
def test_chat_engine(
    mode: str, chat_mode: str, li_tracker: agentmeter.Tracker, index: VectorStoreIndex
) -> None:
    llm = CountingLLM()
    wire(mode, li_tracker, llm)
    engine = index.as_chat_engine(chat_mode=chat_mode, llm=llm)
    _refused(li_tracker, lambda: engine.chat("hello"))
    _refused(li_tracker, lambda: engine.stream_chat("hello").response_gen.__next__())
    _arefused(li_tracker, lambda: engine.achat("hello"))
    assert llm.requests == 0


# -------------------------------------------------------- agents, workflows
@pytest.mark.parametrize("mode", WIRINGS)
def test_function_agent(mode: str, li_tracker: agentmeter.Tracker) -> None:
    llm, seen = counting_fc_llm()
    wire(mode, li_tracker, llm)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=llm)
    _arefused(li_tracker, lambda: agent.run("add them"))
    assert seen == []


def test_function_agent_over_the_real_openai_client(
    li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    openai_server.script = [[("add", '{"a": 2, "b": 3}')], "5"]
    llm = OpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        max_retries=0,
        http_client=openai_server.client(),
        async_http_client=openai_server.async_client(),
    )
    ami.instrument(li_tracker)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=llm)

    async def main() -> None:
        async with li_tracker.meter("run", budget=agentmeter.Budget(max_llm_calls=1)):
            await asyncio.wait_for(agent.run("add 2 and 3"), 30)

    with pytest.raises(agentmeter.BudgetExceeded):
        asyncio.run(main())
    assert len(openai_server.requests) == 1  # the tool turn; the answer turn was refused
    assert li_tracker.snapshot().totals.llm_calls == 1
    assert li_tracker.snapshot().totals.tool_calls == 1


@pytest.mark.parametrize("mode", WIRINGS)
def test_react_agent(mode: str, li_tracker: agentmeter.Tracker) -> None:
    llm = CountingLLM()
    wire(mode, li_tracker, llm)
    agent = ReActAgent(tools=[FunctionTool.from_defaults(add)], llm=llm)
    _arefused(li_tracker, lambda: agent.run("add them"))
    assert llm.requests == 0


class AskWorkflow(Workflow):
    def __init__(self, llm: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.llm = llm

    @step
    async def ask(self, ev: StartEvent) -> StopEvent:
        answer = await self.llm.acomplete(str(ev.get("question")))
        return StopEvent(result=answer.text)


@pytest.mark.parametrize("mode", WIRINGS)
def test_workflow(mode: str, li_tracker: agentmeter.Tracker) -> None:
    llm = CountingLLM()
    wire(mode, li_tracker, llm)
    wf = AskWorkflow(llm, timeout=30)
    _arefused(li_tracker, lambda: wf.run(question="why?"))
    assert llm.requests == 0


@pytest.mark.parametrize("mode", WIRINGS)
def test_direct_llm_calls(mode: str, li_tracker: agentmeter.Tracker) -> None:
    llm = CountingLLM()
    wire(mode, li_tracker, llm)
    msgs = [ChatMessage(role="user", content="hi")]
    _refused(li_tracker, lambda: llm.complete("hi"))
    _refused(li_tracker, lambda: llm.chat(msgs))
    _refused(li_tracker, lambda: llm.stream_complete("hi"))
    _arefused(li_tracker, lambda: llm.achat(msgs))
    assert llm.requests == 0


# ------------------------------------------------------------------ tools
RAN: list[str] = []


def add(a: int = 1, b: int = 2) -> int:
    """Add two numbers."""
    RAN.append("add")
    return a + b


def test_function_tool_refused_before_its_body(
    li_tracker: agentmeter.Tracker,
) -> None:
    RAN.clear()
    ami.instrument(li_tracker)
    tool = FunctionTool.from_defaults(add)
    with li_tracker.meter("run", budget=agentmeter.Budget(tool_limits={"add": 1})) as scope:
        assert tool.call(a=1, b=2).raw_output == 3
        with pytest.raises(agentmeter.BudgetExceeded, match="add"):
            tool.call(a=1, b=2)
        with pytest.raises(agentmeter.BudgetExceeded):
            asyncio.run(tool.acall(a=1, b=2))
        with pytest.raises(agentmeter.BudgetExceeded):
            tool(a=1, b=2)  # __call__ -> call: one call, refused once
    assert RAN == ["add"]
    assert scope.usage.tool_calls == 1
    assert li_tracker.snapshot().by_tool["add"].calls == 1


def test_agent_tool_limit_refuses_the_tool(li_tracker: agentmeter.Tracker) -> None:
    """In a FunctionAgent, LlamaIndex turns the refusal into an error result for the model
    (BaseWorkflowAgent._call_tool catches tool exceptions): the body never runs."""
    RAN.clear()
    llm, _ = counting_fc_llm()
    ami.instrument(li_tracker)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=llm)

    async def main() -> Any:
        async with li_tracker.meter("run", budget=agentmeter.Budget(max_tool_calls=0)):
            return await asyncio.wait_for(agent.run("add"), 30)

    asyncio.run(main())
    assert RAN == []
    assert li_tracker.snapshot().totals.tool_calls == 0


def test_priced_tool_reserves_its_cost(li_tracker: agentmeter.Tracker) -> None:
    RAN.clear()
    ami.instrument(li_tracker)
    li_tracker.set_tool_price("add", 0.01)
    tool = FunctionTool.from_defaults(add)
    with li_tracker.meter("run", budget=agentmeter.Budget(max_cost_usd=0.025)) as scope:
        tool.call()
        tool.call()
        with pytest.raises(agentmeter.BudgetExceeded, match="max_cost_usd"):
            tool.call()  # 0.03 > 0.025: refused before it runs
    assert RAN == ["add", "add"]
    assert str(scope.usage.cost_usd) in {"0.02", "0.020000"}


class Opaque(AsyncBaseTool):
    """A tool agentmeter cannot stop before it runs (not a FunctionTool)."""

    @property
    def metadata(self) -> ToolMetadata:
        return ToolMetadata(name="opaque", description="Runs.")

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        RAN.append("opaque")
        return ToolOutput(content="ok", tool_name="opaque", raw_input={}, raw_output="ok")

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self.call()


def test_unstoppable_tool_is_said_once_loudly(
    li_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    RAN.clear()
    ami.instrument(li_tracker)
    tool = Opaque()
    with li_tracker.meter("run", budget=agentmeter.Budget(max_tool_calls=0)) as scope:
        with pytest.warns(ami.BudgetNotEnforcedWarning, match="FunctionTool"):
            tool.call()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ami.BudgetNotEnforcedWarning)
            tool.call()  # once, not per call
    assert RAN == ["opaque", "opaque"]
    assert scope.usage.tool_calls == 2  # counted, as it ran
    records = [r for r in caplog.records if r.name == "agentmeter.llamaindex"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING


# ----------------------------------------------------- saying so, loudly
def test_unenforced_budget_is_said_once_loudly(
    li_tracker: agentmeter.Tracker, caplog: pytest.LogCaptureFixture, index: VectorStoreIndex
) -> None:
    llm = CountingLLM()
    ami.instrument(li_tracker, enforce_budgets=False)
    engine = index.as_query_engine(llm=llm)
    with li_tracker.meter("turn", budget=NONE) as scope:
        with pytest.warns(ami.BudgetNotEnforcedWarning, match="enforce_budgets=True"):
            engine.query("q")
        with warnings.catch_warnings():
            warnings.simplefilter("error", ami.BudgetNotEnforcedWarning)
            engine.query("q")
    assert llm.requests == 2 and scope.usage.llm_calls == 2
    records = [r for r in caplog.records if r.name == "agentmeter.llamaindex"]
    assert len(records) == 1 and "could not stop" in records[0].getMessage()


def test_enforced_budget_warns_nothing(
    li_tracker: agentmeter.Tracker, index: VectorStoreIndex
) -> None:
    ami.instrument(li_tracker)
    engine = index.as_query_engine(llm=CountingLLM())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ami.BudgetNotEnforcedWarning)
        with li_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=5)):
            engine.query("q")


def test_uninstrument_takes_the_gate_off(li_tracker: agentmeter.Tracker) -> None:
    llm = CountingLLM()
    inst = ami.instrument(li_tracker)
    with li_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=5)):
        llm.complete("hi")
    assert any(isinstance(h, ami.AgentMeterCallbackHandler) for h in llm.callback_manager.handlers)
    ami.uninstrument()
    assert not inst.attached
    assert not any(
        isinstance(h, ami.AgentMeterCallbackHandler) for h in llm.callback_manager.handlers
    )
    with li_tracker.meter("turn", budget=NONE):
        llm.complete("not metered, not refused")  # nothing of agentmeter is left on it
    assert llm.requests == 2


def test_no_budget_leaves_callback_managers_alone(li_tracker: agentmeter.Tracker) -> None:
    llm = CountingLLM()
    ami.instrument(li_tracker)
    before = list(llm.callback_manager.handlers)
    llm.complete("hi")
    assert llm.callback_manager.handlers == before
    with pytest.raises(TypeError, match="enforce_budgets"):
        ami.instrument(li_tracker, enforce_budgets="yes")  # type: ignore[arg-type]


def test_metered_tool_function_is_reserved_once(li_tracker: agentmeter.Tracker) -> None:
    """A FunctionTool over an @metered_tool function: one call, one reservation."""
    RAN.clear()
    ami.instrument(li_tracker)
    li_tracker.set_tool_price("lookup", 0.01)

    @li_tracker.metered_tool(name="lookup")
    def lookup(q: str = "x") -> str:
        """Looks something up."""
        RAN.append("lookup")
        return "found"

    tool = FunctionTool.from_defaults(lookup, name="lookup")
    budget = agentmeter.Budget(tool_limits={"lookup": 1}, max_cost_usd=0.015)
    with li_tracker.meter("run", budget=budget) as scope:
        tool.call(q="a")
        with pytest.raises(agentmeter.BudgetExceeded):
            tool.call(q="b")
    assert RAN == ["lookup"]
    assert scope.usage.tool_calls == 1
    assert scope.usage.cost_usd is not None and float(scope.usage.cost_usd) == 0.01


def test_tool_limit_is_per_name_and_per_session(li_tracker: agentmeter.Tracker) -> None:
    from llama_index.core.instrumentation.dispatcher import instrument_tags

    RAN.clear()
    ami.instrument(li_tracker)
    li_tracker.set_budget("s1", agentmeter.Budget(tool_limits={"add": 1}))
    tool = FunctionTool.from_defaults(add)
    other = FunctionTool.from_defaults(add, name="plus")
    with instrument_tags({"session_id": "s1"}):
        tool.call()
        with pytest.raises(agentmeter.BudgetExceeded):
            tool.call()
        other.call()  # another tool name: not limited
    tool.call()  # another session: not limited
    assert RAN == ["add", "add", "add"]
    assert li_tracker.session("s1").usage.tool_calls == 2


def test_gate_on_settings_manager_is_inert_after_uninstrument(
    li_tracker: agentmeter.Tracker,
) -> None:
    """A manager built later without handlers shares Settings' list, gate included."""
    Settings.callback_manager = CallbackManager([])
    ami.instrument(li_tracker)
    llm = CountingLLM(callback_manager=Settings.callback_manager)
    with li_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=5)):
        llm.complete("puts the gate on Settings' manager")
    late = CallbackManager()  # shares Settings' handler list: the gate is in it
    assert any(isinstance(h, ami.AgentMeterCallbackHandler) for h in late.handlers)
    ami.uninstrument()
    other = CountingLLM(callback_manager=late)
    with li_tracker.meter("turn", budget=NONE):
        other.complete("agentmeter is off: neither metered nor refused")
    assert other.requests == 1
