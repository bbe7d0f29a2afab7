"""Hard caps through LangChain: the request's ``max_tokens`` reaches the reservation.

Real ``ChatOpenAI`` and ``ChatAnthropic`` over httpx mock transports. The servers
answer every request with the worst case the request allowed: a prompt of exactly
the size agentmeter estimates, and ``max_tokens`` of output. With the limit known,
a cost or token cap is never exceeded, sync, async, streamed and concurrent;
without one (the contrast that shows these tests can fail) the last call overshoots.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("langchain_anthropic")

from _lc_fakes import OpenAIMock  # noqa: E402
from agentmeter_langchain import AgentMeterCallbackHandler  # noqa: E402
from agentmeter_langchain._limits import output_limit  # noqa: E402
from langchain_anthropic import ChatAnthropic, chat_models  # noqa: E402
from langchain_core.messages import HumanMessage  # noqa: E402

import agentmeter  # noqa: E402
from agentmeter.instrumentation import estimate_messages  # noqa: E402

pytestmark = pytest.mark.timeout(60)

PROMPT = "Summarise the quarterly report in three bullet points."
MAX_OUT = 300
DATA = Path(__file__).parents[2] / "data" / "provider_usage"
hx: Any = importlib.import_module(
    next(
        root
        for root in (c.__module__.partition(".")[0] for c in anthropic.DefaultHttpxClient.__mro__)
        if root in ("httpx", "httpx2")
    )
)


def _openai(model_kw: dict[str, Any]) -> tuple[OpenAIMock, Any]:
    est = estimate_messages([HumanMessage(PROMPT)], "gpt-4o-mini")
    usage = {
        "prompt_tokens": est,
        "completion_tokens": MAX_OUT,
        "total_tokens": est + MAX_OUT,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    mock = OpenAIMock(usage=usage)
    return mock, mock.chat(stream_usage=True, **model_kw)


def _per_call_cost(model: Any) -> Decimal:
    """What one worst-case call costs, measured on a tracker of its own."""
    t = agentmeter.Tracker()
    model.invoke(PROMPT, config={"callbacks": [AgentMeterCallbackHandler(t)]})
    cost = t.snapshot().totals.cost_usd
    assert cost is not None and cost > 0
    return cost


def _spend_until_refused(tracker: agentmeter.Tracker, model: Any, budget: agentmeter.Budget) -> int:
    cfg = {"callbacks": [AgentMeterCallbackHandler(tracker)]}
    made = 0
    with tracker.meter("job", budget=budget):
        for _ in range(10):
            try:
                model.invoke(PROMPT, config=cfg)
            except agentmeter.BudgetExceeded:
                break
            made += 1
    return made


def test_cost_cap_with_max_tokens_is_never_exceeded(lc_tracker: agentmeter.Tracker) -> None:
    mock, model = _openai({"max_tokens": MAX_OUT})
    cap = _per_call_cost(model) * Decimal("2.5")
    made = _spend_until_refused(lc_tracker, model, agentmeter.Budget(max_cost_usd=cap))
    totals = lc_tracker.snapshot().totals
    assert made == 2 and totals.llm_calls == 2
    assert totals.cost_usd is not None and totals.cost_usd <= cap
    assert len(mock.requests) == 3  # the measuring call and the two allowed ones


def test_without_an_output_limit_the_last_call_overshoots(lc_tracker: agentmeter.Tracker) -> None:
    """The documented bound without max_tokens: the reservation is the prompt only."""
    _, model = _openai({})
    cap = _per_call_cost(model) * Decimal("2.5")
    made = _spend_until_refused(lc_tracker, model, agentmeter.Budget(max_cost_usd=cap))
    totals = lc_tracker.snapshot().totals
    assert made == 3
    assert totals.cost_usd is not None and cap < totals.cost_usd <= cap + _per_call_cost(model)


def test_token_cap_with_a_per_call_max_tokens(lc_tracker: agentmeter.Tracker) -> None:
    """``invoke(..., max_tokens=...)`` overrides the model's; the one sent is reserved."""
    est = estimate_messages([HumanMessage(PROMPT)], "gpt-4o-mini")
    _, model = _openai({"max_tokens": 4000})
    bound = model.bind(max_tokens=MAX_OUT)
    cap = int((est + MAX_OUT) * 2.5)
    cfg = {"callbacks": [AgentMeterCallbackHandler(lc_tracker)]}
    with lc_tracker.meter("job", budget=agentmeter.Budget(max_tokens=cap)) as scope:
        bound.invoke(PROMPT, config=cfg)
        bound.invoke(PROMPT, config=cfg)
        with pytest.raises(agentmeter.BudgetExceeded, match="max_tokens"):
            bound.invoke(PROMPT, config=cfg)
    assert scope.usage.total_tokens == 2 * (est + MAX_OUT) <= cap


def test_stream_and_concurrent_calls_stay_under_the_cap(lc_tracker: agentmeter.Tracker) -> None:
    mock, model = _openai({"max_tokens": MAX_OUT})
    per_call = _per_call_cost(model)
    cap = per_call * Decimal("3.5")
    cfg = {"callbacks": [AgentMeterCallbackHandler(lc_tracker)]}

    async def main() -> list[Any]:
        async with lc_tracker.meter("job", budget=agentmeter.Budget(max_cost_usd=cap)):
            async for _ in model.astream(PROMPT, config=cfg):
                pass
            return await asyncio.wait_for(
                asyncio.gather(
                    *(model.ainvoke(PROMPT, config=cfg) for _ in range(6)),
                    return_exceptions=True,
                ),
                30,
            )

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, agentmeter.BudgetExceeded)]
    assert len(refused) == 4  # one stream + two of six concurrent calls fit in 3.5
    totals = lc_tracker.snapshot().totals
    assert totals.llm_calls == 3
    assert totals.cost_usd is not None and totals.cost_usd <= cap
    assert len(mock.requests) == 1 + 3


# ------------------------------------------------------------ ChatAnthropic
@pytest.fixture
def anthropic_server(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """ChatAnthropic's HTTP client answers the worst case the request allowed."""
    seen: list[Any] = []
    body = json.loads((DATA / "anthropic_messages_sdk_cassette.json").read_text("utf-8"))["body"]
    est = estimate_messages([HumanMessage(PROMPT)], "claude-sonnet-4-5")

    def respond(request: Any) -> Any:
        sent = json.loads(request.content)
        seen.append(sent)
        answer = dict(body, usage={**body["usage"], "input_tokens": est})
        answer["usage"]["output_tokens"] = sent["max_tokens"]
        return hx.Response(200, json=answer)

    def client(**kw: Any) -> Any:
        return hx.Client(
            transport=hx.MockTransport(respond),
            base_url=kw.get("base_url") or "https://api.anthropic.com",
        )

    monkeypatch.setattr(chat_models, "_get_default_httpx_client", client)
    return seen


def test_anthropic_cost_cap_is_never_exceeded(
    lc_tracker: agentmeter.Tracker, anthropic_server: list[Any]
) -> None:
    model = ChatAnthropic(  # type: ignore[call-arg]
        model="claude-sonnet-4-5", api_key="sk-ant-test", max_retries=0, max_tokens=MAX_OUT
    )
    cap = _per_call_cost(model) * Decimal("2.5")
    made = _spend_until_refused(lc_tracker, model, agentmeter.Budget(max_cost_usd=cap))
    totals = lc_tracker.snapshot().totals
    assert made == 2 and totals.cost_usd is not None and totals.cost_usd <= cap
    assert [r["max_tokens"] for r in anthropic_server] == [MAX_OUT] * 3


def test_anthropic_default_max_tokens_is_the_bound(
    lc_tracker: agentmeter.Tracker, anthropic_server: list[Any]
) -> None:
    """ChatAnthropic always sends max_tokens (a default by model): it is reserved."""
    model = ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", max_retries=0)  # type: ignore[call-arg]
    default = model._get_invocation_params()["max_tokens"]
    assert output_limit(None, model._get_invocation_params()) == default
    cfg = {"callbacks": [AgentMeterCallbackHandler(lc_tracker)]}
    with (
        lc_tracker.meter("job", budget=agentmeter.Budget(max_output_tokens=default - 1)),
        pytest.raises(agentmeter.BudgetExceeded, match="max_output_tokens"),
    ):
        model.invoke(PROMPT, config=cfg)  # could write `default` tokens: refused up front
    assert anthropic_server == []


# ------------------------------------------------------------ the reader
@pytest.mark.parametrize(
    ("metadata", "params", "expected"),
    [
        ({"ls_max_tokens": 50}, {"max_completion_tokens": 300, "max_tokens": 50}, 50),
        (None, {"max_completion_tokens": 300}, 300),
        (None, {"max_tokens": 77}, 77),
        (None, {"max_output_tokens": 64}, 64),
        (None, {"max_tokens": 10, "max_completion_tokens": 20}, 20),  # the larger: safe
        ({"ls_max_tokens": None}, {}, None),
        (None, {"max_tokens": True}, None),
        (None, {"max_tokens": -5}, None),
        (None, {"max_tokens": 1.5}, None),
        ({"ls_max_tokens": "300"}, None, None),
        (None, None, None),
    ],
)
def test_output_limit(metadata: Any, params: Any, expected: int | None) -> None:
    assert output_limit(metadata, params) == expected
