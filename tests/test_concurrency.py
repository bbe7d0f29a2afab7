"""8 threads and 200 asyncio tasks, each in its own session and scope: exact everywhere."""

from __future__ import annotations

import asyncio
import threading

from agentmeter import Tracker


def test_8_threads_each_own_session_and_scope():
    t = Tracker()
    scopes = {}
    barrier = threading.Barrier(8)

    @t.metered_tool(category="io")
    def tool(i: int) -> None:
        t.record_llm(model="gpt-4o-mini", input_tokens=i % 7, output_tokens=1)

    def worker(n: int) -> None:
        with t.meter("worker", session_id=f"s{n}", agent_id=f"a{n % 2}") as scope:
            scopes[n] = scope
            barrier.wait(timeout=10)
            for i in range(2000):
                t.record_llm(model="gpt-4o", input_tokens=n + 1, output_tokens=2)
                if i % 10 == 0:
                    tool(i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    tool_inp = sum(i % 7 for i in range(0, 2000, 10))
    snap = t.snapshot()
    for n in range(8):
        u = scopes[n].usage
        assert u.llm_calls == 2200 and u.input_tokens == 2000 * (n + 1) + tool_inp
        assert u.tool_calls == 200
        s = snap.by_session[f"s{n}"]
        assert s == u
        assert snap.by_session_tool[f"s{n}"]["tool"].calls == 200
        assert snap.by_session_tool[f"s{n}"]["tool"].input_tokens == tool_inp
    assert snap.totals.llm_calls == 8 * 2200
    assert snap.by_agent["a0"].llm_calls == 4 * 2200
    assert snap.by_tool["tool"].calls == 1600 and snap.by_category["io"].calls == 1600


async def test_200_tasks_each_own_session_and_scope():
    t = Tracker()
    scopes = {}

    @t.metered_tool
    async def fetch(n: int) -> None:
        await asyncio.sleep(0)
        t.record_llm(model="gpt-4o-mini", input_tokens=n, output_tokens=1)

    async def agent(n: int) -> None:
        async with t.meter("agent", session_id=f"task{n}") as scope:
            scopes[n] = scope
            for _ in range(20):
                await asyncio.sleep(0)
                t.record_llm(model="gpt-4o", input_tokens=3, output_tokens=n)
                await fetch(n)

    await asyncio.wait_for(asyncio.gather(*(agent(n) for n in range(200))), timeout=60)
    snap = t.snapshot()
    for n in range(200):
        u = scopes[n].usage
        assert (u.llm_calls, u.input_tokens, u.output_tokens, u.tool_calls) == (
            40,
            20 * 3 + 20 * n,
            20 * n + 20,
            20,
        )
        assert snap.by_session[f"task{n}"] == u
        assert snap.by_session_tool[f"task{n}"]["fetch"].input_tokens == 20 * n
    assert snap.totals.llm_calls == 200 * 40


def test_a_long_log_is_folded_in_batches_by_records_and_whole_by_reads():
    """While one thread holds the lock (a fold preempted mid-way), records pile up in
    the log; afterwards each record folds at most FOLD_BATCH of them (a bounded pause
    for the recording thread), and a read folds the rest: nothing lost or counted twice."""
    from agentmeter._recorder import FOLD_AT, FOLD_BATCH

    t = Tracker()
    rec = t.recorder
    piled = 3 * FOLD_BATCH + 7
    with t.meter("s", session_id="s1") as scope:
        with rec.lock:  # as a folding thread that lost the CPU holds it
            for _ in range(piled):
                t.record_llm(model="gpt-4o-mini", input_tokens=3, output_tokens=1)
        assert len(rec.log) == piled  # no record could fold
        t.record_llm(model="gpt-4o-mini", input_tokens=3, output_tokens=1)
        assert len(rec.log) == piled + 1 - FOLD_BATCH  # one batch, not the whole log
        for _ in range(3):
            t.record_llm(model="gpt-4o-mini", input_tokens=3, output_tokens=1)
        assert len(rec.log) < FOLD_AT  # drained by the next records
        assert scope.usage.llm_calls == piled + 4  # a read folds everything
    assert not rec.log
    totals = t.snapshot().totals
    assert (totals.llm_calls, totals.input_tokens) == (piled + 4, 3 * (piled + 4))
    assert t.session("s1").usage.output_tokens == piled + 4
