"""Malformed usage (negative, NaN, a string...) is recorded, estimated and flagged -- never dropped.

Before agentmeter.instrumentation's normaliser, such a response was dropped
entirely: no record, no estimate, and its spend escaped the budgets.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from _lc_fakes import OPENAI_USAGE, OpenAIMock, UsageChat
from agentmeter_langchain import AgentMeterCallbackHandler, UnreportedUsageWarning
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

import agentmeter
from agentmeter.instrumentation import _usage, from_langchain

pytest.importorskip("langchain_openai")

OUT = OPENAI_USAGE["completion_tokens"]
CACHED = OPENAI_USAGE["prompt_tokens_details"]["cached_tokens"]  # type: ignore[index]
REASONING = OPENAI_USAGE["completion_tokens_details"]["reasoning_tokens"]  # type: ignore[index]
# (the openai SDK turns `true` into 1 before LangChain sees it, so it is not listed)
BAD_VALUES = [-5, "NaN", "abc", float("nan"), 12.5, "1e3"]


def _events(tracker: agentmeter.Tracker) -> list[agentmeter.UsageEvent]:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    return events


# ------------------------------------------------------- ChatOpenAI, real bodies
@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
def test_openai_body_with_malformed_prompt_tokens(lc_tracker: agentmeter.Tracker, bad: Any) -> None:
    mock = OpenAIMock(usage={**OPENAI_USAGE, "prompt_tokens": bad})
    handler = AgentMeterCallbackHandler(lc_tracker, session_id="m")
    events = _events(lc_tracker)
    with pytest.warns(UnreportedUsageWarning, match=r"malformed token usage \(input_tokens\)"):
        reply = mock.chat().invoke("Say hello", config={"callbacks": [handler]})
    assert reply.content == mock.text
    usage = lc_tracker.session("m").usage
    assert usage.llm_calls == 1 and usage.failed_llm_calls == 0
    assert usage.estimated_calls == 1  # the prompt's size is an estimate
    # the valid parts are kept: the output and its reasoning, the cached part of the input
    assert usage.output_tokens == OUT and usage.reasoning_tokens == REASONING
    assert usage.cache_read_tokens == CACHED
    assert usage.input_tokens >= CACHED  # at least what the parts prove
    assert usage.unpriced_calls == 0 and usage.cost_micros > 0
    assert events[0].estimated and events[0].metadata == {"usage_malformed": "input_tokens"}
    assert events[0].model == "gpt-4o-mini-2024-07-18"
    assert handler.unreported_usage_calls == 1
    assert handler._runs == {}


def test_openai_body_with_every_count_malformed(lc_tracker: agentmeter.Tracker) -> None:
    body = {"prompt_tokens": "abc", "completion_tokens": -1, "total_tokens": "NaN"}
    mock = OpenAIMock(text="a reply of some length, to estimate", usage=body)
    handler = AgentMeterCallbackHandler(lc_tracker)
    with pytest.warns(UnreportedUsageWarning, match="malformed"):
        mock.chat().invoke("a prompt of some length", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert usage.input_tokens > 0 and usage.output_tokens > 0


def test_malformed_spend_still_counts_against_the_budget(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock(usage={**OPENAI_USAGE, "prompt_tokens": -5})
    handler = AgentMeterCallbackHandler(lc_tracker)
    lc_tracker.set_budget("capped", agentmeter.Budget(max_tokens=OUT + CACHED + 5))
    cfg = {"callbacks": [handler], "metadata": {"session_id": "capped"}}
    with pytest.warns(UnreportedUsageWarning):
        mock.chat().invoke("one", config=cfg)
    with pytest.raises(agentmeter.BudgetExceeded, match="max_tokens"):
        mock.chat().invoke("two", config=cfg)
    assert len(mock.requests) == 1  # the second request was never sent
    status = lc_tracker.budget_status("capped")
    assert status is not None and status.reserved["max_tokens"] == 0


def test_openai_stream_with_malformed_usage_chunk(lc_tracker: agentmeter.Tracker) -> None:
    mock = OpenAIMock(usage={**OPENAI_USAGE, "prompt_tokens": -5})
    handler = AgentMeterCallbackHandler(lc_tracker)
    chat = mock.chat(stream_usage=True)
    with pytest.warns(UnreportedUsageWarning, match="malformed"):
        text = "".join(str(c.content) for c in chat.stream("hi", config={"callbacks": [handler]}))
    assert text == mock.text
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert usage.output_tokens == OUT and usage.cache_read_tokens == CACHED
    assert handler._runs == {}


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_openai_stream_langchain_cannot_parse_is_still_recorded(
    lc_tracker: agentmeter.Tracker,
) -> None:
    # langchain-core refuses a non-integer count in a chunk's usage_metadata (pydantic):
    # the stream breaks in LangChain, after the request was served and billed.
    mock = OpenAIMock(usage={**OPENAI_USAGE, "prompt_tokens": "abc"})
    handler = AgentMeterCallbackHandler(lc_tracker)
    events = _events(lc_tracker)
    with pytest.raises(ValueError, match="input_tokens"):
        list(mock.chat(stream_usage=True).stream("hi", config={"callbacks": [handler]}))
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert usage.input_tokens > 0 and usage.output_tokens > 0  # what the stream carried
    assert events[0].metadata == {"stream": "failed", "partial": True}
    assert handler._runs == {}


# ------------------------------------------------- a fake model's usage_metadata
class _MalformedChat(UsageChat):
    """Reports the given ``usage_metadata`` as is (set past pydantic's validation)."""

    bad_usage: dict[str, Any] = {}

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        msg = super()._answer(messages)
        msg.usage_metadata = self.bad_usage  # type: ignore[assignment]
        return msg


@pytest.mark.parametrize(
    ("bad", "malformed", "estimated"),
    [
        ({"input_tokens": -5, "output_tokens": 5, "total_tokens": 0}, "input_tokens", True),
        (
            {"input_tokens": math.nan, "output_tokens": "abc", "total_tokens": 1},
            "input_tokens,output_tokens",
            True,
        ),
        ({"input_tokens": "abc", "output_tokens": 5, "total_tokens": 5}, "input_tokens", True),
        ({"input_tokens": [1], "output_tokens": 5, "total_tokens": 5}, "input_tokens", True),
        (
            # the wholes are valid: a malformed part is ignored, the call not estimated
            {
                "input_tokens": 11,
                "output_tokens": 5,
                "total_tokens": 16,
                "input_token_details": {"cache_read": -2},
            },
            "input_token_details.cache_read",
            False,
        ),
    ],
)
def test_fake_model_with_malformed_usage_metadata(
    lc_tracker: agentmeter.Tracker, bad: dict[str, Any], malformed: str, estimated: bool
) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    events = _events(lc_tracker)
    model = _MalformedChat(bad_usage=bad, reply="a reply of some length")
    with pytest.warns(UnreportedUsageWarning, match="malformed"):
        model.invoke("a prompt of some length", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.failed_llm_calls == 0
    assert usage.estimated_calls == (1 if estimated else 0)
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert events[0].metadata == {"usage_malformed": malformed}
    assert events[0].model == "fake-usage-model" and events[0].provider == "fakeprov"
    if bad["output_tokens"] == 5:
        assert usage.output_tokens == 5  # a valid whole is kept as reported
    assert handler.unreported_usage_calls == (1 if estimated else 0)


def test_malformed_usage_warns_once_per_model(lc_tracker: agentmeter.Tracker) -> None:
    import warnings

    handler = AgentMeterCallbackHandler(lc_tracker)
    model = _MalformedChat(bad_usage={"input_tokens": -1, "output_tokens": 2, "total_tokens": 1})
    with pytest.warns(UnreportedUsageWarning):
        model.invoke("a", config={"callbacks": [handler]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreportedUsageWarning)
        model.invoke("b", config={"callbacks": [handler]})
    assert lc_tracker.snapshot().totals.estimated_calls == 2


def test_malformed_llm_output_token_usage(lc_tracker: agentmeter.Tracker) -> None:
    class LegacyChat(UsageChat):
        def _generate(self, messages, stop=None, run_manager=None, **kw):  # type: ignore[no-untyped-def]
            result = super()._generate(messages, stop, run_manager, **kw)
            result.generations[0].message.usage_metadata = None  # type: ignore[attr-defined]
            result.llm_output = {"token_usage": {"prompt_tokens": "abc", "completion_tokens": 7}}
            return result

    handler = AgentMeterCallbackHandler(lc_tracker)
    with pytest.warns(UnreportedUsageWarning, match=r"malformed token usage \(prompt_tokens\)"):
        LegacyChat().invoke("hi", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert usage.output_tokens == 7 and usage.input_tokens > 0


def test_stream_of_a_fake_model_with_negative_usage(lc_tracker: agentmeter.Tracker) -> None:
    class NegativeStream(UsageChat):
        def _answer(self, messages: list[BaseMessage]) -> AIMessage:
            msg = super()._answer(messages)
            msg.usage_metadata = {"input_tokens": -3, "output_tokens": 5, "total_tokens": 2}
            return msg

    handler = AgentMeterCallbackHandler(lc_tracker)
    with pytest.warns(UnreportedUsageWarning, match="malformed"):
        list(NegativeStream().stream("hi", config={"callbacks": [handler]}))
    usage = lc_tracker.snapshot().totals
    assert usage.llm_calls == 1 and usage.estimated_calls == 1
    assert usage.input_tokens > 0 and usage.output_tokens == 5


# ----------------------------------------- langchain-anthropic's cache-write keys
def test_anthropic_ttl_cache_writes_are_counted(lc_tracker: agentmeter.Tracker) -> None:
    """langchain-anthropic reports cache writes under the TTL keys, with cache_creation 0."""
    um = {
        "input_tokens": 1500,
        "output_tokens": 40,
        "total_tokens": 1540,
        "input_token_details": {
            "cache_read": 200,
            "cache_creation": 0,
            "ephemeral_5m_input_tokens": 1000,
            "ephemeral_1h_input_tokens": 0,
        },
    }
    handler = AgentMeterCallbackHandler(lc_tracker)
    _MalformedChat(bad_usage=um).invoke("hi", config={"callbacks": [handler]})
    usage = lc_tracker.snapshot().totals
    assert (usage.input_tokens, usage.output_tokens) == (1500, 40)
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (200, 1000)
    assert usage.estimated_calls == 0


# -------------------------------------- the handler's shortcut equals the normaliser
@pytest.mark.parametrize(
    "um",
    [
        {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        {
            "input_tokens": 12,
            "output_tokens": 3,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 4, "cache_creation": 2, "audio": 1},
            "output_token_details": {"reasoning": 3, "audio": 0},
        },
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": {"cache_read": 9}},
        {"input_tokens": 5, "output_tokens": 1, "output_token_details": {"reasoning": 4}},
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": {"cache_read": None}},
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": {}},
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": "x"},
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": ""},
        {"input_tokens": 5, "output_tokens": 1, "output_token_details": 0},
        {"input_tokens": 5, "output_tokens": 1, "output_token_details": {"reasoning": False}},
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": {"cache_read": True}},
        {"input_tokens": 5, "output_tokens": 1, "input_token_details": {"cache_read": 1.0}},
        {
            "input_tokens": 9,
            "output_tokens": 1,
            "input_token_details": {"ephemeral_1h_input_tokens": 4},
        },
        {"input_tokens": 2**53, "output_tokens": 1},
        {"input_tokens": -1, "output_tokens": 1},
        {"input_tokens": "7", "output_tokens": 1},
        {"input_tokens": 7},
        {"output_tokens": 7, "cost": 0.5},
        {},
    ],
)
def test_usage_shortcut_is_the_normaliser(um: dict[str, Any]) -> None:
    # from_langchain reads a plain UsageMetadata in one pass; the full reader agrees.
    assert from_langchain(um) == _usage._from_langchain(um)


def test_human_message_prompt_is_estimated_for_the_budget(lc_tracker: agentmeter.Tracker) -> None:
    """A malformed usage's input falls back on the prompt's estimated size."""
    handler = AgentMeterCallbackHandler(lc_tracker)
    long_prompt = [HumanMessage("word " * 400)]
    model = _MalformedChat(bad_usage={"input_tokens": "?", "output_tokens": 3, "total_tokens": 3})
    with pytest.warns(UnreportedUsageWarning):
        model.invoke(long_prompt, config={"callbacks": [handler]})
    assert lc_tracker.snapshot().totals.input_tokens >= 400
