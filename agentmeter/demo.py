"""An offline demo: a toy research agent with metered tools and nested scopes.

No model is called: a deterministic fake "LLM" returns token counts from the
prompt's length, and each call is recorded exactly as an integration would
record it. Three sessions run concurrently in threads; the demo ends with a
per-session report of tool stats.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .budget import Budget
from .errors import BudgetExceeded
from .models import SessionUsage
from .scope import run_in_context
from .tracker import Tracker

MODEL = "gpt-4o-mini"
# Who each plain-Python session bills (the frameworks' parts bill initech and globex).
CUSTOMERS = {"s1": "acme", "s2": "acme", "s3": "globex"}


def _fake_llm(tracker: Tracker, prompt: str, rng: random.Random) -> str:
    """Reserve budget, "call" the model, record what it spent."""
    call_id = tracker.new_call_id()
    tracker.check_budget(len(prompt) // 4 + 1, model=MODEL, call_id=call_id)
    out = rng.randint(20, 120)
    tracker.record_llm(
        model=MODEL,
        input_tokens=len(prompt) // 4 + 1,
        output_tokens=out,
        cache_read_tokens=0,
        provider="openai",
        latency_ms=rng.uniform(80, 400),
        call_id=call_id,
    )
    return f"answer({out})"


def build_agent(tracker: Tracker, rng: random.Random) -> Callable[[str, str], str]:
    """Tools and an agent loop, metered with the tracker's decorators."""

    @tracker.metered_tool(category="search")
    def web_search(query: str) -> str:
        time.sleep(rng.uniform(0.001, 0.004))
        return _fake_llm(tracker, f"summarise results for {query}" * 3, rng)

    @tracker.metered_tool(category="compute")
    def calculator(expr: str) -> str:
        if "/0" in expr:
            raise ZeroDivisionError(expr)
        return str(len(expr))

    @tracker.metered("plan")
    def plan(question: str) -> list[str]:
        _fake_llm(tracker, f"plan the steps to answer: {question}" * 5, rng)
        return ["search", "calc", "search"]

    def run(session_id: str, question: str) -> str:
        with tracker.meter(
            "turn",
            session_id=session_id,
            agent_id="researcher",
            customer_id=CUSTOMERS[session_id],
            tags={"env": "demo"},
        ):
            steps = plan(question)
            for step in steps:
                if step == "search":
                    web_search(question)
                else:
                    try:
                        calculator("1/0" if "fail" in question else "2+2")
                    except ZeroDivisionError:
                        pass
            with tracker.meter("answer", agent_id="writer"):
                return _fake_llm(tracker, f"write the final answer to {question}" * 4, rng)

    return run


def format_session(s: SessionUsage) -> str:
    """A plain-text table of one session's usage and tool stats."""
    u = s.usage
    lines = [
        f"session {s.session_id}: {u.llm_calls} LLM calls, {u.total_tokens} tokens, "
        f"${u.cost_usd}, {u.tool_calls} tool calls ({u.failed_tool_calls} failed)",
        f"  {'tool':<12} {'calls':>5} {'ok':>4} {'fail':>4} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'tokens':>7} {'cost $':>10}",
    ]
    for name, t in s.tools.items():
        lines.append(
            f"  {name:<12} {t.calls:>5} {t.ok:>4} {t.failed:>4} {t.p50_ms or 0:>8.2f} "
            f"{t.p95_ms or 0:>8.2f} {t.total_tokens:>7} {t.cost_usd!s:>10}"
        )
    if s.budget is not None:
        lines.append(f"  budget: {s.budget.used} of {s.budget.limits}")
    return "\n".join(lines)


def run_plain(tracker: Tracker, seed: int, say: Callable[[str], None]) -> None:
    """Three sessions in threads (one stopped by its budget), plain Python decorators."""
    tracker.set_budget("s3", Budget(max_llm_calls=4))
    questions = {"s1": "why is the sky blue", "s2": "fail: divide by zero", "s3": "a long one"}

    def session_worker(sid: str, q: str) -> None:
        agent = build_agent(tracker, random.Random(f"{seed}-{sid}"))
        for _ in range(2):
            try:
                agent(sid, q)
            except BudgetExceeded as exc:
                say(f"[{sid}] stopped by its budget: {exc}")
                return

    threads = [
        threading.Thread(target=run_in_context(session_worker), args=(sid, q))
        for sid, q in questions.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sid in questions:
        say(format_session(tracker.session(sid)))


def run_demo(
    tracker: Tracker | None = None,
    *,
    seed: int = 7,
    db: str | None = None,
    frameworks: bool = True,
    say: Callable[[str], None] = print,
) -> Tracker:
    """Run the demo: plain Python, then LangChain and LlamaIndex when installed.

    With ``db`` every call is also written to that database (a path or SQLAlchemy
    URL) and the demo ends with ``agentmeter report``'s tables read back from it.
    """
    from . import _demo_frameworks as fw

    tracker = tracker or Tracker()
    started = datetime.now(UTC)  # the report shows this run, not what the file held before
    sink = None
    if db is not None:
        from .storage import SQLSink

        sink = SQLSink(db)
        tracker.add_sink(sink)
    try:
        say("== plain Python: decorated tools, nested scopes, three sessions in threads ==")
        run_plain(tracker, seed, say)
        if frameworks:
            for name, package, part in (
                ("LangChain / LangGraph", "agentmeter_langchain", fw.run_langchain),
                ("LlamaIndex", "agentmeter_llamaindex", fw.run_llamaindex),
                ("pydantic-ai", "agentmeter_pydantic_ai", fw.run_pydantic_ai),
                ("OpenAI Agents SDK", "agentmeter_openai_agents", fw.run_openai_agents),
            ):
                say(f"== {name} ==")
                if fw.available(package):
                    part(tracker, say)
                else:
                    say(
                        f"skipped: {package} is not installed "
                        f"(pip install -e integrations/{package.split('_')[1]})"
                    )
    finally:
        if sink is not None:
            tracker.remove_sink(sink)
            sink.close()
    snap = tracker.snapshot()
    say(
        f"total: {snap.totals.total_tokens} tokens, ${snap.totals.cost_usd}, "
        f"{snap.totals.llm_calls} LLM calls, {snap.totals.embedding_calls} embedding calls, "
        f"{snap.totals.tool_calls} tool calls"
    )
    if db is not None:
        from .storage import render

        say(f"== this run, read back from {db} (agentmeter report --db {db}) ==")
        say(render(db, since=started, sections=("customer", "session", "model", "agent", "tool")))
        say(
            "== see it in the dashboard ==\n"
            f"  agentmeter serve --db {_quoted(db)}\n"
            "  then open http://127.0.0.1:8000/  (add --token SECRET to require one; open\n"
            "  http://127.0.0.1:8000/?token=SECRET once and the browser keeps it)"
        )
    return tracker


def _quoted(db: str) -> str:
    """``db`` as it should be typed in a shell."""
    import shlex

    return shlex.quote(db)
