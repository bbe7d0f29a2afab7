"""OpenTelemetry export: GenAI semantic-convention metrics (and optional spans).

Attach an :class:`OTelSink` to a tracker and every recorded call becomes OTel
measurements, so many processes feed one collector (Prometheus, a vendor ...)::

    from agentmeter.otel import OTelSink

    tracker.add_sink(OTelSink())          # the global MeterProvider, or pass one

Instruments (names from ``opentelemetry-semantic-conventions`` where it defines them):

====================================  ===========  ==========================================
instrument                            unit         what
====================================  ===========  ==========================================
``gen_ai.client.token.usage``         ``{token}``  histogram per LLM / embedding call and
                                                   ``gen_ai.token.type`` (``input``/``output``)
``gen_ai.client.operation.duration``  ``s``        histogram, calls that reported a latency
``agentmeter.client.cache.tokens``    ``{token}``  counter, ``agentmeter.cache.operation`` =
                                                   ``read`` / ``write`` (parts of input)
``agentmeter.client.cost``            ``USD``      counter, priced calls only
``agentmeter.client.unpriced_calls``  ``{call}``   counter of calls without a known price
``agentmeter.tool.calls``             ``{call}``   counter per tool call (``error.type`` on
                                                   failure)
``agentmeter.tool.duration``          ``s``        histogram per tool call
``agentmeter.cache.lookups``          ``{lookup}`` the application's own cache
                                                   (``agentmeter.cache.hit``)
``agentmeter.cache.tokens_saved``     ``{token}``  tokens a cache hit saved
====================================  ===========  ==========================================

Attributes: ``gen_ai.operation.name`` (``chat``, ``text_completion``,
``embeddings``, ``generate_content``, ``execute_tool``), ``gen_ai.provider.name``,
``gen_ai.request.model`` and ``gen_ai.response.model`` (agentmeter records one model
name per call; both carry it), ``gen_ai.conversation.id`` (the session),
``gen_ai.agent.name`` (the agent), ``gen_ai.tool.name``, ``error.type`` for failed
calls. Attributes whose value is unknown are left out, never sent as ``""``.

Sessions are unbounded: each one is a new attribute set on every instrument. Pass
``conversation_id=False`` when there are many sessions per export interval (the
SDK folds attribute sets beyond its cardinality limit into an overflow series).

With ``spans=True`` (and a tracer provider) every LLM and tool call also becomes a
span with its real start and end time (end = when it was recorded, start = end -
its duration). Scopes become spans through :meth:`OTelSink.scope_started` /
:meth:`OTelSink.scope_ended`, which the tracker calls on sinks that have them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
    from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE, ErrorTypeValues
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "agentmeter.otel needs OpenTelemetry: pip install 'agentmeter-core[otel]'"
    ) from exc

from ._guard import swallow
from .models import RawEvent
from .scope import STACK

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from .scope import Scope

__all__ = ["OTelSink"]

logger = logging.getLogger("agentmeter")

_OP = ga.GenAiOperationNameValues
_OPERATION = {
    "chat": _OP.CHAT.value,
    "completion": _OP.TEXT_COMPLETION.value,
    "embedding": _OP.EMBEDDINGS.value,
    "image": _OP.GENERATE_CONTENT.value,
    "audio": _OP.GENERATE_CONTENT.value,
    "other": _OP.GENERATE_CONTENT.value,
}
_OTHER_OP = _OP.GENERATE_CONTENT.value
_TOOL_OP = _OP.EXECUTE_TOOL.value
_INPUT = ga.GenAiTokenTypeValues.INPUT.value
_OUTPUT = ga.GenAiTokenTypeValues.OUTPUT.value
_ERROR_OTHER = ErrorTypeValues.OTHER.value

# Bucket boundaries the GenAI semantic conventions recommend for these histograms.
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

# Custom (non-semconv) attribute names, namespaced.
CACHE_OPERATION = "agentmeter.cache.operation"
CACHE_HIT = "agentmeter.cache.hit"
TOOL_CATEGORY = "agentmeter.tool.category"
ESTIMATED = "agentmeter.estimated"
SCOPE_PATH = "agentmeter.scope.path"

# agentmeter's own instruments (the GenAI conventions define no name for these).
CACHE_TOKENS = "agentmeter.client.cache.tokens"
COST = "agentmeter.client.cost"
UNPRICED = "agentmeter.client.unpriced_calls"
TOOL_CALLS = "agentmeter.tool.calls"
TOOL_DURATION = "agentmeter.tool.duration"
CACHE_LOOKUPS = "agentmeter.cache.lookups"
TOKENS_SAVED = "agentmeter.cache.tokens_saved"
_COUNTERS = {
    CACHE_TOKENS: ("{token}", "Prompt tokens read from / written to the provider's cache."),
    COST: ("USD", "Cost of the priced LLM and embedding calls."),
    UNPRICED: ("{call}", "LLM and embedding calls whose model had no known price."),
    TOOL_CALLS: ("{call}", "Tool calls."),
    CACHE_LOOKUPS: ("{lookup}", "Lookups in the application's own LLM cache."),
    TOKENS_SAVED: ("{token}", "Tokens the application's cache saved."),
}

_ATTR_CACHE_MAX = 4096  # attribute dicts kept per sink; cleared (not evicted one by one) past it

# Positions in the raw event tuple (models.EVENT_FIELDS).
_CALL_ID, _TS, _KIND, _MODEL, _PROVIDER, _INP, _OUT, _CR, _CW = range(9)
_COST, _LATENCY, _SESSION, _AGENT, _PATH, _TOOL, _CATEGORY, _STATUS = range(10, 18)
_ERROR, _ESTIMATED, _SAVED = 18, 19, 20


class OTelSink:
    """A tracker sink that turns every recorded call into OpenTelemetry GenAI metrics.

    The recording thread only appends the raw event to a queue (about a
    microsecond). The OTel work is done off the hot path: a background thread
    drains the queue whenever ``drain_at`` events are waiting, and the sink's
    observable-instrument callback drains whatever is left when a metric reader
    collects. Draining records the histograms and adds to cumulative
    per-attribute sums that the observable counters report, so a reader always
    sees every call recorded before it collected, and counters cost one dict update
    per call instead of one SDK measurement. If the drain thread cannot keep up,
    the recording thread drains once ``max_pending`` events wait (backpressure:
    bounded memory, no event dropped).

    Args:
        meter_provider: Where the instruments live; default: the global provider.
        spans: Also emit a span per LLM / tool call (and per scope, see the module doc).
        tracer_provider: Where spans go; default: the global provider.
        conversation_id: Put the session in ``gen_ai.conversation.id`` (see the
            cardinality note in the module doc).
        drain_at: Queue length that wakes the background drain thread.
        max_pending: Queue length at which the recording thread drains it itself.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        spans: bool = False,
        tracer_provider: TracerProvider | None = None,
        conversation_id: bool = True,
        drain_at: int = 1024,
        max_pending: int = 65_536,
    ) -> None:
        from . import __version__

        if not 1 <= drain_at <= max_pending:
            raise ValueError("need 1 <= drain_at <= max_pending")
        self._conversation = conversation_id
        self._drain_at = drain_at
        self._max_pending = max_pending
        self._queue: deque[RawEvent] = deque()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Attribute dicts per event key, built once and reused.
        self._attrs: dict[tuple[Any, ...], tuple[dict[str, Any], ...]] = {}
        # Cumulative sums for the observable counters: {counter: {attr key: [attrs, value]}}.
        self._sums: dict[str, dict[tuple[Any, ...], list[Any]]] = {name: {} for name in _COUNTERS}
        meter = otel_metrics.get_meter("agentmeter", __version__, meter_provider=meter_provider)
        self._token_usage = meter.create_histogram(
            gm.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            gm.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._tool_duration = meter.create_histogram(
            TOOL_DURATION,
            unit="s",
            description="Tool call duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        for name, (unit, description) in _COUNTERS.items():
            meter.create_observable_counter(
                name, callbacks=[self._observer(name)], unit=unit, description=description
            )
        self._tracer = (
            otel_trace.get_tracer("agentmeter", __version__, tracer_provider=tracer_provider)
            if spans
            else None
        )
        self._scope_spans: weakref.WeakKeyDictionary[Scope, Span] = weakref.WeakKeyDictionary()
        self._span_lock = threading.Lock()

    # ------------------------------------------------------------ recording
    def submit(self, raw: RawEvent) -> None:
        """Take one event (the tracker calls this after each recorded call)."""
        queue = self._queue
        queue.append(raw)
        if self._tracer is not None:
            self._call_span(raw)  # needs the recording thread's context for its parent
        n = len(queue)
        if n >= self._drain_at:
            if n >= self._max_pending:
                self.flush()  # the drain thread cannot keep up: backpressure
            elif not self._wake.is_set():
                self._wake_drainer()

    def _wake_drainer(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():  # first use, or after a fork
            with self._drain_lock:
                if self._closed:
                    return
                thread = self._thread
                if thread is None or not thread.is_alive():
                    self._thread = threading.Thread(
                        target=_drain_loop,
                        args=(weakref.ref(self), self._wake),
                        name="agentmeter-otel-drain",
                        daemon=True,
                    )
                    self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the drain thread and hand the queued events to the SDK."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()

    def flush(self) -> None:
        """Hand every queued event to the OTel SDK now (readers also trigger this)."""
        self._drain(None)

    def _drain(self, deadline: float | None) -> None:
        queue = self._queue
        if not queue:
            return
        with self._drain_lock:
            popleft = queue.popleft
            n = 0
            while True:
                n += 1
                if deadline is not None and not n & 255 and time.monotonic() > deadline:
                    self._wake.set()  # out of time: the drain thread finishes the rest
                    return
                try:
                    raw = popleft()
                except IndexError:
                    return
                try:
                    self._measure(raw)
                except Exception as exc:
                    swallow(exc, "OTelSink")

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        sums = self._sums[name]
        scale = 1_000_000 if name == COST else 1

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            # Collection time: first move queued events into the SDK (histograms
            # included, so they land in this very collection), then report totals.
            # Use at most half the collection's time budget: a huge backlog must not
            # make the SDK abandon the whole collection (MetricsTimeoutError).
            budget_s = getattr(options, "timeout_millis", 10_000) / 2000
            self._drain(time.monotonic() + budget_s)
            with self._drain_lock:
                items = [(attrs, value) for attrs, value in sums.values()]
            if scale == 1:
                return [Observation(value, attrs) for attrs, value in items]
            return [Observation(value / scale, attrs) for attrs, value in items]

        return observe

    def _add(self, name: str, key: tuple[Any, ...], attrs: dict[str, Any], value: int) -> None:
        cell = self._sums[name].get(key)
        if cell is None:
            self._sums[name][key] = [attrs, value]
        else:
            cell[1] += value

    def _measure(self, raw: RawEvent) -> None:
        """Record one event into the SDK instruments and sums (caller holds the drain lock)."""
        kind = raw[_KIND]
        key: tuple[Any, ...]
        if kind == "tool":
            key = ("tool", raw[_TOOL], raw[_CATEGORY], raw[_SESSION], raw[_AGENT], raw[_STATUS])
            (attrs,) = self._cached(key, self._tool_attrs)
            self._add(TOOL_CALLS, key, attrs, 1)
            if raw[_LATENCY] is not None:
                self._tool_duration.record(raw[_LATENCY] / 1000.0, attrs)
            return
        if kind == "cache_hit" or kind == "cache_miss":
            key = (kind, raw[_MODEL], raw[_SESSION], raw[_AGENT])
            attrs, looked_up = self._cached(key, self._cache_attrs)
            self._add(CACHE_LOOKUPS, key, looked_up, 1)
            if raw[_SAVED]:
                self._add(TOKENS_SAVED, key, attrs, raw[_SAVED])
            return
        key = (
            kind, raw[_MODEL], raw[_PROVIDER], raw[_SESSION], raw[_AGENT],
            raw[_STATUS], raw[_ESTIMATED],
        )  # fmt: skip
        base, inp, out, cache_read, cache_write = self._cached(key, self._llm_attrs)
        self._token_usage.record(raw[_INP], inp)
        if kind != "embedding":
            self._token_usage.record(raw[_OUT], out)
        if raw[_LATENCY] is not None:
            self._duration.record(raw[_LATENCY] / 1000.0, base)
        if raw[_CR]:
            self._add(CACHE_TOKENS, (*key, "read"), cache_read, raw[_CR])
        if raw[_CW]:
            self._add(CACHE_TOKENS, (*key, "write"), cache_write, raw[_CW])
        cost = raw[_COST]
        if cost is None:
            self._add(UNPRICED, key, base, 1)
        elif cost:
            self._add(COST, key, base, cost)

    # ----------------------------------------------------------- attributes
    def _cached(
        self, key: tuple[Any, ...], build: Callable[[tuple[Any, ...]], tuple[dict[str, Any], ...]]
    ) -> tuple[dict[str, Any], ...]:
        attrs = self._attrs.get(key)
        if attrs is None:
            if len(self._attrs) >= _ATTR_CACHE_MAX:
                self._attrs = {}  # the sums keep their own references
            attrs = self._attrs[key] = build(key)
        return attrs

    def _base(
        self, op: str | None, model: str | None, provider: str | None, session: Any, agent: Any
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if op is not None:
            attrs[ga.GEN_AI_OPERATION_NAME] = op
        if provider is not None:
            attrs[ga.GEN_AI_PROVIDER_NAME] = provider
        if model is not None:
            attrs[ga.GEN_AI_REQUEST_MODEL] = model
            attrs[ga.GEN_AI_RESPONSE_MODEL] = model
        if session is not None and self._conversation:
            attrs[ga.GEN_AI_CONVERSATION_ID] = session
        if agent is not None:
            attrs[ga.GEN_AI_AGENT_NAME] = agent
        return attrs

    def _llm_attrs(self, key: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
        kind, model, provider, session, agent, status, estimated = key
        base = self._base(_OPERATION.get(kind, _OTHER_OP), model, provider, session, agent)
        if status == "error":
            base[ERROR_TYPE] = _ERROR_OTHER
        tok = {**base, ESTIMATED: True} if estimated else base
        return (
            base,
            {**tok, ga.GEN_AI_TOKEN_TYPE: _INPUT},
            {**tok, ga.GEN_AI_TOKEN_TYPE: _OUTPUT},
            {**base, CACHE_OPERATION: "read"},
            {**base, CACHE_OPERATION: "write"},
        )

    def _tool_attrs(self, key: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
        _, tool, category, session, agent, status = key
        attrs = self._base(_TOOL_OP, None, None, session, agent)
        attrs[ga.GEN_AI_TOOL_NAME] = tool
        if category:
            attrs[TOOL_CATEGORY] = category
        if status == "error":
            attrs[ERROR_TYPE] = _ERROR_OTHER
        return (attrs,)

    def _cache_attrs(self, key: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
        kind, model, session, agent = key
        attrs = self._base(None, model, None, session, agent)  # a local lookup, no GenAI op
        return attrs, {**attrs, CACHE_HIT: kind == "cache_hit"}

    # ---------------------------------------------------------------- spans
    def _call_span(self, raw: RawEvent) -> None:
        assert self._tracer is not None
        kind = raw[_KIND]
        if kind == "tool":
            (attrs,) = self._tool_attrs(
                ("tool", raw[_TOOL], raw[_CATEGORY], raw[_SESSION], raw[_AGENT], raw[_STATUS])
            )
            name, span_kind = f"{_TOOL_OP} {raw[_TOOL]}", otel_trace.SpanKind.INTERNAL
        elif kind in _OPERATION:
            op = _OPERATION[kind]
            attrs = self._base(op, raw[_MODEL], raw[_PROVIDER], raw[_SESSION], raw[_AGENT])
            attrs[ga.GEN_AI_USAGE_INPUT_TOKENS] = raw[_INP]
            attrs[ga.GEN_AI_USAGE_OUTPUT_TOKENS] = raw[_OUT]
            if raw[_CR]:
                attrs[ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = raw[_CR]
            if raw[_CW]:
                attrs[ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = raw[_CW]
            if raw[_STATUS] == "error":
                attrs[ERROR_TYPE] = _ERROR_OTHER
            name, span_kind = f"{op} {raw[_MODEL]}", otel_trace.SpanKind.CLIENT
        else:
            return
        end_ns = int(raw[_TS] * 1e9)
        duration = raw[_LATENCY]
        start_ns = end_ns - int(duration * 1e6) if duration is not None else end_ns
        span = self._tracer.start_span(
            name, context=self._parent_context(), kind=span_kind, attributes=attrs,
            start_time=start_ns,
        )  # fmt: skip
        if raw[_STATUS] == "error":
            span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, raw[_ERROR]))
        span.end(end_time=end_ns)

    def _parent_context(self) -> Context | None:
        """The span of the innermost open scope that has one (else the ambient context)."""
        if self._scope_spans:
            for scope in reversed(STACK.get()):
                span = self._scope_spans.get(scope)
                if span is not None:
                    return otel_trace.set_span_in_context(span)
        return None

    def scope_started(self, scope: Scope) -> None:
        """Open a span for a scope (called by the tracker's scope hook when spans are on)."""
        if self._tracer is None:
            return
        attrs: dict[str, Any] = {SCOPE_PATH: "/".join(scope.path)}
        if scope.session_id is not None and self._conversation:
            attrs[ga.GEN_AI_CONVERSATION_ID] = scope.session_id
        if scope.agent_id is not None:
            attrs[ga.GEN_AI_AGENT_NAME] = scope.agent_id
        start = scope.started_at
        span = self._tracer.start_span(
            scope.name,
            context=self._parent_context(),
            attributes=attrs,
            start_time=int(start * 1e9) if start is not None else None,
        )
        with self._span_lock:
            self._scope_spans[scope] = span

    def scope_ended(self, scope: Scope) -> None:
        """Close a scope's span, with the scope's usage totals as attributes."""
        with self._span_lock:
            span = self._scope_spans.pop(scope, None)
        if span is None:
            return
        usage = scope.usage
        span.set_attribute(ga.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens)
        span.set_attribute(ga.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens)
        span.set_attribute("agentmeter.llm_calls", usage.llm_calls)
        span.set_attribute("agentmeter.tool_calls", usage.tool_calls)
        span.set_attribute("agentmeter.cost_usd", usage.cost_micros / 1_000_000)
        if scope.error is not None:
            span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, scope.error))
        end = scope.ended_at
        span.end(end_time=int(end * 1e9) if end is not None else None)

    def __repr__(self) -> str:
        return f"<OTelSink pending={len(self._queue)} spans={self._tracer is not None}>"


def _drain_loop(ref: weakref.ReferenceType[OTelSink], wake: threading.Event) -> None:
    """The drain thread: holds the sink only weakly, so a dropped sink ends it."""
    while True:
        wake.wait(timeout=5.0)
        wake.clear()
        sink = ref()
        if sink is None:
            return
        try:
            sink.flush()
        except Exception:  # flush already handles per-event errors; keep the thread alive
            logger.exception("agentmeter: OTelSink drain failed")
        if sink._closed:
            return
        del sink
