"""llama-index's OpenAI LLM and embeddings over a faked HTTP transport (real API bodies)."""

from __future__ import annotations

import asyncio
import warnings

import agentmeter_llamaindex as ami
import pytest
from li_fakes import FakeOpenAI
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

import agentmeter

pytestmark = pytest.mark.timeout(60)

MSGS = [ChatMessage(role="user", content="Say hello")]


def make_llm(server: FakeOpenAI, **kwargs: object) -> OpenAI:
    return OpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        max_retries=0,
        http_client=server.client(),
        async_http_client=server.async_client(),
        **kwargs,  # type: ignore[arg-type]
    )


def test_chat_usage_with_cached_tokens_and_cost(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    make_llm(openai_server).chat(MSGS)
    usage = li_tracker.snapshot().by_model["gpt-4o-mini"]
    assert (usage.llm_calls, usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (
        1,
        1200,
        1024,
        20,
    )
    assert usage.estimated_calls == 0 and usage.unpriced_calls == 0
    assert usage.cost_usd is not None and usage.cost_usd > 0
    assert li_tracker.snapshot().by_provider["openai"].llm_calls == 1
    assert openai_server.paths == ["/v1/chat/completions"]


def test_reasoning_tokens(inst: ami.Instrumentor, li_tracker: agentmeter.Tracker) -> None:
    server = FakeOpenAI(
        prompt_tokens=100, cached_tokens=0, completion_tokens=80, reasoning_tokens=64
    )
    make_llm(server).chat(MSGS)
    u = li_tracker.snapshot().totals
    assert (u.output_tokens, u.reasoning_tokens) == (80, 64)


def test_stream_with_include_usage_is_exact(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    llm = make_llm(openai_server, additional_kwargs={"stream_options": {"include_usage": True}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ami.StreamUsageWarning)
        text = "".join(r.delta or "" for r in llm.stream_chat(MSGS))
    assert text.strip() == openai_server.reply
    u = li_tracker.snapshot().totals
    got = (u.llm_calls, u.input_tokens, u.cache_read_tokens, u.output_tokens)
    assert got == (1, 1200, 1024, 20)
    assert u.estimated_calls == 0
    assert openai_server.requests[0]["body"]["stream_options"] == {"include_usage": True}


def test_stream_without_usage_is_estimated_and_warns_once_with_the_fix(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    llm = make_llm(openai_server)
    with pytest.warns(ami.StreamUsageWarning) as caught:
        for _ in range(2):
            for _ in llm.stream_chat(MSGS):
                pass
    assert len(caught) == 1
    assert ami.STREAM_USAGE_FIX in str(caught[0].message)
    assert 'additional_kwargs={"stream_options": {"include_usage": True}}' in ami.STREAM_USAGE_FIX
    u = li_tracker.snapshot().totals
    assert u.llm_calls == 2 and u.estimated_calls == 2
    assert u.input_tokens > 0 and u.output_tokens > 0  # an estimate, never a silent 0
    assert "stream_options" not in openai_server.requests[0]["body"]


def test_stream_usage_opt_in(li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI) -> None:
    inst = ami.instrument(li_tracker, stream_usage=True)
    llm = make_llm(openai_server)

    async def main() -> None:
        async for _ in await llm.astream_chat(MSGS):
            pass

    asyncio.run(main())
    assert openai_server.requests[0]["body"]["stream_options"] == {"include_usage": True}
    u = li_tracker.snapshot().totals
    assert (u.input_tokens, u.output_tokens, u.estimated_calls) == (1200, 20, 0)
    assert inst.errors == []


def test_completion_endpoint(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    llm = OpenAI(
        model="gpt-3.5-turbo-instruct",
        max_tokens=64,  # else llama-index sizes it with tiktoken itself
        api_key="sk-test",
        max_retries=0,
        http_client=openai_server.client(),
    )
    llm.complete("Say hello")
    u = li_tracker.snapshot().totals
    assert (u.llm_calls, u.input_tokens, u.output_tokens, u.estimated_calls) == (1, 1200, 20, 0)
    assert openai_server.paths == ["/v1/completions"]


def test_openai_embedding_counted_exactly(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    embed = OpenAIEmbedding(
        model="text-embedding-3-small",
        api_key="sk-test",
        max_retries=0,
        embed_batch_size=2,
        http_client=openai_server.client(),
        async_http_client=openai_server.async_client(),
    )
    texts = ["first line\nsecond line", "agentmeter meters", "a third\n\ntext"]
    embed.get_text_embedding_batch(texts)
    embed.get_query_embedding("what\nis metered?")
    asyncio.run(embed.aget_text_embedding_batch(texts))
    u = li_tracker.snapshot().by_model["text-embedding-3-small"]
    # The API reported these counts for what it received; llama-index discarded them.
    assert u.embedding_tokens == sum(openai_server.embedding_tokens_reported)
    assert u.embedding_calls == len(openai_server.requests) == 5
    assert u.estimated_calls == 0 and u.unpriced_calls == 0  # priced (27 tokens: < 1 micro-USD)


def test_function_agent_over_openai(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    calls: list[int] = []

    def lookup(city: str) -> str:
        """Weather of a city."""
        calls.append(1)
        return f"sunny in {city}"

    openai_server.script = [[("lookup", '{"city": "Paris"}')], "It is sunny in Paris."]
    llm = make_llm(openai_server, additional_kwargs={"stream_options": {"include_usage": True}})
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(lookup)], llm=llm, name="weather")

    async def main() -> None:
        with li_tracker.meter("turn", session_id="user-1"):
            await asyncio.wait_for(agent.run("Weather in Paris?"), 30)

    asyncio.run(main())
    assert calls == [1]
    session = li_tracker.session("user-1")
    assert session.usage.llm_calls == 2 == len(openai_server.requests)
    assert session.usage.input_tokens == 2 * 1200 and session.usage.estimated_calls == 0
    assert session.tools["lookup"].calls == 1 and session.tools["lookup"].ok == 1
    assert set(session.by_agent) == {"weather"}
