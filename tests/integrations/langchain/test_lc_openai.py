"""``langchain_openai.ChatOpenAI`` over an httpx mock transport: what the client parses is counted.

The mock serves real OpenAI bodies: a ``chat.completion`` with
``usage.prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``, and SSE streams whose final
``include_usage`` chunk is sent only when the request asked for it (as the API does).
"""

from __future__ import annotations

import asyncio
import warnings

import pytest

pytest.importorskip("langchain_openai")
pytest.importorskip("httpx")

import openai
from _lc_fakes import OPENAI_MODEL, OPENAI_USAGE, OpenAIMock
from agentmeter_langchain import AgentMeterCallbackHandler, UnreportedUsageWarning
from langchain_core.callbacks import UsageMetadataCallbackHandler

import agentmeter

IN = OPENAI_USAGE["prompt_tokens"]
OUT = OPENAI_USAGE["completion_tokens"]
CACHED = OPENAI_USAGE["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
REASONING = OPENAI_USAGE["completion_tokens_details"]["reasoning_tokens"]  # type: ignore[index]


def _assert_openai_usage(usage: agentmeter.Usage, calls: int = 1) -> None:
    assert usage.llm_calls == calls
    assert usage.input_tokens == IN * calls
    assert usage.output_tokens == OUT * calls
    assert usage.cache_read_tokens == CACHED * calls
    assert usage.reasoning_tokens == REASONING * calls
    assert usage.estimated_calls == 0


def test_invoke_counts_cached_and_reasoning_tokens_and_prices(
    lc_tracker: agentmeter.Tracker,
) -> None:
    mock = OpenAIMock()
    handler = AgentMeterCallbackHandler(lc_tracker, session_id="oa")
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    reply = mock.chat().invoke("Say hello", config={"callbacks": [handler]})
    assert reply.content == mock.text
    assert len(mock.requests) == 1
    usage = lc_tracker.session("oa").usage
    _assert_openai_usage(usage)
    # the served (dated) model, priced through agentmeter's price book
    assert events[0].model == OPENAI_MODEL and events[0].provider == "openai"
    assert usage.unpriced_calls == 0 and usage.cost_micros > 0


def test_same_totals_as_usage_metadata_callback_handler(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock()
    ours = AgentMeterCallbackHandler(lc_tracker)
    anchor = UsageMetadataCallbackHandler()
    chat = mock.chat(stream_usage=True)
    cfg = {"callbacks": [ours, anchor]}
    chat.invoke("a", config=cfg)
    list(chat.stream("b", config=cfg))
    chat.batch(["c", "d"], config=cfg)
    um = anchor.usage_metadata[OPENAI_MODEL]
    totals = lc_tracker.snapshot().totals
    assert (totals.input_tokens, totals.output_tokens) == (um["input_tokens"], um["output_tokens"])
    assert totals.cache_read_tokens == um["input_token_details"]["cache_read"]
    assert totals.reasoning_tokens == um["output_token_details"]["reasoning"]
    _assert_openai_usage(totals, calls=4)


def test_stream_with_include_usage(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock()
    handler = AgentMeterCallbackHandler(lc_tracker)
    text = "".join(
        str(c.content)
        for c in mock.chat(stream_usage=True).stream("hi", config={"callbacks": [handler]})
    )
    assert text == mock.text
    assert mock.requests[0]["stream_options"] == {"include_usage": True}
    _assert_openai_usage(lc_tracker.snapshot().totals)


def test_gateway_stream_without_usage_is_estimated_and_warns_the_fix(
    lc_tracker: agentmeter.Tracker,
) -> None:
    mock = OpenAIMock(text="A fairly long answer from a proxy that sends no usage at all.")
    handler = AgentMeterCallbackHandler(lc_tracker)
    chat = mock.chat()  # base_url set, stream_usage not: no stream_options sent
    with pytest.warns(UnreportedUsageWarning, match=r"stream_usage=True to ChatOpenAI"):
        list(chat.stream("What is agentmeter?", config={"callbacks": [handler]}))
    assert "stream_options" not in mock.requests[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreportedUsageWarning)  # once per model
        list(chat.stream("again", config={"callbacks": [handler]}))
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 2 and usage.estimated_calls == 2
    assert usage.input_tokens > 0 and usage.output_tokens >= len(mock.text) // 4


async def test_async_invoke_and_stream(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock()
    handler = AgentMeterCallbackHandler(lc_tracker)
    chat = mock.chat(stream_usage=True)

    async def run() -> None:
        await chat.ainvoke("a", config={"callbacks": [handler]})
        async for _ in chat.astream("b", config={"callbacks": [handler]}):
            pass
        await asyncio.gather(*(chat.ainvoke(q, config={"callbacks": [handler]}) for q in "cd"))

    await asyncio.wait_for(run(), 20)
    _assert_openai_usage(lc_tracker.snapshot().totals, calls=4)
    assert handler._runs == {}


def test_http_error_is_a_failed_call(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock(status=500)
    handler = AgentMeterCallbackHandler(lc_tracker)
    with pytest.raises(openai.InternalServerError):
        mock.chat().invoke("hi", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.failed_llm_calls == 1 and usage.input_tokens == 0


def test_budget_blocks_the_request_sync(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock()
    handler = AgentMeterCallbackHandler(lc_tracker)
    chat = mock.chat()
    lc_tracker.set_budget("capped", agentmeter.Budget(max_tokens=2 * (IN + OUT) + 3))
    cfg = {"callbacks": [handler], "metadata": {"session_id": "capped"}}
    chat.invoke("one", config=cfg)
    chat.invoke("two", config=cfg)
    # 3 tokens left; the prompt "three" is estimated at more: refused before it is sent
    with pytest.raises(agentmeter.BudgetExceeded, match="max_tokens"):
        chat.invoke("three", config=cfg)
    assert len(mock.requests) == 2  # the third request was never sent
    assert lc_tracker.session("capped").usage.llm_calls == 2


async def test_budget_blocks_the_request_async(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock()
    handler = AgentMeterCallbackHandler(lc_tracker)
    chat = mock.chat(stream_usage=True)
    with pytest.raises(agentmeter.BudgetExceeded):
        async with lc_tracker.meter("turn", budget=agentmeter.Budget(max_llm_calls=1)) as scope:
            await asyncio.wait_for(chat.ainvoke("one", config={"callbacks": [handler]}), 10)

            async def consume() -> None:
                async for _ in chat.astream("two", config={"callbacks": [handler]}):
                    pass

            await asyncio.wait_for(consume(), 10)
    assert len(mock.requests) == 1
    _assert_openai_usage(scope.usage)
