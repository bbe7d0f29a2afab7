"""Property tests: random programs of records in random nested scopes, across threads and tasks.

Every scope's totals must equal the sum of what was recorded inside it (its
subtree), the tracker's the sum of everything, every session's the sum of its
records, and rejected (bad) records must change nothing.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmeter import Tracker
from agentmeter.pricing import PriceBook

_BOOK = PriceBook()


def _cost(r: Rec) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rates = _BOOK.rates(r.model)
    if rates is None:
        return 0
    if r.kind == "emb":
        return rates.cost_micros(r.inp, 0)
    return rates.cost_micros(r.inp, r.out, min(r.cr, r.inp), 0)


MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "no-such-model-x"]


@dataclass
class Rec:
    kind: str  # llm | emb | tool | bad
    model: str
    inp: int
    out: int
    cr: int
    ok: bool


@dataclass
class Node:
    session: str | None
    items: list = field(default_factory=list)  # Rec | Node


recs = st.builds(
    Rec,
    kind=st.sampled_from(["llm", "llm", "emb", "tool", "bad"]),
    model=st.sampled_from(MODELS),
    inp=st.integers(0, 5000),
    out=st.integers(0, 500),
    cr=st.integers(0, 5000),
    ok=st.booleans(),
)
nodes = st.recursive(
    st.builds(Node, session=st.sampled_from([None, "s1", "s2"]), items=st.lists(recs, max_size=4)),
    lambda children: st.builds(
        Node,
        session=st.sampled_from([None, "s1", "s2", "s3"]),
        items=st.lists(st.one_of(recs, children), max_size=4),
    ),
    max_leaves=12,
)


def expected(node: Node, session: str | None, per_session: dict) -> dict:
    """Sum of the subtree; also fills per_session with each record's effective session."""
    session = node.session if node.session is not None else session
    tot = {"input": 0, "output": 0, "emb": 0, "llm": 0, "tools": 0, "failed_tools": 0, "cost": 0}
    for item in node.items:
        if isinstance(item, Node):
            sub = expected(item, session, per_session)
            for k in tot:
                tot[k] += sub[k]
            continue
        d = dict.fromkeys(tot, 0)
        if item.kind == "llm":
            d.update(input=item.inp, output=item.out, llm=1, cost=_cost(item))
        elif item.kind == "emb":
            d.update(emb=item.inp, cost=_cost(item))
        elif item.kind == "tool":
            d.update(tools=1, failed_tools=0 if item.ok else 1)
        else:
            continue
        for k in tot:
            tot[k] += d[k]
        if session is not None:
            ps = per_session.setdefault(session, dict.fromkeys(tot, 0))
            for k in tot:
                ps[k] += d[k]
    return tot


def run(t: Tracker, node: Node, scopes: list) -> None:
    with t.meter("n", session_id=node.session) as scope:
        scopes.append((node, scope))
        for item in node.items:
            if isinstance(item, Node):
                run(t, item, scopes)
            else:
                do(t, item)


def do(t: Tracker, r: Rec) -> None:
    if r.kind == "llm":
        t.record_llm(
            model=r.model,
            input_tokens=r.inp,
            output_tokens=r.out,
            cache_read_tokens=min(r.cr, r.inp),
            ok=r.ok,
        )
    elif r.kind == "emb":
        t.record_embedding(model=r.model, input_tokens=r.inp)
    elif r.kind == "tool":
        t.record_tool_call(tool=r.model, ok=r.ok, duration_ms=float(r.out))
    else:
        try:  # cache_read above input: rejected, must count nothing
            t.record_llm(
                model=r.model, input_tokens=r.inp, output_tokens=r.out, cache_read_tokens=r.inp + 1
            )
        except ValueError:
            return
        raise AssertionError("bad record accepted")


async def arun(t: Tracker, node: Node, scopes: list) -> None:
    async with t.meter("n", session_id=node.session) as scope:
        scopes.append((node, scope))
        for item in node.items:
            await asyncio.sleep(0)
            if isinstance(item, Node):
                await asyncio.create_task(arun(t, item, scopes))
            else:
                do(t, item)


def check(t: Tracker, programs: list[Node], scopes: list) -> None:
    per_session: dict = {}
    grand = {"input": 0, "output": 0, "emb": 0, "llm": 0, "tools": 0, "failed_tools": 0, "cost": 0}
    for p in programs:
        e = expected(p, None, per_session)
        for k in grand:
            grand[k] += e[k]
    for node, scope in scopes:
        inherited = scope.session_id if node.session is None else None
        e = expected(node, inherited, {})
        u = scope.usage
        assert (
            u.input_tokens,
            u.output_tokens,
            u.embedding_tokens,
            u.llm_calls,
            u.tool_calls,
            u.failed_tool_calls,
            u.cost_micros,
        ) == tuple(e.values())
    snap = t.snapshot()
    u = snap.totals
    assert (
        u.input_tokens,
        u.output_tokens,
        u.embedding_tokens,
        u.llm_calls,
        u.tool_calls,
        u.failed_tool_calls,
        u.cost_micros,
    ) == tuple(grand.values())
    for sid, e in per_session.items():
        s = snap.by_session.get(sid)
        got = (
            (0, 0, 0, 0, 0, 0, 0)
            if s is None
            else (
                s.input_tokens,
                s.output_tokens,
                s.embedding_tokens,
                s.llm_calls,
                s.tool_calls,
                s.failed_tool_calls,
                s.cost_micros,
            )
        )
        assert got == tuple(e.values()), sid
    assert sum(c.usage.cost_micros for c in snap.cells) == u.cost_micros


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=st.lists(nodes, min_size=1, max_size=4))
@pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
def test_random_programs_across_threads(programs):
    t = Tracker()
    scopes: list = []
    threads = [threading.Thread(target=run, args=(t, p, scopes)) for p in programs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    check(t, programs, scopes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=st.lists(nodes, min_size=1, max_size=4))
@pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
def test_random_programs_across_tasks(programs):
    t = Tracker()
    scopes: list = []

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(arun(t, p, scopes) for p in programs)), 30)

    asyncio.run(main())
    check(t, programs, scopes)
