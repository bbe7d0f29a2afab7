"""AgentMeterCallbackHandler with real LangChain chat models (fakes reporting usage)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
import warnings

import pytest
from _lc_fakes import UsageChat, chat_usage
from agentmeter_langchain import (
    AgentMeterCallbackHandler,
    UnreportedUsageWarning,
    current_tool_run_id,
    instrument,
    instrumented_handler,
    uninstrument,
)
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate

import agentmeter

U1 = chat_usage(1)  # what UsageChat reports for a one-message prompt


def _cfg(handler: AgentMeterCallbackHandler, **metadata: object) -> dict[str, object]:
    return {"callbacks": [handler], "metadata": metadata}


def _assert_one_call_usage(usage: agentmeter.Usage, calls: int = 1) -> None:
    assert usage.llm_calls == calls
    assert usage.input_tokens == U1["input_tokens"] * calls
    assert usage.output_tokens == U1["output_tokens"] * calls
    assert usage.cache_read_tokens == 2 * calls
    assert usage.cache_write_tokens == 1 * calls
    assert usage.reasoning_tokens == 1 * calls
    assert usage.estimated_calls == 0


# --------------------------------------------------------------------- invoke
def test_invoke_records_usage_metadata_with_details(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat()
    model.invoke("hi", config=_cfg(handler, session_id="s1", agent_id="planner"))
    snap = lc_tracker.snapshot()
    _assert_one_call_usage(snap.totals)
    assert set(snap.by_model) == {"fake-usage-model"}
    assert set(snap.by_session) == {"s1"}
    assert set(snap.by_agent) == {"planner"}
    assert snap.by_provider.keys() == {"fakeprov"}
    assert snap.totals.llm_latency_ms > 0
    assert handler._runs == {}  # run state dropped at the end


def test_call_id_is_the_run_id_and_subscribers_see_it(lc_tracker: agentmeter.Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    handler = AgentMeterCallbackHandler(lc_tracker)
    run_id = uuid.uuid4()
    UsageChat().invoke("hi", config={"callbacks": [handler], "run_id": run_id})
    assert len(events) == 1
    assert events[0].call_id == str(run_id)
    assert events[0].kind == "chat" and events[0].status == "ok"


def test_batch_counts_each_input(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker, session_id="b")
    UsageChat().batch(["a", "b", "c", "d"], config={"callbacks": [handler]})
    _assert_one_call_usage(lc_tracker.session("b").usage, calls=4)


def test_generate_with_several_prompts_counts_each(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    UsageChat().generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[handler])
    _assert_one_call_usage(lc_tracker.snapshot().totals, calls=2)


async def test_ainvoke_and_abatch(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat()
    await asyncio.wait_for(model.ainvoke("hi", config={"callbacks": [handler]}), 10)
    await asyncio.wait_for(model.abatch(["a", "b"], config={"callbacks": [handler]}), 10)
    _assert_one_call_usage(lc_tracker.snapshot().totals, calls=3)


def test_chain_with_prompt_template(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | UsageChat()
    chain.invoke({"q": "x"}, config=_cfg(handler, session_id="chain"))
    _assert_one_call_usage(lc_tracker.session("chain").usage)
    assert handler._runs == {}


# -------------------------------------------------------------------- streams
def test_stream_fully_consumed_counts_usage_of_last_chunk(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    chunks = list(UsageChat().stream("hi", config={"callbacks": [handler]}))
    assert len(chunks) > 2
    _assert_one_call_usage(lc_tracker.snapshot().totals)
    assert handler._runs == {}  # a stream's state is its call in flight


async def test_astream_fully_consumed(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)

    async def consume() -> int:
        n = 0
        async for _ in UsageChat().astream("hi", config={"callbacks": [handler]}):
            n += 1
        return n

    assert await asyncio.wait_for(consume(), 10) > 2
    _assert_one_call_usage(lc_tracker.snapshot().totals)


def test_abandoned_stream_is_recorded_with_what_it_got(lc_tracker: agentmeter.Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    handler = AgentMeterCallbackHandler(lc_tracker)
    stream = UsageChat(reply="x" * 40).stream("hi", config={"callbacks": [handler]})
    first = next(stream)
    assert first.content
    stream.close()  # the consumer stops reading: GeneratorExit inside LangChain's stream
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.failed_llm_calls == 0
    assert usage.estimated_calls == 1  # usage comes in the last chunk: the prompt is estimated
    assert usage.input_tokens > 0 and usage.output_tokens == 1  # 4 characters received
    assert handler.abandoned_streams == 1
    assert events[0].metadata == {"stream": "abandoned", "partial": True}
    assert events[0].estimated
    assert handler._runs == {}  # a stream's state is its call in flight


async def test_abandoned_async_stream(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    stream = UsageChat(reply="y" * 40).astream("hi", config={"callbacks": [handler]})
    await asyncio.wait_for(stream.__anext__(), 10)
    await asyncio.wait_for(stream.aclose(), 10)
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert handler.abandoned_streams == 1


def test_stream_that_never_ends_is_recorded_by_flush(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    stream = UsageChat(reply="z" * 40).stream("hi", config={"callbacks": [handler]})
    next(stream)
    next(stream)  # two chunks received, then the consumer just stops (no close)
    assert lc_tracker.snapshot().totals.llm_calls == 0
    assert handler.flush(older_than_s=3600) == 0  # too recent
    assert handler.flush() == 1
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1 and usage.output_tokens == 2
    stream.close()  # a late close does not count it again
    assert lc_tracker.snapshot().totals.llm_calls == 1


def test_stream_without_usage_is_estimated_and_warned_once(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat(report_usage=False)
    with pytest.warns(UnreportedUsageWarning, match="reported no token usage"):
        list(model.stream("hello", config={"callbacks": [handler]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreportedUsageWarning)  # once per model
        list(model.stream("hello", config={"callbacks": [handler]}))
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 2 and usage.estimated_calls == 2
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert handler.unreported_usage_calls == 2


# ------------------------------------------------------------------ fallbacks
def test_llm_output_token_usage_is_a_reported_fallback(lc_tracker: agentmeter.Tracker) -> None:
    class LegacyChat(UsageChat):
        def _generate(self, messages, stop=None, run_manager=None, **kw):  # type: ignore[no-untyped-def]
            result = super()._generate(messages, stop, run_manager, **kw)
            result.generations[0].message.usage_metadata = None  # type: ignore[attr-defined]
            result.llm_output = {
                "token_usage": {
                    "prompt_tokens": 50,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 10},
                    "completion_tokens_details": {"reasoning_tokens": 3},
                },
                "model_name": "legacy-model",
            }
            return result

    handler = AgentMeterCallbackHandler(lc_tracker)
    LegacyChat().invoke("hi", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert (usage.input_tokens, usage.output_tokens) == (50, 7)
    assert (usage.cache_read_tokens, usage.reasoning_tokens) == (10, 3)
    assert usage.estimated_calls == 0


def test_no_usage_at_all_is_estimated_never_a_silent_zero(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = GenericFakeChatModel(messages=iter(["a reply of some length"]))
    with pytest.warns(UnreportedUsageWarning):
        model.invoke("a prompt of some length", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert usage.input_tokens > 0 and usage.output_tokens > 0


def test_completion_llm_is_metered_as_completion(lc_tracker: agentmeter.Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    handler = AgentMeterCallbackHandler(lc_tracker)
    with pytest.warns(UnreportedUsageWarning):
        FakeListLLM(responses=["done"]).invoke("prompt", config={"callbacks": [handler]})
    assert [e.kind for e in events] == ["completion"]
    assert events[0].estimated


# --------------------------------------------------------------------- errors
def test_error_is_a_failed_call(lc_tracker: agentmeter.Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    handler = AgentMeterCallbackHandler(lc_tracker)
    with pytest.raises(RuntimeError, match="provider down"):
        UsageChat(fail_with="provider down").invoke("hi", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.failed_llm_calls == 1
    assert usage.input_tokens == 0
    assert events[0].status == "error" and events[0].error == "RuntimeError"
    assert events[0].model == "fake-usage-model"
    assert handler._runs == {}


# ---------------------------------------------------------------- attribution
def test_scopes_receive_the_records(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    with lc_tracker.meter("outer", session_id="scoped", agent_id="a1") as outer:
        with lc_tracker.meter("inner") as inner:
            UsageChat().invoke("hi", config={"callbacks": [handler]})
        UsageChat().invoke("hi", config={"callbacks": [handler]})
    _assert_one_call_usage(inner.usage)
    _assert_one_call_usage(outer.usage, calls=2)
    assert set(lc_tracker.snapshot().by_session) == {"scoped"}
    assert set(lc_tracker.snapshot().by_agent) == {"a1"}


async def test_scopes_receive_async_records(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    async with lc_tracker.meter("turn", session_id="as") as scope:
        await asyncio.wait_for(UsageChat().ainvoke("hi", config={"callbacks": [handler]}), 10)
    _assert_one_call_usage(scope.usage)


def test_session_and_agent_precedence(lc_tracker: agentmeter.Tracker) -> None:
    model = UsageChat()
    fixed = AgentMeterCallbackHandler(lc_tracker, session_id="handler-s", agent_id="handler-a")
    model.invoke("x", config=_cfg(fixed, session_id="md-s", thread_id="t", agent_id="md-a"))
    plain = AgentMeterCallbackHandler(lc_tracker)
    model.invoke("x", config=_cfg(plain, session_id="md-s", thread_id="t", agent_id="md-a"))
    model.invoke("x", config=_cfg(plain, thread_id="t1", langgraph_node="agent"))
    with lc_tracker.meter("turn", session_id="scope-s", agent_id="scope-a"):
        # LangGraph's implicit ids yield to the enclosing scope
        model.invoke("x", config=_cfg(plain, thread_id="t2", langgraph_node="agent"))
    snap = lc_tracker.snapshot()
    assert {s: u.llm_calls for s, u in snap.by_session.items()} == {
        "handler-s": 1,
        "md-s": 1,
        "t1": 1,
        "scope-s": 1,
    }
    assert {a: u.llm_calls for a, u in snap.by_agent.items()} == {
        "handler-a": 1,
        "md-a": 1,
        "agent": 1,
        "scope-a": 1,
    }


def test_concurrent_threads_exact(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    model = UsageChat()

    def work(i: int) -> None:
        for _ in range(25):
            model.invoke("hi", config=_cfg(handler, session_id=f"s{i % 4}"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    snap = lc_tracker.snapshot()
    _assert_one_call_usage(snap.totals, calls=200)
    assert {s: u.llm_calls for s, u in snap.by_session.items()} == {f"s{i}": 50 for i in range(4)}
    assert handler._runs == {}


# ------------------------------------------------------------ de-duplication
def test_two_handlers_on_one_tracker_count_once(lc_tracker: agentmeter.Tracker) -> None:
    h1 = AgentMeterCallbackHandler(lc_tracker)
    h2 = AgentMeterCallbackHandler(lc_tracker)
    UsageChat().invoke("hi", config={"callbacks": [h1, h2]})
    _assert_one_call_usage(lc_tracker.snapshot().totals)


def test_run_map_is_bounded(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker, max_runs=5)
    streams = [UsageChat().stream("hi", config={"callbacks": [handler]}) for _ in range(8)]
    for s in streams:
        next(s)  # started, one chunk each, never finished
    assert len(handler._runs) <= 5
    # the evicted ones were recorded as abandoned, not lost
    assert handler.abandoned_streams == 3
    for s in streams:
        s.close()
    assert lc_tracker.snapshot().totals.llm_calls == 8
    assert handler._runs == {}  # a stream's state is its call in flight


def test_an_evicted_tool_run_is_forgotten_as_a_tool_run(lc_tracker: agentmeter.Tracker) -> None:
    from agentmeter_langchain import _context

    handler = AgentMeterCallbackHandler(lc_tracker, max_runs=2)
    ids = [uuid.uuid4() for _ in range(3)]

    def body() -> None:  # in a context of its own: the evicted tool's scope stays open
        for run_id in ids:  # tool runs that never end: the first is evicted by the third
            handler.on_tool_start({"name": "search"}, "q", run_id=run_id)
        assert len(handler._runs) == 2
        # The run map keys by the id's int; the tool-run registry by the UUID itself.
        assert ids[0] not in _context._ACTIVE and ids[1] in _context._ACTIVE
        for run_id in ids[1:]:
            handler.on_tool_end("ok", run_id=run_id)

    contextvars.copy_context().run(body)
    assert handler._runs == {} and not any(i in _context._ACTIVE for i in ids)
    assert lc_tracker.snapshot().totals.tool_calls == 2


# ----------------------------------------------------------------- instrument
def test_instrument_is_idempotent_and_meters_without_callbacks(
    lc_tracker: agentmeter.Tracker,
) -> None:
    from langchain_core.tracers.context import _configure_hooks

    before = len(_configure_hooks)
    handler = instrument(lc_tracker)
    for _ in range(5):
        handler = instrument(lc_tracker)
    assert len(_configure_hooks) - before <= 1
    assert instrumented_handler() is handler
    UsageChat().invoke("hi")
    _assert_one_call_usage(lc_tracker.snapshot().totals)
    # explicitly passing the same handler too: still once
    UsageChat().invoke("hi", config={"callbacks": [handler]})
    _assert_one_call_usage(lc_tracker.snapshot().totals, calls=2)
    instrument(lc_tracker)
    assert len(_configure_hooks) - before <= 1
    uninstrument()
    uninstrument()
    assert instrumented_handler() is None
    UsageChat().invoke("hi")
    _assert_one_call_usage(lc_tracker.snapshot().totals, calls=2)


def test_instrument_reaches_new_threads(lc_tracker: agentmeter.Tracker) -> None:
    instrument(lc_tracker)
    t = threading.Thread(target=lambda: UsageChat().invoke("hi"))
    t.start()
    t.join(timeout=30)
    _assert_one_call_usage(lc_tracker.snapshot().totals)


def test_instrument_defaults_to_the_default_tracker(default_tracker: agentmeter.Tracker) -> None:
    assert instrument().tracker is agentmeter.get_tracker()
    UsageChat().invoke("hi")
    _assert_one_call_usage(agentmeter.snapshot().totals)


# --------------------------------------------------------- vs LangChain's own
def test_same_totals_as_usage_metadata_callback_handler(lc_tracker: agentmeter.Tracker) -> None:
    ours = AgentMeterCallbackHandler(lc_tracker)
    anchor = UsageMetadataCallbackHandler()
    cfg = {"callbacks": [ours, anchor]}
    model = UsageChat()
    other = UsageChat(model_name="other-model")
    model.invoke("a", config=cfg)
    model.batch(["b", "c"], config=cfg)
    list(model.stream("d", config=cfg))
    other.invoke([HumanMessage("e"), AIMessage("f"), HumanMessage("g")], config=cfg)
    (ChatPromptTemplate.from_messages([("human", "{q}")]) | other).invoke({"q": "h"}, config=cfg)
    usage = lc_tracker.snapshot()
    assert set(anchor.usage_metadata) == set(usage.by_model)
    for name, um in anchor.usage_metadata.items():
        mine = usage.by_model[name]
        assert mine.input_tokens == um["input_tokens"]
        assert mine.output_tokens == um["output_tokens"]
        assert mine.cache_read_tokens == um["input_token_details"]["cache_read"]
        assert mine.reasoning_tokens == um["output_token_details"]["reasoning"]
    anchor_total = sum(u["input_tokens"] for u in anchor.usage_metadata.values())
    assert usage.totals.input_tokens == anchor_total


# ------------------------------------------------------------------ robustness
def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError):
        AgentMeterCallbackHandler(tracker="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AgentMeterCallbackHandler(session_id="")
    with pytest.raises(ValueError):
        AgentMeterCallbackHandler(max_runs=0)


def test_flags_for_langchain() -> None:
    handler = AgentMeterCallbackHandler(agentmeter.Tracker())
    assert handler.run_inline is True and handler.raise_error is True
    assert current_tool_run_id() is None
