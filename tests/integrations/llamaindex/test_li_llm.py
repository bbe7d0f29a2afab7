"""LLM calls through the instrumentation dispatcher, with LlamaIndex's own mock LLMs."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import agentmeter_llamaindex as ami
import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockLLM
from llama_index.core.tools import FunctionTool
from llama_index.core.utils import get_tokenizer

import agentmeter
from agentmeter.instrumentation import UsageCounts, from_llamaindex, normalise_usage

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.filterwarnings("ignore::agentmeter_llamaindex.StreamUsageWarning"),
    pytest.mark.timeout(60),
]

MSGS = [ChatMessage(role="user", content="hello there, how are you?")]


def count(text: str) -> int:
    """llama-index's own count (its default tokenizer): what MockLLM calls are estimated with."""
    return len(get_tokenizer()(text))


def events(tracker: agentmeter.Tracker) -> list[agentmeter.UsageEvent]:
    got: list[agentmeter.UsageEvent] = []
    tracker.subscribe(got.append)
    return got


def test_instrument_is_idempotent_and_undone(li_tracker: agentmeter.Tracker) -> None:
    root = get_dispatcher()
    before = (len(root.event_handlers), len(root.span_handlers))
    a = ami.instrument(li_tracker)
    b = ami.instrument(li_tracker)
    assert a is b and ami.instrumentor() is a
    assert (len(root.event_handlers), len(root.span_handlers)) == (before[0] + 1, before[1] + 1)
    other = agentmeter.Tracker()
    c = ami.instrument(other)  # re-targeting replaces, never stacks
    assert c is not a and (len(root.event_handlers), len(root.span_handlers)) == (
        before[0] + 1,
        before[1] + 1,
    )
    ami.uninstrument()
    ami.uninstrument()
    assert (len(root.event_handlers), len(root.span_handlers)) == before
    MockLLM().complete("not metered")
    assert other.snapshot().totals.llm_calls == 0
    with pytest.raises(TypeError):
        ami.instrument("tracker")  # type: ignore[arg-type]


def test_complete_estimated_with_the_tokenizer(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    seen = events(li_tracker)
    MockLLM().complete("the quick brown fox")
    usage = li_tracker.snapshot().by_model["MockLLM"]
    n = count("the quick brown fox")
    assert (usage.llm_calls, usage.input_tokens, usage.output_tokens) == (1, n, n)
    assert usage.estimated_calls == 1
    assert seen[0].kind == "completion" and seen[0].estimated


@pytest.mark.parametrize("mode", ["chat", "stream_chat", "achat", "astream_chat", "astream"])
def test_chat_over_complete_counts_once(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, mode: str
) -> None:
    llm = MockLLM()

    async def run_async() -> None:
        if mode == "achat":
            await llm.achat(MSGS)
        elif mode == "astream_chat":
            async for _ in await llm.astream_chat(MSGS):
                pass
        else:
            async for _ in await llm.astream_complete("hello there, how are you?"):
                pass

    if mode == "chat":
        llm.chat(MSGS)
    elif mode == "stream_chat":
        for _ in llm.stream_chat(MSGS):
            pass
    else:
        asyncio.run(run_async())
    totals = li_tracker.snapshot().totals
    assert totals.llm_calls == 1
    # The call that reached the model is the completion of the formatted prompt.
    prompt = llm.messages_to_prompt(MSGS) if mode != "astream" else "hello there, how are you?"
    assert totals.input_tokens == count(prompt)
    assert totals.output_tokens == count(prompt)  # MockLLM echoes the prompt
    assert not inst._llm  # nothing left pending


def test_abandoned_stream_records_what_it_got(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    seen = events(li_tracker)
    llm = MockLLM(max_tokens=50)
    gen = llm.stream_complete("prompt text")
    for i, _ in enumerate(gen):
        if i == 4:
            break
    gen.close()
    del gen
    gc.collect()
    totals = li_tracker.snapshot().totals
    assert totals.llm_calls == 1 and totals.estimated_calls == 1
    assert 0 < totals.output_tokens < 50
    assert seen[0].metadata == {"stream": "abandoned", "chunks": 5}
    assert not inst._llm


def test_never_iterated_stream_is_forgotten(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    gen = MockLLM().stream_complete("never read")
    assert inst._llm  # pending while the stream object lives
    del gen
    gc.collect()
    assert not inst._llm
    assert li_tracker.snapshot().totals.llm_calls == 0


@pytest.mark.parametrize("in_tool", [False, True], ids=["top-level", "in-a-tool"])
def test_streams_seen_on_both_span_exit_paths(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, in_tool: bool
) -> None:
    """The span handler's exit has a short path (no tool or run open) and the whole
    one (a tool is open): both notice a returned stream, so a stream never read is
    forgotten and one read to its end is counted once."""

    def body() -> str:
        assert bool(inst._open) is in_tool  # the path under test
        gen = MockLLM().stream_complete("never read")
        assert inst._llm  # pending while the stream object lives
        del gen
        gc.collect()
        assert not inst._llm
        return "".join(r.delta or "" for r in MockLLM().stream_complete("read to the end"))

    if in_tool:
        FunctionTool.from_defaults(fn=body, name="streamer").call()
    else:
        body()
    totals = li_tracker.snapshot().totals
    assert totals.llm_calls == 1 and totals.estimated_calls == 1
    assert totals.input_tokens == count("read to the end")
    assert totals.tool_calls == (1 if in_tool else 0)
    assert not inst._llm and not inst._open and not inst.errors


class _Raw(CustomLLM):
    """A CustomLLM whose responses carry a given provider ``raw`` / additional_kwargs."""

    raw: Any = None
    extra: dict[str, Any] = {}
    fail: bool = False

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="claude-3-5-haiku-latest")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.fail:
            raise ConnectionError("provider down")
        return CompletionResponse(text="ok", raw=self.raw, additional_kwargs=self.extra)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            # Anthropic's stream: input and cache in message_start, output in message_delta.
            yield CompletionResponse(text="", delta="", raw=self.raw)
            yield CompletionResponse(
                text="ok", delta="ok", raw={"type": "message_delta", "usage": {"output_tokens": 7}}
            )

        return gen()


ANTHROPIC = {
    "usage": {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
    }
}


@pytest.mark.parametrize(
    ("raw", "extra", "expected"),
    [
        (ANTHROPIC, {}, (1210, 5, 1000, 200, 0)),
        (
            {
                "usage_metadata": {
                    "prompt_token_count": 300,
                    "candidates_token_count": 40,
                    "cached_content_token_count": 100,
                    "thoughts_token_count": 60,
                }
            },
            {},
            (300, 100, 100, 0, 60),
        ),
        (
            {
                "usage": {
                    "prompt_tokens": 50,
                    "completion_tokens": 30,
                    "prompt_tokens_details": {"cached_tokens": 20},
                    "completion_tokens_details": {"reasoning_tokens": 12},
                }
            },
            {},
            (50, 30, 20, 0, 12),
        ),
        (None, {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}, (9, 4, 0, 0, 0)),
    ],
    ids=["anthropic", "gemini", "openai", "additional_kwargs"],
)
def test_reported_usage_shapes(
    inst: ami.Instrumentor,
    li_tracker: agentmeter.Tracker,
    raw: Any,
    extra: dict[str, Any],
    expected: tuple[int, ...],
) -> None:
    _Raw(raw=raw, extra=extra).complete("x")
    u = li_tracker.snapshot().totals
    got = (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens)
    assert (*got, u.reasoning_tokens) == expected
    assert u.estimated_calls == 0 and u.llm_calls == 1


def test_anthropic_stream_usage_merged(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    start_usage = {**ANTHROPIC["usage"], "output_tokens": 1}
    raw = {"type": "message_start", "message": {"usage": start_usage}}
    for _ in _Raw(raw=raw).stream_complete("x"):
        pass
    u = li_tracker.snapshot().totals
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        1210,
        7,
        1000,
        200,
    )
    assert u.estimated_calls == 0


def test_usage_parser_rejects_junk() -> None:
    # The integration reads usage with agentmeter's normaliser: these are its rules.
    assert normalise_usage({"usage": None}) is None
    assert normalise_usage({"content": "x"}) is None
    # junk counts are "not reported" (then estimated), never a silent 0
    junk = normalise_usage({"usage": {"prompt_tokens": -3, "completion_tokens": "x"}})
    assert junk is not None and not junk.reported_input and not junk.reported_output
    assert set(junk.malformed) == {"prompt_tokens", "completion_tokens"}
    # cache parts larger than the input never make an invalid record
    odd = normalise_usage(
        {"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}}
    )
    assert odd is not None
    assert (odd.input_tokens, odd.cache_read_tokens, odd.output_tokens) == (9, 9, 0)
    assert odd.reported_input and not odd.reported_output
    response = CompletionResponse(text="ok", additional_kwargs={"prompt_tokens": 9})
    assert from_llamaindex(response) == UsageCounts(9, 0, reported_output=False)


@pytest.mark.parametrize(
    "extra",
    [
        {"prompt_tokens": -3, "completion_tokens": "x"},
        {"prompt_tokens": float("nan"), "completion_tokens": None},
        {"prompt_tokens": True, "completion_tokens": [1]},
    ],
    ids=["negative-and-string", "nan", "bool-and-list"],
)
def test_malformed_usage_is_recorded_estimated_not_dropped(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, extra: dict[str, Any]
) -> None:
    seen = events(li_tracker)
    _Raw(extra=extra).complete("a prompt of some length")
    u = li_tracker.snapshot().totals
    assert (u.llm_calls, u.estimated_calls, u.failed_llm_calls) == (1, 1, 0)
    assert u.input_tokens == count("a prompt of some length") and u.output_tokens == count("ok")
    assert seen[0].estimated and seen[0].status == "ok"


def test_partly_reported_usage_estimates_the_rest(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    """A report of the input alone: the input is the provider's, the output estimated."""
    _Raw(extra={"prompt_tokens": 900}).complete("x")
    u = li_tracker.snapshot().totals
    assert (u.input_tokens, u.output_tokens, u.estimated_calls) == (900, count("ok"), 1)


def test_failed_call_is_a_failed_call(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    with pytest.raises(ConnectionError):
        _Raw(fail=True).complete("x")
    u = li_tracker.snapshot().totals
    assert (u.llm_calls, u.failed_llm_calls, u.input_tokens) == (1, 1, 0)


def test_scopes_and_tags_attribute(inst: ami.Instrumentor, li_tracker: agentmeter.Tracker) -> None:
    llm = MockLLM()
    with li_tracker.meter("outer", session_id="s1", agent_id="a1") as outer:
        llm.complete("one")
        with instrument_tags({"session_id": "s2", "agent_id": "a2"}):
            llm.chat(MSGS)
    snap = li_tracker.snapshot()
    assert outer.usage.llm_calls == 2
    assert snap.by_session["s1"].llm_calls == 1 and snap.by_session["s2"].llm_calls == 1
    assert set(snap.by_agent) == {"a1", "a2"}


def test_stream_consumed_in_another_task_stays_in_its_scope(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    llm = MockLLM()

    async def main() -> None:
        with li_tracker.meter("caller", session_id="s-stream"):
            gen = await llm.astream_complete("streamed prompt")

        async def drain() -> None:
            async for _ in gen:
                pass

        await asyncio.wait_for(asyncio.create_task(drain()), 10)

    asyncio.run(main())
    assert li_tracker.snapshot().by_session["s-stream"].llm_calls == 1
