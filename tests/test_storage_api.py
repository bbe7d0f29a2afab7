"""UsageStore's read API: customers, tags, filters, time series, partial hours, reset."""

from __future__ import annotations

import json
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
import storage_pg
from storage_util import (
    BASE,
    billing_workload,
    comparable,
    expected_usage,
    priced_tracker,
    random_raws,
    raw_event,
    rollup_mismatches,
)

import agentmeter
from agentmeter import NotFoundError, UsageEvent
from agentmeter.storage import SQLSink, UsageStore, render

db_url = storage_pg.db_url
pg = storage_pg.pg

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")


def replay(events: list[UsageEvent]) -> agentmeter.Tracker:
    """A live tracker that recorded exactly these events (in this order)."""
    t = agentmeter.Tracker()
    for e in events:
        common: dict[str, Any] = {
            "session_id": e.session_id,
            "agent_id": e.agent_id,
            "customer_id": e.customer_id,
            "tags": e.tags,
        }
        cost = None if e.cost_micros is None else Decimal(e.cost_micros).scaleb(-6)
        if e.kind == "embedding":
            t.record_embedding(
                model=e.model or "", input_tokens=e.input_tokens, cost_usd=cost,
                call_id=e.call_id, estimated=e.estimated, **common,
            )  # fmt: skip
        elif e.kind == "tool":
            t.record_tool_call(
                tool=e.tool or "", ok=e.status == "ok", duration_ms=e.latency_ms or 0.0,
                category=e.category or "", call_id=e.call_id, **common,
            )  # fmt: skip
        elif e.kind == "cache_hit":
            t.record_cache_hit(tokens_saved=e.tokens_saved, model=e.model, **common)
        elif e.kind == "cache_miss":
            t.record_cache_miss(model=e.model, **common)
        else:
            t.record_llm(
                model=e.model or "", input_tokens=e.input_tokens, output_tokens=e.output_tokens,
                cache_read_tokens=e.cache_read_tokens, cache_write_tokens=e.cache_write_tokens,
                reasoning_tokens=e.reasoning_tokens, provider=e.provider,
                latency_ms=e.latency_ms, cost_usd=cost, call_id=e.call_id, kind=e.kind,
                estimated=e.estimated, tool=e.tool, ok=e.status == "ok", **common,
            )  # fmt: skip
    return t


def _matches(e: UsageEvent, tags: dict[str, str] | None = None, **eq: Any) -> bool:
    if tags and any((e.tags or {}).get(k) != v for k, v in tags.items()):
        return False
    return all(getattr(e, k) == v for k, v in eq.items())


def _in(e: UsageEvent, lo: float | None, hi: float | None) -> bool:
    ts = e.timestamp.timestamp()
    return (lo is None or ts >= lo) and (hi is None or ts < hi)


def _store_raws(url: str, raws: list[tuple[Any, ...]]) -> None:
    with SQLSink(url) as sink:
        for r in raws:
            sink.submit(r)
        assert sink.flush(30)
        assert sink.stats["written"] == len(raws)


def test_store_matches_tracker_with_customers_and_tags(db_url: str) -> None:
    t = priced_tracker()
    events: list[UsageEvent] = []
    t.subscribe(events.append)
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        billing_workload(t, 300, seed=5)
        assert sink.flush(10)
    live = t.snapshot()
    assert rollup_mismatches(db_url) == {}
    with UsageStore(db_url) as store:
        assert comparable(store.snapshot()) == comparable(live)
        assert live.by_customer and store.snapshot().by_customer_tool == live.by_customer_tool
        for c in t.customers():
            assert store.customer(c) == t.customer(c)
            assert store.tool_stats(customer=c) == dict(t.customer(c).tools)
        for s in t.sessions():
            assert store.session(s) == t.session(s)
        by_customer = store.by("customer")
        assert by_customer == live.by_customer
        totals = [u.total_tokens for u in by_customer.values()]
        assert totals == sorted(totals, reverse=True)
        assert store.count_keys("customer") == len(live.by_customer)
        assert "org/with/slash" in by_customer
        for key in ("team", "env", "q"):
            groups: dict[str, list[UsageEvent]] = {}
            for e in events:
                if e.tags and key in e.tags:
                    groups.setdefault(e.tags[key], []).append(e)
            assert store.by(f"tag:{key}") == {v: expected_usage(es) for v, es in groups.items()}
            assert store.count_keys(f"tag:{key}") == len(groups)
        for tags, eq in (
            ({"team": "search"}, {}),
            ({"team": "search", "env": "dev"}, {}),
            ({"q": 'a "quoted", value}'}, {}),
            ({"env": "prod"}, {"customer_id": "acme"}),
            ({"team": "ads"}, {"model": "m1"}),
        ):
            sel = [e for e in events if _matches(e, tags, **eq)]
            kw = {"customer": eq.get("customer_id"), "model": eq.get("model")}
            assert store.totals(tags=tags, **kw) == expected_usage(sel)
            assert store.count(tags=tags, **kw) == len(sel)
            assert comparable(store.snapshot(tags=tags, **kw)) == comparable(replay(sel).snapshot())
        team = store.by("tag:team", tags={"env": "prod"})
        prod = [e for e in events if _matches(e, {"env": "prod"}) and "team" in (e.tags or {})]
        assert team == {"ads": expected_usage([e for e in prod if e.tags["team"] == "ads"])}  # type: ignore[index]
        with pytest.raises(NotFoundError, match="unknown customer 'nobody'"):
            store.customer("nobody")
        with pytest.raises(LookupError, match="unknown session 'nope'"):
            store.session("nope")
        assert store.tool_stats(customer="nobody") == {}
        with pytest.raises(ValueError, match="dimension"):
            store.by("tag:")
        with pytest.raises(ValueError, match="must not be empty"):
            store.totals(customer="")


@pytest.mark.parametrize(("seed", "hours"), [(1, 6), (2, 80)])
def test_partial_hours_equal_the_events(db_url: str, seed: int, hours: int) -> None:
    raws = random_raws(600, seed, hours=hours)
    _store_raws(db_url, raws)
    assert rollup_mismatches(db_url) == {}
    events = [UsageEvent.from_raw(r) for r in raws]
    h = 3600
    bounds = [
        (None, None),
        (BASE + h, BASE + 3 * h),  # whole hours
        (BASE + 1800.25, BASE + 3 * h + 10),  # partial at both ends
        (BASE + 100, BASE + 200),  # inside one hour
        (BASE + 2 * h - 0.5, BASE + 2 * h + 0.5),  # across one boundary
        (None, BASE + 5000),
        (BASE + 4000.5, None),
        (BASE + 100 * h, None),  # nothing
        (BASE + 5 * h + 0.5, BASE + 3 * 24 * h + 7 * h + 12.25),  # days, hours, raw
        (BASE + 24 * h, BASE + 3 * 24 * h),  # whole days
        (BASE + 20 * h, None),  # hours then days
        (BASE + 23 * h, BASE + 49 * h),  # an hour, a day, an hour
    ]
    with UsageStore(db_url) as store:
        for lo, hi in bounds:
            sel = [e for e in events if _in(e, lo, hi)]
            assert store.totals(lo, hi) == expected_usage(sel), (lo, hi)
            assert store.count(lo, hi) == len(sel)
            assert comparable(store.snapshot(lo, hi)) == comparable(replay(sel).snapshot()), (
                lo,
                hi,
            )
            acme = [e for e in sel if e.customer_id == "acme"]
            if acme:
                assert store.customer("acme", lo, hi) == replay(acme).customer("acme")
            s1 = [e for e in sel if e.session_id == "s1"]
            if s1:
                assert store.session("s1", lo, hi) == replay(s1).session("s1")
            stats = store.tool_stats(since=lo, until=hi)
            for name, st in stats.items():  # over all sessions: the latest calls by time
                calls = sorted(
                    (e.timestamp.timestamp(), e.call_id)
                    for e in sel
                    if e.kind == "tool" and e.tool == name
                )
                assert st.recent_call_ids == tuple(c for _, c in calls[-8:]), (lo, hi, name)
            live = replay(sel).tool_stats()
            assert {k: v.model_dump(exclude={"recent_call_ids"}) for k, v in stats.items()} == {
                k: v.model_dump(exclude={"recent_call_ids"}) for k, v in live.items()
            }
            tagged = [e for e in sel if _matches(e, {"team": "search"})]
            assert store.totals(lo, hi, tags={"team": "search"}) == expected_usage(tagged)
            by_team: dict[str, list[UsageEvent]] = {}
            for e in sel:
                if e.tags and "team" in e.tags:
                    by_team.setdefault(e.tags["team"], []).append(e)
            assert store.by("tag:team", lo, hi) == {
                k: expected_usage(v) for k, v in by_team.items()
            }


def test_timeseries(db_url: str) -> None:
    raws = random_raws(400, 7, hours=30)
    _store_raws(db_url, raws)
    events = [UsageEvent.from_raw(r) for r in raws]
    with UsageStore(db_url) as store:
        hourly = store.timeseries("hour")
        expect: dict[float, list[UsageEvent]] = {}
        for e in events:
            ts = e.timestamp.timestamp()
            expect.setdefault(ts - ts % 3600, []).append(e)
        assert [(t.timestamp(), k, u) for t, k, u in hourly] == [
            (h, None, expected_usage(expect[h])) for h in sorted(expect)
        ]
        assert all(t.tzinfo is UTC for t, _, _ in hourly)
        daily = store.timeseries("day", by="customer")
        groups: dict[tuple[float, str], list[UsageEvent]] = {}
        for e in events:
            ts = e.timestamp.timestamp()
            groups.setdefault((ts - ts % 86400, e.customer_id or ""), []).append(e)
        assert [(t.timestamp(), k or "", u) for t, k, u in daily] == [
            (d, c, expected_usage(groups[(d, c)])) for d, c in sorted(groups)
        ]
        since = BASE + 5 * 3600 + 900
        part = store.timeseries("hour", by="model", since=since, until=since + 7200, session="s1")
        sel = [e for e in events if _in(e, since, since + 7200) and e.session_id == "s1"]
        assert sum((u for _, _, u in part), agentmeter.Usage()) == expected_usage(sel)
        with pytest.raises(ValueError, match="bucket"):
            store.timeseries("week")
        with pytest.raises(ValueError, match="by"):
            store.timeseries("hour", by="colour")


def test_reset_needs_a_bound_and_removes_exactly_what_it_names(db_url: str) -> None:
    raws = random_raws(500, 11, hours=100)
    _store_raws(db_url, raws)
    events = [UsageEvent.from_raw(r) for r in raws]
    with UsageStore(db_url) as store:
        with pytest.raises(ValueError, match="name what to delete"):
            store.reset()
        assert store.count() == 500
        steps: list[dict[str, Any]] = [
            {"customer": "acme"},
            {"since": BASE + 1800.5, "until": BASE + 2 * 3600 + 7},
            {"session": "s1", "since": BASE + 4 * 3600 + 60},
            {"until": BASE + 600},
            {"since": BASE + 30 * 3600 + 5.5, "until": BASE + 75 * 3600},  # days in between
            {"since": BASE + 90 * 3600, "customer": "beta"},
            {"since": BASE + 48 * 3600, "until": BASE + 72 * 3600},  # one whole day
            {"session": "s2"},  # every day it touched: the session-free levels rebuilt
        ]
        for kw in steps:
            lo, hi = kw.get("since"), kw.get("until")
            gone = [
                e for e in events
                if _in(e, lo, hi)
                and _matches(e, customer_id=kw.get("customer", e.customer_id),
                             session_id=kw.get("session", e.session_id))
            ]  # fmt: skip
            events = [e for e in events if e not in gone]
            removed = store.reset(**kw)
            u = expected_usage(gone)
            assert removed == {
                "events": len(gone),
                "llm_calls": u.llm_calls,
                "embedding_calls": u.embedding_calls,
                "tool_calls": u.tool_calls,
                "total_tokens": u.total_tokens,
                "cost_micros": u.cost_micros,
            }, kw
            assert store.count() == len(events)
            assert rollup_mismatches(db_url) == {}, kw
            assert comparable(store.snapshot()) == comparable(replay(events).snapshot()), kw
            mid = BASE + 3 * 3600 + 1234.5
            rest = [e for e in events if _in(e, mid, None)]
            assert store.totals(mid) == expected_usage(rest)


def test_a_priced_tool_call_is_billed_on_every_level_and_surface(db_url: str) -> None:
    """A tool call carrying a cost (a paid search API, priced by the caller) lands in
    the rollups of every level, the totals, the breakdowns and the report; it is never
    an "unpriced" call, with or without a cost."""
    day = 86400
    raws = [
        raw_event("t1", BASE + 10, "tool", tool="search", latency_ms=12.0, cost_micros=1500,
                  customer_id="acme", session_id="s1", category="web"),
        raw_event("t2", BASE + day + 20, "tool", tool="search", latency_ms=8.0,
                  customer_id="acme", session_id="s2"),
        raw_event("t3", BASE + day + 30, "tool", tool="fetch", latency_ms=3.0, cost_micros=7,
                  customer_id="beta", session_id="s3"),
        raw_event("c1", BASE + 30, "chat", model="m1", input_tokens=10, output_tokens=5,
                  cost_micros=200, customer_id="acme", session_id="s1", tool="search"),
    ]  # fmt: skip
    _store_raws(db_url, raws)
    assert rollup_mismatches(db_url) == {}
    with UsageStore(db_url) as store:
        totals = store.totals()
        assert (totals.cost_micros, totals.unpriced_calls, totals.tool_calls) == (1707, 0, 3)
        assert totals == expected_usage([UsageEvent.from_raw(r) for r in raws])
        assert {k: u.cost_micros for k, u in store.by("customer").items()} == {
            "acme": 1700,
            "beta": 7,
        }
        assert {k: u.cost_micros for k, u in store.by("tool").items()} == {
            "search": 1700,
            "fetch": 7,
        }
        assert {k: u.cost_micros for k, u in store.by("session").items()} == {
            "s1": 1700,
            "s2": 0,
            "s3": 7,
        }
        assert store.customer("acme").usage.cost_micros == 1700
        assert [u.cost_micros for _, _, u in store.timeseries("day")] == [1700, 7]
        assert [u.cost_micros for _, _, u in store.timeseries("hour")] == [1700, 7]
        assert store.totals(since=BASE + 20).cost_micros == 207  # a partial hour, raw
        assert store.reset(session="s1")["cost_micros"] == 1700
        assert store.totals().cost_micros == 7
    assert rollup_mismatches(db_url) == {}
    report = json.loads(render(db_url, "json", sections=["customer", "tool"]))
    assert report["totals"]["cost_usd"] == "0.000007"
    assert report["by_tool"]["fetch"]["cost_usd"] == "0.000007"
