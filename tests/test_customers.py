"""Customer attribution and tags: the billing dimensions of the live tracker."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

import agentmeter
from agentmeter import CustomerUsage, NotFoundError, Tracker


def test_customer_is_inherited_by_nested_scopes_and_records(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    with tracker.meter("request", customer_id="acme", session_id="s1"):
        with tracker.meter("turn", agent_id="planner"):
            tracker.record_llm(model="gpt-4o-mini", input_tokens=100, output_tokens=10)
            tracker.record_embedding(model="text-embedding-3-small", input_tokens=7)
            tracker.record_tool_call(tool="search", ok=False, duration_ms=4.0)
            tracker.record_cache_hit(tokens_saved=3)
    assert [e.customer_id for e in events] == ["acme"] * 4
    c = tracker.customer("acme")
    assert isinstance(c, CustomerUsage)
    assert c.usage.llm_calls == 1 and c.usage.embedding_calls == 1
    assert c.usage.input_tokens == 100 and c.usage.embedding_tokens == 7
    assert c.usage.tool_calls == 1 and c.usage.failed_tool_calls == 1
    assert c.usage.cache_hits == 1
    assert set(c.by_session) == {"s1"} and set(c.by_agent) == {"planner"}
    assert c.tools["search"].calls == 1 and c.tools["search"].failed == 1
    assert tracker.customers() == ["acme"]


def test_explicit_customer_overrides_the_scope(tracker: Tracker) -> None:
    with tracker.meter("turn", customer_id="acme"):
        tracker.record_llm(model="m", input_tokens=1, output_tokens=1)
        tracker.record_llm(model="m", input_tokens=5, output_tokens=5, customer_id="beta")
        with tracker.meter("inner", customer_id="gamma"):
            tracker.record_llm(model="m", input_tokens=2, output_tokens=2)
    snap = tracker.snapshot()
    assert {k: u.total_tokens for k, u in snap.by_customer.items()} == {
        "acme": 2,
        "beta": 10,
        "gamma": 4,
    }
    assert sum(u.total_tokens for u in snap.by_customer.values()) == snap.totals.total_tokens


def test_a_scopes_customer_can_change_mid_run(tracker: Tracker) -> None:
    with tracker.meter("turn", customer_id="acme") as scope:
        tracker.record_llm(model="m", input_tokens=1, output_tokens=0)
        scope.customer_id = "beta"  # e.g. the request was re-attributed
        tracker.record_llm(model="m", input_tokens=2, output_tokens=0)
    by = tracker.snapshot().by_customer
    assert by["acme"].input_tokens == 1 and by["beta"].input_tokens == 2


def test_tools_inside_a_customer_scope_credit_llm_usage_to_the_customers_tool(
    tracker: Tracker,
) -> None:
    @tracker.metered_tool(category="search")
    def search(q: str) -> str:
        tracker.record_llm(model="gpt-4o-mini", input_tokens=50, output_tokens=5)
        return q

    @tracker.metered(customer_id="acme", tags={"plan": "pro"})
    def handle() -> None:
        search("x")
        search("y")

    handle()
    tool = tracker.customer("acme").tools["search"]
    assert tool.calls == 2 and tool.llm_calls == 2 and tool.input_tokens == 100
    assert tool.category == "search"
    snap = tracker.snapshot()
    assert snap.by_customer_tool["acme"]["search"] == tool


def test_metered_tool_takes_customer_and_tags(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)

    @tracker.metered_tool(customer_id="acme", tags={"tool_tier": "paid"})
    def lookup() -> int:
        return 1

    lookup()
    assert events[-1].kind == "tool"
    assert events[-1].customer_id == "acme" and events[-1].tags == {"tool_tier": "paid"}


def test_tags_are_merged_scope_over_scope_and_record_over_scope(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    with tracker.meter("a", tags={"env": "prod", "team": "x"}):
        with tracker.meter("b", tags={"team": "y"}):
            tracker.record_llm(model="m", input_tokens=1, output_tokens=1, tags={"run": "7"})
            tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0)
    tracker.record_llm(model="m", input_tokens=1, output_tokens=1)
    assert events[0].tags == {"env": "prod", "team": "y", "run": "7"}
    assert events[1].tags == {"env": "prod", "team": "y"}
    assert events[2].tags is None


def test_tags_given_are_copied(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    tags = {"k": "v"}
    tracker.record_llm(model="m", input_tokens=1, output_tokens=1, tags=tags)
    tags["k"] = "changed"
    assert events[0].tags == {"k": "v"}


@pytest.mark.parametrize(
    ("tags", "exc", "match"),
    [
        ("env=prod", TypeError, "tags must be a dict"),
        ({"env": 1}, TypeError, r"tags\['env'\] must be a str"),
        ({1: "x"}, TypeError, "tags keys must be str"),
        ({"": "x"}, ValueError, "tags key must be 1..64"),
        ({"k" * 65: "x"}, ValueError, "tags key must be 1..64"),
        ({"k": "v" * 257}, ValueError, "at most 256"),
        ({f"k{i}": "v" for i in range(33)}, ValueError, "at most 32 pairs"),
    ],
)
def test_bad_tags_are_refused_and_count_nothing(
    tracker: Tracker, tags: object, exc: type[Exception], match: str
) -> None:
    for call in (
        lambda: tracker.record_llm(model="m", input_tokens=1, output_tokens=1, tags=tags),  # type: ignore[arg-type]
        lambda: tracker.record_embedding(model="m", input_tokens=1, tags=tags),  # type: ignore[arg-type]
        lambda: tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0, tags=tags),  # type: ignore[arg-type]
        lambda: tracker.record_cache_miss(tags=tags),  # type: ignore[arg-type]
        lambda: tracker.meter("x", tags=tags),  # type: ignore[arg-type]
        lambda: tracker.metered(tags=tags),  # type: ignore[arg-type]
    ):
        with pytest.raises(exc, match=match):
            call()
    assert tracker.snapshot().totals == agentmeter.Usage()


@pytest.mark.parametrize("bad", ["", 5])
def test_bad_customer_id_is_refused_and_counts_nothing(tracker: Tracker, bad: object) -> None:
    exc = ValueError if bad == "" else TypeError
    with pytest.raises(exc, match="customer_id"):
        tracker.record_llm(model="m", input_tokens=1, output_tokens=1, customer_id=bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match="customer_id"):
        tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0, customer_id=bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match="customer_id"):
        tracker.meter("x", customer_id=bad)  # type: ignore[arg-type]
    with pytest.raises(exc, match="customer_id"):
        tracker.metered_tool(customer_id=bad)  # type: ignore[arg-type]
    assert tracker.snapshot().totals == agentmeter.Usage()
    with pytest.raises(exc, match="customer_id"):
        tracker.customer(bad)  # type: ignore[arg-type]


def test_unknown_ids_raise_one_lookup_error(tracker: Tracker) -> None:
    with pytest.raises(NotFoundError, match="unknown customer 'nobody'") as ci:
        tracker.customer("nobody")
    assert isinstance(ci.value, LookupError) and ci.value.kind == "customer"
    with pytest.raises(NotFoundError, match="unknown session 'nobody'") as si:
        tracker.session("nobody")
    assert si.value.kind == "session" and si.value.key == "nobody"
    with pytest.raises(LookupError):
        tracker.close_session("nobody")
    # Picklable (multiprocessing workers hand errors back to the parent).
    again = pickle.loads(pickle.dumps(ci.value))
    assert type(again) is NotFoundError and str(again) == str(ci.value)


def test_customer_survives_close_session_and_merge(tracker: Tracker) -> None:
    with tracker.meter("t", customer_id="acme", session_id="s1"):
        tracker.record_llm(model="gpt-4o-mini", input_tokens=10, output_tokens=1)
        tracker.record_tool_call(tool="search", ok=True, duration_ms=2.0)
    tracker.close_session("s1")
    c = tracker.customer("acme")
    assert c.usage.total_tokens == 11 and c.tools["search"].calls == 1
    other = Tracker()
    other.merge(tracker.snapshot())
    other.merge(tracker.snapshot())
    merged = other.customer("acme")
    assert merged.usage.total_tokens == 22 and merged.tools["search"].calls == 2
    assert other.snapshot().by_customer["acme"].total_tokens == 22
    # and through JSON, as `agentmeter merge` carries snapshots between processes
    third = Tracker()
    third.merge(agentmeter.Snapshot.model_validate_json(tracker.snapshot().model_dump_json()))
    assert third.customer("acme").tools["search"].calls == 1


def test_reset_forgets_customers(tracker: Tracker) -> None:
    tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0, customer_id="acme")
    tracker.reset()
    with pytest.raises(NotFoundError):
        tracker.customer("acme")
    assert tracker.customers() == []


def test_customers_are_exact_across_threads_and_tasks(tracker: Tracker) -> None:
    n = 300

    def worker(customer: str) -> None:
        with tracker.meter("w", customer_id=customer, session_id=f"s-{customer}"):
            for _ in range(n):
                tracker.record_llm(model="gpt-4o-mini", input_tokens=3, output_tokens=1)
                tracker.record_tool_call(tool="t", ok=True, duration_ms=0.5)

    threads = [threading.Thread(target=worker, args=(f"c{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    async def task(customer: str) -> None:
        async with tracker.meter("a", customer_id=customer):
            for _ in range(n):
                tracker.record_llm(model="gpt-4o-mini", input_tokens=3, output_tokens=1)
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(task(f"async{i}") for i in range(4)))

    asyncio.run(main())
    snap = tracker.snapshot()
    for i in range(6):
        c = tracker.customer(f"c{i}")
        assert c.usage.llm_calls == n and c.usage.input_tokens == 3 * n
        assert c.tools["t"].calls == n
    for i in range(4):
        assert snap.by_customer[f"async{i}"].llm_calls == n
    assert sum(u.llm_calls for u in snap.by_customer.values()) == snap.totals.llm_calls
