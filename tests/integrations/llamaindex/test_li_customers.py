"""Customer attribution through LlamaIndex: from the enclosing scope, across tasks and threads."""

from __future__ import annotations

import asyncio
import threading

import agentmeter_llamaindex as ami
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM
from test_li_agents import make_agent, run

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.filterwarnings("ignore::agentmeter_llamaindex.StreamUsageWarning"),
    pytest.mark.timeout(120),
]


def test_llm_and_embeddings_bill_the_enclosing_scopes_customer(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    events: list[agentmeter.UsageEvent] = []
    li_tracker.subscribe(events.append)
    embed = MockEmbedding(embed_dim=8)
    with li_tracker.meter("req", customer_id="acme", tags={"plan": "pro"}):
        MockLLM(max_tokens=5).complete("hello")
        index = VectorStoreIndex.from_documents([Document(text="a b c d")], embed_model=embed)
        index.as_retriever().retrieve("a")
    MockLLM(max_tokens=5).complete("outside")
    c = li_tracker.customer("acme")
    assert c.usage.llm_calls == 1 and c.usage.embedding_calls >= 2
    kinds = {e.kind for e in events if e.customer_id == "acme"}
    assert kinds == {"completion", "embedding"}
    assert all(e.tags == {"plan": "pro"} for e in events if e.customer_id == "acme")
    assert events[-1].customer_id is None


def test_agents_in_concurrent_tasks_and_threads_bill_their_customers(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    async def one(customer: str) -> None:
        with li_tracker.meter("turn", customer_id=customer, session_id=f"s-{customer}"):
            await run(make_agent())

    async def main() -> None:
        await asyncio.gather(*(one(f"task{i}") for i in range(4)))

    def in_thread(customer: str) -> None:
        asyncio.run(one(customer))

    asyncio.run(main())
    threads = [threading.Thread(target=in_thread, args=(f"thread{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    snap = li_tracker.snapshot()
    assert set(snap.by_customer) == {f"task{i}" for i in range(4)} | {"thread0", "thread1"}
    for cust, usage in snap.by_customer.items():
        assert usage.llm_calls == 2 and usage.tool_calls == 2, cust
        tools = li_tracker.customer(cust).tools
        assert tools["add"].calls == 1 and tools["boom"].failed == 1
    assert sum(u.llm_calls for u in snap.by_customer.values()) == snap.totals.llm_calls
