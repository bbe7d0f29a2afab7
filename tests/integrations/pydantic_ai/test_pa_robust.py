"""agentmeter failing internally never breaks a run; bad arguments are clear errors; the
RequestUsage reader never raises and keeps every part within its whole."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import agentmeter_pydantic_ai.model as model_module
import pytest
from agentmeter_pydantic_ai import AgentMeter, MeteredModel, from_request_usage, metered
from hypothesis import given, settings
from hypothesis import strategies as st
from pa_fakes import FakeOpenAI, chat_body, chat_stream, recorded, tool_call_body, usage
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

import agentmeter
from agentmeter import instrumentation as ami

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
]


def _boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("agentmeter broke")


@pytest.mark.parametrize("where", ["start", "end"])
async def test_internal_failure_never_breaks_the_run(
    where: str,
    pa_tracker: agentmeter.Tracker,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTMETER_STRICT", "0")  # as in production: logged and swallowed
    if where == "start":  # the calls cannot even start
        monkeypatch.setattr(ami, "start_llm", _boom)
        monkeypatch.setattr(ami, "start_tool", _boom)
    else:  # reading the response and ending the tool call fail
        monkeypatch.setattr(model_module, "from_request_usage", _boom)
        monkeypatch.setattr(ami.ToolCall, "finish", _boom)
    fake_openai.queue_json(tool_call_body("lookup", {"q": "x"}, usage(10, 2)))
    fake_openai.queue_json(chat_body("still answered", usage(10, 2)))
    agent = Agent(fake_openai.chat_model(), capabilities=[AgentMeter(tracker=pa_tracker)])

    @agent.tool_plain
    def lookup(q: str) -> str:
        return "found"

    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        result = await agent.run("hello")
    assert result.output == "still answered"
    assert len(fake_openai.requests) == 2
    assert caplog.text.count("agentmeter broke") >= 2  # logged, for the model and the tool


async def test_budget_check_failure_never_breaks_the_run(
    pa_tracker: agentmeter.Tracker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTMETER_STRICT", "0")
    monkeypatch.setattr(pa_tracker, "check_budget", _boom)
    agent = Agent(TestModel(), capabilities=[AgentMeter(tracker=pa_tracker)])

    @agent.tool_plain
    def ping() -> str:
        return "pong"

    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        with pa_tracker.meter("j", session_id="s", budget=agentmeter.Budget(max_llm_calls=50)):
            result = await agent.run("hello")
    assert result.output
    assert "agentmeter broke" in caplog.text


async def test_bad_session_from_the_run_is_logged_not_raised(
    pa_tracker: agentmeter.Tracker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTMETER_STRICT", "0")
    agent = Agent(
        TestModel(call_tools=[]),
        capabilities=[AgentMeter(tracker=pa_tracker, session_from=lambda ctx: "bad\x00id")],
    )
    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        result = await agent.run("hello")
    assert result.output
    assert pa_tracker.snapshot().totals.llm_calls == 1  # still metered, without the bad id


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"session_id": 5}, TypeError, "session_id"),
        ({"session_id": ""}, ValueError, "session_id"),
        ({"customer_id": ["x"]}, TypeError, "customer_id"),
        ({"agent_id": 1.5}, TypeError, "agent_id"),
        ({"tags": {"a": 1}}, TypeError, "tags"),
        ({"tracker": "default"}, TypeError, "tracker"),
        ({"session_from": "conversation_id"}, TypeError, "session_from"),
        ({"tools": "yes"}, TypeError, "tools"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], error: type, word: str) -> None:
    with pytest.raises(error, match=word):
        AgentMeter(**kwargs)
    if word not in ("session_from", "tools"):
        with pytest.raises(error, match=word):
            metered(TestModel(), **kwargs)


def test_metered_keeps_the_wrapped_model_visible() -> None:
    model = metered(TestModel(), session_id="s")
    assert isinstance(model, MeteredModel)
    assert model.model_name == "test" and model.system == "test"
    again = metered(model, customer_id="c")
    assert again.wrapped is model.wrapped  # not wrapped twice
    assert (again.who.session_id, again.who.customer_id) == ("s", "c")


def test_reader_maps_request_usage() -> None:
    u = from_request_usage(
        RequestUsage(
            input_tokens=100,
            output_tokens=50,
            cache_read_tokens=30,
            cache_write_tokens=20,
            input_audio_tokens=5,
            output_audio_tokens=4,
            details={"reasoning_tokens": 12},
            cost=Decimal("9"),
        )
    )
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        100,
        50,
        30,
        20,
    )
    assert (u.reasoning_tokens, u.audio_input_tokens, u.audio_output_tokens) == (12, 5, 4)
    assert u.cost_usd is None  # pydantic-ai's own price estimate is not a provider charge
    assert u.fully_reported
    assert from_request_usage(RequestUsage()) is None  # nothing reported: estimate
    thinking = from_request_usage(
        RequestUsage(input_tokens=1, output_tokens=9, details={"thinking_tokens": 7})
    )
    assert thinking is not None and thinking.reasoning_tokens == 7
    partial = from_request_usage(RequestUsage(input_tokens=40), complete=False)
    assert partial is not None and partial.reported_input and not partial.reported_output


_values = st.one_of(
    st.integers(min_value=-5, max_value=2**60),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.booleans(),
)


class _Loose:
    """An object shaped like RequestUsage, with anything in its fields."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


@settings(max_examples=300, deadline=None)
@given(
    inp=_values,
    out=_values,
    cr=_values,
    cw=_values,
    ai=_values,
    ao=_values,
    rs=_values,
    complete=st.booleans(),
)
def test_reader_never_raises_and_parts_fit(
    inp: Any, out: Any, cr: Any, cw: Any, ai: Any, ao: Any, rs: Any, complete: bool
) -> None:
    obj = _Loose(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_write_tokens=cw,
        input_audio_tokens=ai,
        output_audio_tokens=ao,
        details={"reasoning_tokens": rs},
    )
    u = from_request_usage(obj, complete=complete)
    valid = [v for v in (inp, out, cr, cw, ai, ao, rs) if type(v) is int and 0 <= v <= 2**53 - 1]
    if u is None:
        assert not any(valid) and all(
            v is None or (type(v) is int and v == 0) for v in (inp, out, cr, cw, ai, ao, rs)
        )
        return
    assert u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert u.reasoning_tokens <= u.output_tokens
    if type(inp) is int and 0 <= inp <= 2**53 - 1:
        assert u.input_tokens >= inp
    else:
        assert not u.reported_input
    for name, v in (("input_tokens", inp), ("output_tokens", out)):
        bad = v is not None and not (type(v) is int and 0 <= v <= 2**53 - 1)
        assert (name in u.malformed) == bad


@pytest.mark.parametrize("where", ["start", "end"])
async def test_internal_failure_never_breaks_a_stream(
    where: str,
    pa_tracker: agentmeter.Tracker,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTMETER_STRICT", "0")
    if where == "start":
        monkeypatch.setattr(ami, "start_llm", _boom)
    else:
        monkeypatch.setattr(model_module, "from_request_usage", _boom)
    final = recorded("openai_chat_stream_final_usage_chunk")
    fake_openai.queue_sse(chat_stream("streamed anyway", final))
    agent = Agent(fake_openai.chat_model(), capabilities=[AgentMeter(tracker=pa_tracker)])
    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        async with agent.run_stream("hello") as run:
            assert await run.get_output() == "streamed anyway"
    assert "agentmeter broke" in caplog.text
