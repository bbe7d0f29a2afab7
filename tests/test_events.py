from __future__ import annotations

import logging
import threading
import time

from agentmeter import Tracker, UsageEvent


def test_one_event_per_call_with_attribution(tracker):
    events: list[UsageEvent] = []
    tracker.subscribe(events.append)
    with tracker.meter("turn", session_id="s1", agent_id="a1"):
        tracker.record_llm(
            model="gpt-4o",
            input_tokens=10,
            output_tokens=2,
            provider="openai",
            latency_ms=5.0,
            call_id="c1",
            metadata={"customer": "acme"},
        )
        tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=2, call_id="c1")  # dup
        tracker.record_embedding(model="text-embedding-3-small", input_tokens=4)
        tracker.record_tool_call(
            tool="search", ok=False, duration_ms=3.0, error="Timeout", category="web"
        )
        tracker.record_cache_hit(tokens_saved=9)
        tracker.record_cache_miss()
    assert [e.kind for e in events] == ["chat", "embedding", "tool", "cache_hit", "cache_miss"]
    chat = events[0]
    assert chat.call_id == "c1" and chat.session_id == "s1" and chat.agent_id == "a1"
    assert chat.scope_path == ("turn",) and chat.metadata == {"customer": "acme"}
    assert chat.cost_micros == 45 and chat.cost_usd is not None and chat.latency_ms == 5.0
    assert events[2].status == "error" and events[2].error == "Timeout"
    assert events[2].category == "web" and events[3].tokens_saved == 9
    assert len({e.call_id for e in events}) == 5
    assert '"call_id":"c1"' in chat.model_dump_json()


def test_raising_subscriber_is_logged_and_others_still_get_events(tracker, caplog):
    got = []

    def bad(event: UsageEvent) -> None:
        raise RuntimeError("subscriber bug")

    tracker.subscribe(bad)
    tracker.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="agentmeter"):
        tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert len(got) == 1 and "subscriber bug" in caplog.text
    assert tracker.snapshot().totals.llm_calls == 1


def test_slow_subscriber_does_not_hold_the_lock():
    t = Tracker()
    entered = threading.Event()
    release = threading.Event()

    def slow(event: UsageEvent) -> None:
        if event.session_id == "slow":
            entered.set()
            release.wait(timeout=10)

    t.subscribe(slow)
    th = threading.Thread(
        target=t.record_llm,
        kwargs={"model": "gpt-4o", "input_tokens": 1, "output_tokens": 1, "session_id": "slow"},
    )
    th.start()
    assert entered.wait(timeout=5)
    start = time.perf_counter()
    for _ in range(100):  # other threads keep recording while the subscriber blocks
        t.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1, session_id="fast")
    assert time.perf_counter() - start < 2
    assert t.snapshot().by_session["fast"].llm_calls == 100
    release.set()
    th.join(timeout=5)
    assert t.snapshot().totals.llm_calls == 101


def test_unsubscribe_during_delivery(tracker):
    got_a, got_b = [], []

    def a(event: UsageEvent) -> None:
        got_a.append(event)
        tracker.unsubscribe(a)

    tracker.subscribe(a)
    tracker.subscribe(got_b.append)
    for _ in range(3):
        tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    assert len(got_a) == 1 and len(got_b) == 3
    tracker.unsubscribe(a)  # unsubscribing twice is harmless


def test_no_event_is_built_without_listeners(tracker, monkeypatch):
    built = []
    monkeypatch.setattr(UsageEvent, "from_raw", classmethod(lambda cls, raw: built.append(raw)))
    tracker.record_llm(model="gpt-4o", input_tokens=1, output_tokens=1)
    tracker.record_tool_call(tool="t", ok=True, duration_ms=1.0)
    assert built == [] and tracker.events.listening is False


def test_sinks_get_raw_events(tracker):
    class Sink:
        def __init__(self) -> None:
            self.raw: list[tuple] = []

        def submit(self, raw: tuple) -> None:
            self.raw.append(raw)

    sink = Sink()
    tracker.add_sink(sink)
    tracker.record_llm(model="gpt-4o", input_tokens=3, output_tokens=1, call_id="x")
    assert UsageEvent.from_raw(sink.raw[0]).input_tokens == 3
    tracker.remove_sink(sink)
    tracker.record_llm(model="gpt-4o", input_tokens=3, output_tokens=1)
    assert len(sink.raw) == 1 and not tracker.events.listening
