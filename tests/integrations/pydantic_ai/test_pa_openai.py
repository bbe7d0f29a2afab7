"""The real OpenAIChatModel and OpenAIResponsesModel over a mock transport serving recorded
bodies: agentmeter's counts side by side with pydantic-ai's own usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from agentmeter_pydantic_ai import AgentMeter, metered
from pa_fakes import (
    FakeOpenAI,
    chat_body,
    chat_stream,
    recorded,
    responses_stream,
    tool_call_body,
    usage,
)
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

import agentmeter

pytestmark = pytest.mark.timeout(60)


def _events(tracker: agentmeter.Tracker) -> list[agentmeter.UsageEvent]:
    seen: list[agentmeter.UsageEvent] = []
    tracker.subscribe(seen.append)
    return seen


def _llm(events: list[agentmeter.UsageEvent]) -> list[agentmeter.UsageEvent]:
    return [e for e in events if e.kind not in ("tool", "embedding", "cache")]


def _response_costs(messages: list[Any]) -> Decimal:
    costs = [m.usage.cost for m in messages if isinstance(m, ModelResponse)]
    assert all(c is not None for c in costs)
    return sum(costs, Decimal(0))


async def test_chat_completion_details_equal_pydantic_ai_usage(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    body = recorded("openai_chat_completion_cached_reasoning_audio")
    fake_openai.queue_json(body)
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model("gpt-4o-audio-preview"),
        name="describer",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-chat")],
    )
    result = await agent.run("Describe the picture")

    ours = pa_tracker.session("s-chat").usage
    theirs = result.usage
    assert (ours.input_tokens, ours.output_tokens) == (theirs.input_tokens, theirs.output_tokens)
    assert (ours.input_tokens, ours.output_tokens) == (2006, 300)
    assert ours.cache_read_tokens == theirs.cache_read_tokens == 1920
    assert ours.cache_write_tokens == theirs.cache_write_tokens == 0
    assert ours.reasoning_tokens == theirs.details["reasoning_tokens"] == 64
    assert ours.llm_calls == theirs.requests == 1
    [event] = _llm(events)
    assert event.model == "gpt-4o-audio-preview-2024-12-17"  # the model that answered
    assert event.provider == "openai"
    assert event.agent_id == "describer"
    assert not event.estimated
    assert len(fake_openai.requests) == 1


async def test_responses_api_reasoning_equal_pydantic_ai_usage(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    body = recorded("openai_responses_api_reference")
    fake_openai.queue_json(body)
    agent = Agent(
        fake_openai.responses_model("o1"),
        name="thinker",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-resp")],
    )
    result = await agent.run("Write a tongue twister")
    ours = pa_tracker.session("s-resp").usage
    theirs = result.usage
    assert (ours.input_tokens, ours.output_tokens) == (theirs.input_tokens, theirs.output_tokens)
    assert (ours.input_tokens, ours.output_tokens) == (81, 1035)
    assert ours.reasoning_tokens == theirs.details["reasoning_tokens"] == 832
    assert ours.cache_read_tokens == theirs.cache_read_tokens == 0
    # Both price the same tokens with genai-prices: the same cost, to the micro-dollar.
    assert ours.cost_micros == int(
        (_response_costs(result.all_messages()) * 10**6).to_integral_value()
    )


async def test_chat_stream_counted_once_with_final_usage_chunk(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("Hello from a stream, word by word.", final))
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model("gpt-4o-mini"),
        name="streamer",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-stream")],
    )
    async with agent.run_stream("Say hello") as run:
        text = await run.get_output()
    assert text == "Hello from a stream, word by word."
    theirs = run.usage
    ours = pa_tracker.session("s-stream").usage
    assert (ours.input_tokens, ours.output_tokens) == (theirs.input_tokens, theirs.output_tokens)
    assert (ours.input_tokens, ours.output_tokens) == (1200, 300)
    assert ours.cache_read_tokens == theirs.cache_read_tokens == 1024
    assert ours.reasoning_tokens == 128
    [event] = _llm(events)
    assert not event.estimated and event.status == "ok"
    assert fake_openai.sent(0)["stream"] is True


async def test_responses_stream_counted_once(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    body = recorded("openai_responses_api_reference")
    fake_openai.queue_sse(responses_stream(body))
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.responses_model("o1"),
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-rs")],
    )
    async with agent.run_stream("Write a tongue twister") as run:
        chunks = [c async for c in run.stream_text(delta=True)]
    assert "".join(chunks).strip() == "The classic tongue twister..."
    ours = pa_tracker.session("s-rs").usage
    assert (ours.input_tokens, ours.output_tokens, ours.reasoning_tokens) == (81, 1035, 832)
    assert (ours.input_tokens, ours.output_tokens) == (
        run.usage.input_tokens,
        run.usage.output_tokens,
    )
    assert len(_llm(events)) == 1


async def test_stream_dropped_early_is_recorded_once_as_abandoned(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("one two three four five six seven", final, chunks=7))
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model(),
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-drop")],
    )
    async with agent.run_stream("Count") as run:
        async for _ in run.stream_text(delta=True, debounce_by=None):
            break  # the consumer stops reading after the first delta
    [event] = _llm(events)
    assert event.metadata is not None and event.metadata.get("stream") == "abandoned"
    assert event.status == "ok"  # stopping to read is not a failure of the call
    # The usage chunk never arrived: pydantic-ai counts the request with 0 tokens,
    # agentmeter estimates what was sent and received and flags it.
    assert run.usage.requests == 1 and run.usage.input_tokens == 0
    assert event.estimated
    assert event.input_tokens > 0 and event.output_tokens > 0
    assert pa_tracker.session("s-drop").usage.llm_calls == 1


async def test_iter_node_stream_dropped_early_counted_once(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("one two three four five six seven", final, chunks=7))
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model(),
        name="iterator",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-iter")],
    )
    async with agent.iter("Count") as agent_run:
        async for node in agent_run:
            if Agent.is_model_request_node(node):
                async with node.stream(agent_run.ctx) as stream:
                    async for _ in stream:
                        break
                break
    [event] = _llm(events)
    assert event.agent_id == "iterator"
    assert event.estimated and event.metadata == {"stream": "abandoned", "partial": True}
    assert agent_run.usage.requests == 1
    assert len(fake_openai.requests) == 1


async def test_iter_drained_equals_pydantic_ai_usage(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("all of it", final))
    agent = Agent(
        fake_openai.chat_model(),
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-iter2")],
    )
    async with agent.iter("Count") as agent_run:
        async for node in agent_run:
            if Agent.is_model_request_node(node):
                async with node.stream(agent_run.ctx) as stream:
                    async for _ in stream:
                        pass
    u = pa_tracker.session("s-iter2").usage
    theirs = agent_run.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.llm_calls) == (
        theirs.input_tokens,
        theirs.output_tokens,
        theirs.cache_read_tokens,
        theirs.requests,
    )
    assert u.estimated_calls == 0


async def test_tool_loop_over_chat_completions(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue_json(tool_call_body("weather", {"city": "Paris"}, usage(50, 10)))
    fake_openai.queue_json(chat_body("Sunny in Paris.", usage(80, 6, cached=64)))
    agent = Agent(
        fake_openai.chat_model(),
        name="weatherbot",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-tool")],
    )

    @agent.tool_plain
    def weather(city: str) -> str:
        return f"sunny in {city}"

    result = await agent.run("Weather in Paris?")
    assert result.output == "Sunny in Paris."
    ours = pa_tracker.session("s-tool").usage
    assert (ours.input_tokens, ours.output_tokens) == (130, 16)
    assert (ours.input_tokens, ours.output_tokens) == (
        result.usage.input_tokens,
        result.usage.output_tokens,
    )
    assert ours.cache_read_tokens == result.usage.cache_read_tokens == 64
    assert ours.llm_calls == result.usage.requests == 2
    assert ours.tool_calls == result.usage.tool_calls == 1
    [stats] = pa_tracker.session("s-tool").tools.values()
    assert (stats.tool, stats.calls, stats.ok) == ("weather", 1, 1)


async def test_metered_model_alone(pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue_json(chat_body("hi", usage(12, 3)))
    agent = Agent(metered(fake_openai.chat_model(), tracker=pa_tracker, session_id="s-m"))
    await agent.run("hello")
    u = pa_tracker.session("s-m").usage
    assert (u.input_tokens, u.output_tokens, u.llm_calls) == (12, 3, 1)


async def test_metered_model_and_capability_count_once(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue_json(chat_body("hi", usage(12, 3)))
    agent = Agent(
        metered(fake_openai.chat_model(), tracker=pa_tracker),
        name="both",
        capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-both")],
    )
    await agent.run("hello")
    u = pa_tracker.session("s-both").usage
    assert (u.input_tokens, u.output_tokens, u.llm_calls) == (12, 3, 1)
    assert pa_tracker.snapshot().totals.llm_calls == 1


async def test_provider_error_is_one_failed_call(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    from pydantic_ai.exceptions import ModelHTTPError

    fake_openai.queue(
        lambda request: (500, b'{"error": {"message": "overloaded"}}', "application/json")
    )
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-500")]
    )
    with pytest.raises(ModelHTTPError):
        await agent.run("hello")
    [event] = _llm(events)
    assert event.status == "error" and (event.input_tokens, event.output_tokens) == (0, 0)
    assert pa_tracker.session("s-500").usage.failed_llm_calls == 1


class _BrokenStream(httpx.AsyncByteStream):
    """An SSE body that breaks after its first events (the connection drops)."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")

    async def aclose(self) -> None:
        pass


async def test_stream_that_breaks_is_a_failed_partial_call(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    body = chat_stream("one two three four five six", final, chunks=6)
    head = b"".join(e + b"\n\n" for e in body.split(b"\n\n")[:3])  # role and two deltas

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_BrokenStream(head)
        )

    fake_openai.queue_response(broken)
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-brk")]
    )
    with pytest.raises(Exception):  # whatever the client raises, it reaches the caller
        async with agent.run_stream("Count") as run:
            await run.get_output()
    [event] = _llm(events)
    assert event.status == "error" and event.estimated
    assert event.metadata == {"stream": "failed", "partial": True}
    assert event.input_tokens > 0


async def test_consumer_error_inside_a_stream_is_abandoned_not_failed(
    pa_tracker: agentmeter.Tracker, fake_openai: FakeOpenAI
) -> None:
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("one two three four five six seven", final, chunks=7))
    events = _events(pa_tracker)
    agent = Agent(
        fake_openai.chat_model(), capabilities=[AgentMeter(tracker=pa_tracker, session_id="s-ce")]
    )
    with pytest.raises(ZeroDivisionError):
        async with agent.run_stream("Count") as run:
            async for _ in run.stream_text(delta=True, debounce_by=None):
                _ = 1 / 0  # the consumer's own bug, not the call's
    [event] = _llm(events)
    assert event.status == "ok" and event.estimated
    assert event.metadata == {"stream": "abandoned", "partial": True}
