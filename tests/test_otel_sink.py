"""OTelSink: GenAI semantic-convention metrics equal agentmeter's own totals."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm

import agentmeter
from agentmeter.otel import OTelSink

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")

TOKEN_USAGE = gm.GEN_AI_CLIENT_TOKEN_USAGE
DURATION = gm.GEN_AI_CLIENT_OPERATION_DURATION


@pytest.fixture
def otel() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def metrics_by_name(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, Any] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name == "agentmeter":
                for metric in sm.metrics:
                    out[metric.name] = metric
    return out


def workload(tracker: agentmeter.Tracker) -> None:
    tracker.set_price("gpt-4o-mini", input_per_mtok=0.15, output_per_mtok=0.6,
                      cache_read_per_mtok=0.075, provider="openai")  # fmt: skip
    for i in range(30):
        tracker.record_llm(
            "gpt-4o-mini", 100 + i, 10 + i, cache_read_tokens=i, provider="openai",
            latency_ms=100.0 + i, session_id=f"s{i % 3}", agent_id=("planner", "coder")[i % 2],
        )  # fmt: skip
    for _ in range(7):
        tracker.record_llm(
            "claude-x", 2000, 300, cache_write_tokens=500, provider="anthropic",
            session_id="s0", agent_id="coder", cost_usd=0.01,
        )  # fmt: skip
    tracker.record_llm("mystery-model", 50, 5, session_id="s1")  # unpriced, no latency
    tracker.record_embedding("text-embedding-3-small", 400, provider="openai", session_id="s2")

    @tracker.metered_tool(category="search")
    def search(q: str) -> str:
        tracker.record_llm("gpt-4o-mini", 10, 2, provider="openai", latency_ms=5.0)
        return q

    with tracker.meter("turn", session_id="s1", agent_id="planner"):
        for _ in range(4):
            search("x")
    for i in range(5):
        tracker.record_tool_call("db", ok=i != 0, duration_ms=20.0 + i, session_id="s2")
    tracker.record_cache_hit(tokens_saved=120, session_id="s0")
    tracker.record_cache_miss(session_id="s0")


def test_metrics_equal_tracker_totals(otel: Any) -> None:
    reader, provider = otel
    tracker = agentmeter.Tracker()
    tracker.add_sink(OTelSink(provider))
    workload(tracker)
    snap = tracker.snapshot()
    metrics = metrics_by_name(reader)

    usage = metrics[TOKEN_USAGE]
    assert usage.unit == "{token}"
    sums: dict[str, int] = defaultdict(int)
    per_model: dict[tuple[str, str], int] = defaultdict(int)
    per_session: dict[tuple[Any, str], int] = defaultdict(int)
    per_agent: dict[tuple[Any, str], int] = defaultdict(int)
    calls = 0
    for point in usage.data.data_points:
        attrs = point.attributes
        token_type = attrs[ga.GEN_AI_TOKEN_TYPE]
        assert token_type in ("input", "output")
        assert attrs[ga.GEN_AI_REQUEST_MODEL] == attrs[ga.GEN_AI_RESPONSE_MODEL]
        assert attrs[ga.GEN_AI_OPERATION_NAME] in ("chat", "embeddings")
        op = attrs[ga.GEN_AI_OPERATION_NAME]
        key = "embedding" if op == "embeddings" else token_type
        sums[key] += point.sum
        per_model[(attrs[ga.GEN_AI_REQUEST_MODEL], key)] += point.sum
        per_session[(attrs.get(ga.GEN_AI_CONVERSATION_ID), key)] += point.sum
        per_agent[(attrs.get(ga.GEN_AI_AGENT_NAME), key)] += point.sum
        if token_type == "input":
            calls += point.count
    t = snap.totals
    assert sums["input"] == t.input_tokens
    assert sums["output"] == t.output_tokens
    assert sums["embedding"] == t.embedding_tokens
    assert calls == t.llm_calls + t.embedding_calls
    for model, u in snap.by_model.items():
        assert per_model[(model, "input")] == u.input_tokens
        assert per_model[(model, "output")] == u.output_tokens
    for session, u in snap.by_session.items():
        assert per_session[(session, "input")] == u.input_tokens
        assert per_session[(session, "output")] == u.output_tokens
    for agent, u in snap.by_agent.items():
        assert per_agent[(agent, "input")] == u.input_tokens

    providers = {p.attributes.get(ga.GEN_AI_PROVIDER_NAME) for p in usage.data.data_points}
    assert providers == {"openai", "anthropic", None}  # unknown provider: attribute left out

    duration = metrics[DURATION]
    assert duration.unit == "s"
    d_count = sum(p.count for p in duration.data.data_points)
    d_sum = sum(p.sum for p in duration.data.data_points)
    assert d_count == 30 + 4  # the calls that reported a latency
    assert d_sum == pytest.approx(t.llm_latency_ms / 1000.0)

    cache = metrics["agentmeter.client.cache.tokens"]
    by_op: dict[str, int] = defaultdict(int)
    for p in cache.data.data_points:
        by_op[p.attributes["agentmeter.cache.operation"]] += p.value
    assert by_op["read"] == t.cache_read_tokens
    assert by_op["write"] == t.cache_write_tokens

    cost = metrics["agentmeter.client.cost"]
    assert cost.unit == "USD"
    assert round(sum(p.value for p in cost.data.data_points) * 1_000_000) == t.cost_micros
    assert cost.data.is_monotonic
    unpriced = metrics["agentmeter.client.unpriced_calls"]
    assert sum(p.value for p in unpriced.data.data_points) == t.unpriced_calls == 1

    tool_calls = metrics["agentmeter.tool.calls"]
    per_tool: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    for p in tool_calls.data.data_points:
        assert p.attributes[ga.GEN_AI_OPERATION_NAME] == "execute_tool"
        per_tool[p.attributes[ga.GEN_AI_TOOL_NAME]] += p.value
        if "error.type" in p.attributes:
            failed[p.attributes[ga.GEN_AI_TOOL_NAME]] += p.value
    for name, stats in snap.by_tool.items():
        assert per_tool[name] == stats.calls
        assert failed[name] == stats.failed
    tool_duration = metrics["agentmeter.tool.duration"]
    for name, stats in snap.by_tool.items():
        points = [
            p for p in tool_duration.data.data_points
            if p.attributes[ga.GEN_AI_TOOL_NAME] == name
        ]  # fmt: skip
        assert sum(p.count for p in points) == stats.calls
        assert sum(p.sum for p in points) == pytest.approx(stats.total_duration_ms / 1000.0)
    categories = {p.attributes.get("agentmeter.tool.category") for p in tool_calls.data.data_points}
    assert categories == {"search", None}

    lookups = metrics["agentmeter.cache.lookups"]
    hits = {p.attributes["agentmeter.cache.hit"]: p.value for p in lookups.data.data_points}
    assert hits == {True: t.cache_hits, False: t.cache_misses}
    saved = metrics["agentmeter.cache.tokens_saved"]
    assert sum(p.value for p in saved.data.data_points) == t.tokens_saved


def test_collect_twice_is_cumulative_not_doubled(otel: Any) -> None:
    reader, provider = otel
    tracker = agentmeter.Tracker()
    tracker.add_sink(OTelSink(provider))
    tracker.record_llm("m", 10, 1, cost_usd=0.5)
    first = metrics_by_name(reader)
    assert first["agentmeter.client.cost"].data.data_points[0].value == 0.5
    tracker.record_llm("m", 10, 1, cost_usd=0.25)
    again = metrics_by_name(reader)
    assert again["agentmeter.client.cost"].data.data_points[0].value == 0.75
    points = again[TOKEN_USAGE].data.data_points
    assert sum(p.sum for p in points) == 22


def test_conversation_id_can_be_left_out(otel: Any) -> None:
    reader, provider = otel
    tracker = agentmeter.Tracker()
    tracker.add_sink(OTelSink(provider, conversation_id=False))
    for i in range(50):
        tracker.record_llm("m", 1, 1, session_id=f"s{i}", agent_id="a")
    points = metrics_by_name(reader)[TOKEN_USAGE].data.data_points
    assert len(points) == 2  # input and output: sessions do not multiply the series
    assert all(ga.GEN_AI_CONVERSATION_ID not in p.attributes for p in points)
    assert all(p.attributes[ga.GEN_AI_AGENT_NAME] == "a" for p in points)


def test_failed_call_has_error_type(otel: Any) -> None:
    reader, provider = otel
    tracker = agentmeter.Tracker()
    tracker.add_sink(OTelSink(provider))
    tracker.record_llm("m", 5, 0, ok=False, error="timeout", latency_ms=30.0)
    points = metrics_by_name(reader)[DURATION].data.data_points
    assert [p.attributes.get("error.type") for p in points] == ["_OTHER"]


def test_queue_is_bounded_without_a_reader() -> None:
    provider = MeterProvider()  # no reader ever collects
    sink = OTelSink(provider, drain_at=50, max_pending=100)
    tracker = agentmeter.Tracker()
    tracker.add_sink(sink)
    for _ in range(1000):
        tracker.record_llm("m", 1, 1)
    assert len(sink._queue) < 100
    provider.shutdown()


@pytest.mark.timeout(30)
def test_background_thread_drains_and_stops(otel: Any) -> None:
    import time

    reader, provider = otel
    sink = OTelSink(provider, drain_at=10)
    tracker = agentmeter.Tracker()
    tracker.add_sink(sink)
    for _ in range(25):
        tracker.record_llm("m", 2, 1)
    deadline = time.monotonic() + 10
    while len(sink._queue) >= 10:  # the drain thread empties it without any reader
        assert time.monotonic() < deadline, "drain thread did not run"
        time.sleep(0.01)
    thread = sink._thread
    assert thread is not None and thread.daemon
    sink.close()
    assert not thread.is_alive() and not sink._queue
    points = metrics_by_name(reader)[TOKEN_USAGE].data.data_points
    assert sum(p.sum for p in points) == 75
    with pytest.raises(ValueError):
        OTelSink(provider, drain_at=100, max_pending=10)


def test_spans_for_calls_and_scopes(otel: Any) -> None:
    _, provider = otel
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider, spans=True, tracer_provider=tracer_provider)
    tracker = agentmeter.Tracker()
    tracker.add_sink(sink)
    with tracker.meter("turn", session_id="s1") as scope:
        sink.scope_started(scope)  # what the core scope hook will call
        tracker.record_tool_call("search", ok=False, duration_ms=250.0, error="boom")
        tracker.record_llm("gpt-x", 10, 2, provider="openai", latency_ms=40.0)
    sink.scope_ended(scope)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"execute_tool search", "chat gpt-x", "turn"}
    tool = spans["execute_tool search"]
    assert tool.end_time - tool.start_time == 250_000_000
    assert tool.attributes[ga.GEN_AI_TOOL_NAME] == "search"
    assert not tool.status.is_ok
    llm = spans["chat gpt-x"]
    assert llm.end_time - llm.start_time == 40_000_000
    assert llm.attributes[ga.GEN_AI_USAGE_INPUT_TOKENS] == 10
    turn = spans["turn"]
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    assert llm.parent is not None and llm.parent.span_id == turn.context.span_id
    assert turn.attributes[ga.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert turn.attributes[ga.GEN_AI_CONVERSATION_ID] == "s1"
    tracer_provider.shutdown()


def test_import_agentmeter_does_not_import_otel() -> None:
    code = (
        "import sys, agentmeter; "
        "bad = [m for m in sys.modules if m.startswith(('opentelemetry', 'redis'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_extra_names_the_pip_line() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n    import agentmeter.otel\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'agentmeter-core[otel]'" in out.stdout


@pytest.mark.timeout(60)
def test_threads_recording_while_a_reader_collects(otel: Any) -> None:
    import threading

    reader, provider = otel
    tracker = agentmeter.Tracker()
    tracker.add_sink(OTelSink(provider, drain_at=64, max_pending=500))
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            reader.get_metrics_data()

    def work(i: int) -> None:
        for n in range(2000):
            tracker.record_llm("m", 3, 2, session_id=f"s{i}", cost_usd=0.000001)
            if n % 50 == 0:
                tracker.record_tool_call("t", ok=True, duration_ms=1.0)

    collector = threading.Thread(target=collect)
    collector.start()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=50)
    stop.set()
    collector.join(timeout=10)
    assert not collector.is_alive()
    metrics = metrics_by_name(reader)
    snap = tracker.snapshot()
    points = metrics[TOKEN_USAGE].data.data_points
    assert sum(p.sum for p in points) == snap.totals.input_tokens + snap.totals.output_tokens
    assert sum(p.value for p in metrics["agentmeter.tool.calls"].data.data_points) == 160
    cost = sum(p.value for p in metrics["agentmeter.client.cost"].data.data_points)
    assert round(cost * 1_000_000) == snap.totals.cost_micros == 8000
