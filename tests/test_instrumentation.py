"""The public instrumentation API: calls in flight, attribution, guarded."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentmeter
from agentmeter import Budget, BudgetExceeded, Tracker
from agentmeter import instrumentation as ami
from agentmeter.instrumentation import UsageCounts


def counts(inp: int, out: int, **kw: int) -> UsageCounts:
    return UsageCounts(input_tokens=inp, output_tokens=out, reported_input=True,
                       reported_output=True, **kw)  # fmt: skip


@pytest.fixture(autouse=True)
def _priced(tracker: Tracker) -> None:
    tracker.set_price("m", input_per_mtok=1, output_per_mtok=2)


def test_public_names_are_exported() -> None:
    assert set(ami.__all__) >= {
        "start_llm", "start_embedding", "start_tool", "LLMCall", "EmbeddingCall", "ToolCall",
        "capture", "attached", "run_attached", "guarded", "normalise_usage", "UsageCounts",
        "estimate_tokens", "estimate_messages", "register_call_id_provider",
    }  # fmt: skip
    for name in ami.__all__:
        assert getattr(ami, name) is not None


def test_llm_call_finish_records_once_with_attribution(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    with tracker.meter("turn", session_id="s1", agent_id="a", customer_id="acme") as scope:
        call = ami.start_llm("m", provider="p", tracker=tracker, call_id="run-1")
    # finished later, outside the scope: the captured attribution is used
    assert call.finish(counts(100, 10, cache_read_tokens=40, reasoning_tokens=3))
    assert not call.finish(counts(999, 999)) and not call.fail("late") and not call.cancel()
    assert call.done
    assert scope.usage.llm_calls == 1 and scope.usage.input_tokens == 100
    (e,) = events
    assert (e.call_id, e.session_id, e.agent_id, e.customer_id) == ("run-1", "s1", "a", "acme")
    assert (e.cache_read_tokens, e.reasoning_tokens, e.estimated) == (40, 3, False)
    assert e.latency_ms is not None and e.latency_ms >= 0
    assert e.cost_micros == 100 * 1 + 10 * 2  # $1 / $2 per Mtok = 1 / 2 micro-USD per token


def test_llm_calls_are_made_by_start_llm_only(tracker: Tracker) -> None:
    with pytest.raises(TypeError, match="start_llm"):
        ami.LLMCall()
    call = ami.start_llm("m", kind="completion", call_id=uuid.UUID(int=7), tracker=tracker)
    assert (call.model, call.provider, call.kind, call.chunks, call.done) == (
        "m", None, "completion", 0, False,
    )  # fmt: skip
    assert call.call_id == str(uuid.UUID(int=7)) and call.tracker is tracker
    assert call.prompt_tokens() == 0 and call.elapsed_ms() >= 0


def test_calls_in_flight_record_through_the_trackers_own_record_llm() -> None:
    """The calls in flight end in ``Tracker.record_llm`` (its checks skipped, not its
    body), so a subclass that wraps it sees every integration's model calls."""
    seen: list[tuple[str, int, int]] = []

    class Audited(Tracker):
        def record_llm(self, *args: object, **kwargs: object) -> None:
            seen.append(args[:3])  # type: ignore[arg-type]
            super().record_llm(*args, **kwargs)  # type: ignore[arg-type]

    t = Audited()
    t.set_price("m", input_per_mtok=1, output_per_mtok=2)
    ami.start_llm("m", tracker=t, call_id="fast").finish(counts(1000, 500))  # the usual end
    ami.start_llm("m", tracker=t, call_id="full", prompt="hi").finish(output_text="ok")
    ami.start_llm("m", tracker=t, call_id="failed").fail(RuntimeError("boom"))
    assert seen == [("m", 1000, 500), ("m", 1, 1), ("m", 0, 0)]
    usage = t.snapshot().totals
    assert (usage.llm_calls, usage.failed_llm_calls, usage.estimated_calls) == (3, 1, 1)
    assert usage.cost_micros == 2000 + 3  # 1 micro-USD per input token, 2 per output


@settings(max_examples=200, deadline=None)
@given(st.uuids())
def test_a_uuid_call_id_is_recorded_in_its_canonical_form(u: uuid.UUID) -> None:
    """LangChain's run ids are UUIDs; they are recorded (and deduplicated) as str(u)."""
    t = Tracker()
    assert ami.start_llm("m", tracker=t, call_id=u).call_id == str(u)
    assert ami.start_tool("search", tracker=t, call_id=u, open_scope=False).call_id == str(u)


def test_unreported_usage_is_estimated_and_flagged(tracker: Tracker) -> None:
    call = ami.start_llm("m", tracker=tracker, prompt="hello there " * 20)
    call.finish(None, output_text="a short answer of several words")
    u = tracker.snapshot().totals
    assert u.llm_calls == 1 and u.estimated_calls == 1
    assert u.input_tokens > 0 and u.output_tokens > 0


def test_half_reported_usage_estimates_only_the_missing_part(tracker: Tracker) -> None:
    call = ami.start_llm("m", tracker=tracker, prompt="x" * 400)
    call.finish(UsageCounts(input_tokens=0, output_tokens=7, reported_input=False,
                            reported_output=True, malformed=("prompt_tokens",)))  # fmt: skip
    u = tracker.snapshot().totals
    assert u.output_tokens == 7 and u.input_tokens >= 50 and u.estimated_calls == 1


def test_stream_chunks_abandon_and_fail(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    s = ami.start_llm("m", tracker=tracker, prompt="q" * 40)
    for piece in ("abcd", "efgh", "ijkl"):
        s.add_chunk(piece)
    assert s.chunks == 3
    s.abandon()
    e = events[-1]
    assert e.status == "ok" and e.estimated and e.output_tokens == 3
    assert e.metadata == {"stream": "abandoned", "partial": True}
    f = ami.start_llm("m", tracker=tracker)
    assert f.fail(RuntimeError("boom"))
    assert events[-1].status == "error" and events[-1].error == "RuntimeError"
    assert events[-1].input_tokens == 0
    done = ami.start_llm("m", tracker=tracker)
    done.add_chunk("x", counts(5, 0))
    done.add_chunk("y", UsageCounts(input_tokens=0, output_tokens=4, reported_input=False,
                                    reported_output=True))  # fmt: skip
    done.finish()
    assert (events[-1].input_tokens, events[-1].output_tokens) == (5, 4)


def test_budget_is_reserved_at_start_and_refused_before_the_call(tracker: Tracker) -> None:
    with tracker.meter("run", budget=Budget(max_llm_calls=1)) as scope:
        first = ami.start_llm("m", tracker=tracker)
        with pytest.raises(BudgetExceeded):
            ami.start_llm("m", tracker=tracker)  # the first is still in flight
        first.finish(counts(1, 1))
        with pytest.raises(BudgetExceeded):
            ami.start_llm("m", tracker=tracker)
    assert scope.usage.llm_calls == 1


def test_cancel_gives_the_reservation_back_and_records_nothing(tracker: Tracker) -> None:
    with tracker.meter("run", budget=Budget(max_llm_calls=1)) as scope:
        c = ami.start_llm("m", tracker=tracker)
        assert c.cancel()
        again = ami.start_llm("m", tracker=tracker)  # the budget is free again
        again.finish(counts(2, 2))
    assert scope.usage.llm_calls == 1
    assert tracker.snapshot().totals.llm_calls == 1


def test_exactly_once_under_racing_threads(tracker: Tracker) -> None:
    calls = [ami.start_llm("m", tracker=tracker) for _ in range(200)]

    def end(i: int) -> tuple[int, bool]:
        c = calls[i % 200]
        which = i // 200  # the four attempts on one call: finish, fail, cancel, abandon
        fns = (lambda: c.finish(counts(1, 1)), lambda: c.fail("x"), c.cancel,
               lambda: c.abandon())  # fmt: skip
        return which, fns[which]()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(end, range(800)))
    wins = [which for which, won in results if won]
    assert len(wins) == 200  # each call ended exactly once
    cancelled = wins.count(2)
    u = tracker.snapshot().totals
    assert u.llm_calls == 200 - cancelled  # a cancel records nothing, the others one call
    assert u.failed_llm_calls == wins.count(1)


def test_tool_call_opens_a_scope_credits_llm_usage_and_counts_once(tracker: Tracker) -> None:
    with tracker.meter("turn", session_id="s", customer_id="c"):
        tool = ami.start_tool("search", category="web", tracker=tracker, call_id="t-1")
        tracker.record_llm("m", 10, 1)  # made inside the tool's body
        tool.finish()
        assert not tool.finish()
        bad = ami.start_tool("search", tracker=tracker)
        bad.fail(ValueError("x"))
    stats = tracker.session("s").tools["search"]
    assert (stats.calls, stats.ok, stats.failed, stats.llm_calls) == (2, 1, 1, 1)
    assert stats.category == "web"
    assert tracker.customer("c").tools["search"].calls == 2
    assert tracker.current_scope() is None


def test_tool_budget_refusal_closes_its_scope(tracker: Tracker) -> None:
    with tracker.meter("t", budget=Budget(max_tool_calls=0)):
        with pytest.raises(BudgetExceeded):
            ami.start_tool("search", tracker=tracker)
        assert tracker.current_scope() is not None and tracker.current_scope().name == "t"
    assert tracker.snapshot().totals.tool_calls == 0


def test_embedding_call(tracker: Tracker) -> None:
    tracker.set_price("e", input_per_mtok=1, output_per_mtok=0)
    a = ami.start_embedding("e", tracker=tracker, texts=["a b c", "d e f"])
    a.finish(12)
    b = ami.start_embedding("e", tracker=tracker, texts=["one two three four"])
    b.finish()
    c = ami.start_embedding("e", tracker=tracker)
    c.fail("timeout")
    u = tracker.snapshot().totals
    assert u.embedding_calls == 3 and u.estimated_calls == 1 and u.embedding_tokens > 12


def test_capture_and_attach_across_threads_and_tasks(tracker: Tracker) -> None:
    with tracker.meter("outer", session_id="s", customer_id="acme") as scope:
        attr = ami.capture(tracker, agent_id="worker", tags={"k": "v"})

    def in_thread() -> None:
        ami.run_attached(attr, tracker.record_llm, "m", 3, 1)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(10)

    async def in_task() -> None:
        with ami.attached(attr):
            tracker.record_llm("m", 5, 1)

    asyncio.run(in_task())
    assert scope.usage.llm_calls == 2 and scope.usage.input_tokens == 8
    assert tracker.customer("acme").usage.llm_calls == 2
    assert attr.effective_session_id == "s" and attr.scope is scope


def test_guarded_swallows_internal_errors_but_not_budget_errors(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENTMETER_STRICT", "0")
    with caplog.at_level(logging.ERROR, logger="agentmeter"), ami.guarded("MyHandler.on_end"):
        raise RuntimeError("bug in an integration")
    assert "MyHandler.on_end" in caplog.text

    @ami.guarded("decorated")
    def f() -> None:
        raise KeyError("x")

    f()
    with pytest.raises(BudgetExceeded), ami.guarded("x"):
        raise BudgetExceeded("scope 'x'", "max_tokens", 1, 1, 0, 1)
    with pytest.raises(KeyboardInterrupt), ami.guarded("x"):
        raise KeyboardInterrupt
    monkeypatch.setenv("AGENTMETER_STRICT", "1")
    with pytest.raises(RuntimeError), ami.guarded("strict"):
        raise RuntimeError("strict re-raises")


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda t: ami.start_llm("", tracker=t), ValueError, "model"),
        (lambda t: ami.start_llm(5, tracker=t), TypeError, "model"),  # type: ignore[arg-type]
        (lambda t: ami.start_llm("m", kind=["chat"], tracker=t), TypeError, "kind"),  # type: ignore[arg-type]
        (lambda t: ami.start_llm("m", provider="", tracker=t), ValueError, "provider"),
        (lambda t: ami.start_llm("m", prompt_tokens=-1, tracker=t), ValueError, "prompt_tokens"),
        (lambda t: ami.start_llm("m", session_id="\ud800", tracker=t), ValueError, "session_id"),
        (lambda t: ami.start_llm("m", tracker="t"), TypeError, "tracker"),  # type: ignore[arg-type]
        (lambda t: ami.start_tool("", tracker=t), ValueError, "tool"),
        (lambda t: ami.start_tool("x", category=1, tracker=t), TypeError, "category"),  # type: ignore[arg-type]
        (lambda t: ami.start_embedding("e", texts="abc", tracker=t), TypeError, "texts"),
        (lambda t: ami.capture(t, tags={"k": 1}), TypeError, "tags"),  # type: ignore[dict-item]
        (lambda t: ami.start_llm("m", tracker=t, call_id=3.5), TypeError, "call_id"),
    ],
)
def test_bad_arguments_name_themselves_and_change_nothing(
    tracker: Tracker, call: object, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        call(tracker)  # type: ignore[operator]
    assert tracker.snapshot().totals == agentmeter.Usage()


def test_default_tracker_is_used_without_one(default_tracker: Tracker) -> None:
    ami.start_llm("m").finish(counts(1, 1))
    assert agentmeter.snapshot().totals.llm_calls == 1


def test_abandon_takes_what_the_stream_said(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    text = "the part of the answer that arrived before the consumer stopped"
    s = ami.start_llm("m", tracker=tracker, prompt="q" * 40)
    assert s.abandon(output_text=text, model="m-2024", provider="p", metadata={"k": "v"})
    (e,) = events
    assert (e.model, e.provider, e.status, e.estimated) == ("m-2024", "p", "ok", True)
    assert e.output_tokens == ami.estimate_tokens(text, "m")  # from the text, not 0 chunks
    assert e.metadata == {"k": "v", "stream": "abandoned", "partial": True}
    assert not s.abandon(output_text=text)
    broken = ami.start_llm("m", tracker=tracker)
    broken.add_chunk("abcdefgh")
    assert broken.abandon("cut", ok=False, metadata={"stream": "mine"})
    assert events[-1].metadata == {"stream": "failed", "partial": True}  # agentmeter's keys win
    assert (events[-1].status, events[-1].error, events[-1].output_tokens) == ("error", "cut", 2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"output_text": 5}, TypeError, "output_text"),
        ({"model": 5}, TypeError, "model"),
        ({"provider": "\ud800"}, ValueError, "provider"),
        ({"metadata": ["x"]}, TypeError, "metadata"),
        ({"note": 3}, TypeError, "note"),
        ({"ok": 1}, TypeError, "ok"),
        ({"usage": {"input_tokens": 1}}, TypeError, "usage"),
    ],
)
def test_abandon_checks_its_arguments_and_leaves_the_call_open(
    tracker: Tracker, kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    s = ami.start_llm("m", tracker=tracker)
    with pytest.raises(exc, match=match):
        s.abandon(**kwargs)  # type: ignore[arg-type]
    assert not s.done and tracker.snapshot().totals.llm_calls == 0
    assert s.abandon()
    assert tracker.snapshot().totals.llm_calls == 1


def test_finish_latency_measured_reported_or_unknown(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    ami.start_llm("m", tracker=tracker).finish(counts(1, 1))
    assert events[-1].latency_ms is not None and events[-1].latency_ms >= 0
    ami.start_llm("m", tracker=tracker).finish(counts(1, 1), latency_ms=12.5)
    assert events[-1].latency_ms == 12.5
    ami.start_llm("m", tracker=tracker).finish(counts(1, 1), latency_ms=7)
    assert events[-1].latency_ms == 7.0
    ami.start_llm("m", tracker=tracker).finish(counts(1, 1), latency_ms=None)
    assert events[-1].latency_ms is None  # unknown: recorded without one
    u = tracker.snapshot().totals
    assert u.llm_calls == 4 and u.llm_latency_ms >= 19.5
    for bad, exc in ((-1.0, ValueError), (float("nan"), ValueError), ("5", TypeError)):
        call = ami.start_llm("m", tracker=tracker)
        with pytest.raises(exc, match="latency_ms"):
            call.finish(counts(1, 1), latency_ms=bad)  # type: ignore[arg-type]
        assert not call.done  # a bad argument ends nothing
        assert call.finish(counts(1, 1))
    assert tracker.snapshot().totals.llm_calls == 7


def test_finish_checks_its_arguments_before_ending_the_call(tracker: Tracker) -> None:
    call = ami.start_llm("m", tracker=tracker)
    for kwargs, exc in (
        ({"model": 3}, TypeError),
        ({"cost_usd": -1}, ValueError),
        ({"cost_usd": "1"}, TypeError),
        ({"metadata": "x"}, TypeError),
        ({"output_text": b"x"}, TypeError),
    ):
        with pytest.raises(exc):
            call.finish(counts(1, 1), **kwargs)  # type: ignore[arg-type]
        assert not call.done
    with pytest.raises(TypeError, match="usage"):
        call.finish({"input_tokens": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error"):
        call.fail(3)  # type: ignore[arg-type]
    assert tracker.snapshot().totals.llm_calls == 0
    assert call.finish(counts(3, 1), model="", cost_usd=0.25)
    u = tracker.snapshot().totals
    assert (u.llm_calls, u.input_tokens, u.cost_micros) == (1, 3, 250_000)
    assert tracker.snapshot().by_model["m"].llm_calls == 1


def test_explicit_attribution_is_checked_at_start(tracker: Tracker) -> None:
    good = ami.capture(tracker, session_id="s")
    with pytest.raises(ValueError, match="session_id"):
        ami.start_llm("m", attribution=good.replace(session_id=""))
    with pytest.raises(TypeError, match="tags"):
        ami.start_llm("m", attribution=good.replace(tags={"k": 1}))
    with pytest.raises(TypeError, match="tracker"):
        ami.start_llm("m", attribution=good.replace(tracker="t"))
    with pytest.raises(TypeError, match="attribution"):
        ami.start_llm("m", attribution=("t", ()))  # type: ignore[arg-type]
    assert tracker.snapshot().totals == agentmeter.Usage()
    ami.start_llm("m", attribution=good.replace(agent_id="a")).finish(counts(2, 1))
    assert tracker.session("s").usage.llm_calls == 1


def test_embedding_finish_estimated_flag(tracker: Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    tracker.subscribe(events.append)
    ami.start_embedding("e", tracker=tracker).finish(40, estimated=True)  # counted by the caller
    assert (events[-1].input_tokens, events[-1].estimated) == (40, True)
    ami.start_embedding("e", tracker=tracker).finish(40)  # reported: not an estimate
    assert events[-1].estimated is False
    ami.start_embedding("e", tracker=tracker, texts=["abcd" * 10]).finish()
    assert events[-1].estimated is True and events[-1].input_tokens > 0
    ami.start_embedding("e", tracker=tracker, texts=["abcd" * 10]).finish(estimated=False)
    assert events[-1].estimated is False
    call = ami.start_embedding("e", tracker=tracker)
    for kwargs, exc in (
        ({"estimated": 1}, TypeError),
        ({"input_tokens": -1}, ValueError),
        ({"cost_usd": float("inf")}, ValueError),
    ):
        with pytest.raises(exc):
            call.finish(**kwargs)  # type: ignore[arg-type]
        assert not call.done
    assert tracker.snapshot().totals.embedding_calls == 4
