"""Customer attribution through LangChain: run metadata ``customer_id``, the handler, scopes."""

from __future__ import annotations

import threading
from typing import Any

from _lc_fakes import UsageChat
from agentmeter_langchain import AgentMeterCallbackHandler
from test_lc_langgraph import SESSION_IN, TOOLS, _inputs, make_agent

import agentmeter


def test_run_metadata_customer_id_bills_the_customer(lc_tracker: agentmeter.Tracker) -> None:
    handler = AgentMeterCallbackHandler(lc_tracker)
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    model = UsageChat()
    model.invoke("hi", config={"callbacks": [handler], "metadata": {"customer_id": "acme"}})
    model.invoke("hi", config={"callbacks": [handler], "metadata": {"customer_id": "beta"}})
    model.invoke("hi", config={"callbacks": [handler], "metadata": {"customer_id": ""}})
    snap = lc_tracker.snapshot()
    assert set(snap.by_customer) == {"acme", "beta"}  # "" means none, never an invalid id
    assert snap.by_customer["acme"].llm_calls == 1
    assert [e.customer_id for e in events] == ["acme", "beta", None]


def test_handler_customer_wins_over_metadata_which_wins_over_the_scope(
    lc_tracker: agentmeter.Tracker,
) -> None:
    model = UsageChat()
    fixed = AgentMeterCallbackHandler(lc_tracker, customer_id="fixed")
    plain = AgentMeterCallbackHandler(lc_tracker)
    with lc_tracker.meter("req", customer_id="scope-cust"):
        model.invoke("hi", config={"callbacks": [fixed], "metadata": {"customer_id": "md"}})
        model.invoke("hi", config={"callbacks": [plain], "metadata": {"customer_id": "md"}})
        model.invoke("hi", config={"callbacks": [plain]})
    by = lc_tracker.snapshot().by_customer
    assert {k: u.llm_calls for k, u in by.items()} == {"fixed": 1, "md": 1, "scope-cust": 1}


def test_langgraph_agent_tools_and_inner_llm_are_the_customers(
    lc_tracker: agentmeter.Tracker,
) -> None:
    agent, _, _ = make_agent(lc_tracker)
    handler = AgentMeterCallbackHandler(lc_tracker)

    def run(i: int) -> None:
        agent.invoke(
            _inputs(i),
            config={
                "callbacks": [handler],
                "configurable": {"thread_id": f"t{i}"},
                "metadata": {"customer_id": f"cust{i % 2}"},
            },
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    snap = lc_tracker.snapshot()
    for cust in ("cust0", "cust1"):
        c = lc_tracker.customer(cust)
        assert c.usage.llm_calls == 3 * 2 and c.usage.input_tokens == SESSION_IN * 2
        assert c.usage.tool_calls == len(TOOLS) * 2
        assert set(c.by_session) == {f"t{i}" for i in range(4) if f"cust{i % 2}" == cust}
        assert c.tools["summarize"].llm_calls == 2  # the tool's inner call, the customer's
        assert c.tools["lookup"].calls == 2  # decorator + handler: once
    assert sum(u.llm_calls for u in snap.by_customer.values()) == snap.totals.llm_calls


def test_instrument_reads_customer_from_metadata(lc_tracker: agentmeter.Tracker) -> None:
    from agentmeter_langchain import instrument, uninstrument

    instrument(lc_tracker)
    try:
        cfg: dict[str, Any] = {"metadata": {"customer_id": "acme", "session_id": "s"}}
        UsageChat().invoke("hi", config=cfg)
    finally:
        uninstrument()
    assert lc_tracker.customer("acme").by_session["s"].llm_calls == 1
