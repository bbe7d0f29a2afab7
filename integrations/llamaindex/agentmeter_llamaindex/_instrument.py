"""Metering through LlamaIndex's instrumentation dispatcher.

One :class:`Instrumentor` owns an event handler and a span handler on the root
dispatcher. What each signal is used for:

- LLM start / in-progress / end events, keyed by span id: one pending call per
  span, finished when its end event arrives (streams: when drained), or when the
  stream is abandoned (``ExceptionEvent`` with ``GeneratorExit``, or the stream
  object is garbage collected).
- Span enter / exit / drop: the parent of every open span (to see that a
  ``complete`` runs inside a ``chat`` of the same model: only the innermost call,
  the one that reaches the provider, is counted), tool calls (spans of a
  ``BaseTool``: duration, ``ToolOutput.is_error``, exceptions), and workflow runs
  (the span of ``Workflow.run``: a scope carrying the session and the agent).

Tool calls and workflow runs open an :class:`agentmeter.Scope` for their duration,
so everything recorded inside -- by this integration, by a decorator or by hand --
is credited to the tool and attributed to the run's session and agent. Workflow
steps run as asyncio tasks created inside the run, so they inherit those scopes.

Handlers must not raise into LlamaIndex (the dispatcher swallows everything):
internal errors are logged, kept in :attr:`Instrumentor.errors` and re-raised in
strict mode, where the dispatcher still drops them -- tests assert ``errors`` is
empty.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import ChatResponse, CompletionResponse
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
    SparseEmbeddingEndEvent,
)
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.span import SimpleSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.tools.types import BaseTool
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.dispatcher import active_instrument_tags

from agentmeter import Scope, Tracker
from agentmeter._guard import swallow
from agentmeter.errors import BudgetExceeded
from agentmeter.scope import STACK, register_call_id_provider, unregister_call_id_provider

from . import _tokens, _usage

__all__ = ["Instrumentor", "StreamUsageWarning", "model_of"]

_MAX_OPEN = 50_000  # open spans remembered (a leak guard; spans normally close)
_MAX_PENDING = 10_000  # LLM calls awaiting their end (streams nobody drained)
_ERRORS_KEPT = 100
_K_OTHER, _K_TOOL, _K_RUN, _K_LLM = 0, 1, 2, 3
# Exceptions that pause a tool rather than fail it (human-in-the-loop workflows).
_PAUSES = frozenset({"WaitingForEvent"})

STREAM_USAGE_FIX = 'additional_kwargs={"stream_options": {"include_usage": True}}'


class StreamUsageWarning(UserWarning):
    """A stream ended without reporting its usage; its counts were estimated."""


# ----------------------------------------------------------------- model names
_PROVIDERS = (
    ("azure", "azure"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "google"),
    ("google", "google"),
    ("vertex", "google"),
    ("mistral", "mistral"),
    ("groq", "groq"),
    ("cohere", "cohere"),
    ("bedrock", "aws"),
)
_MODEL_CACHE: dict[tuple[Any, Any, Any], tuple[str, str | None, str]] = {}


def model_of(model_dict: dict[str, Any]) -> tuple[str, str | None, str]:
    """``(model, provider, class name)`` from a LlamaIndex ``to_payload()`` dict."""
    cls = model_dict.get("class_name")
    name = model_dict.get("model") or model_dict.get("model_name")
    key = (cls, name, model_dict.get("model"))
    hit = _MODEL_CACHE.get(key)
    if hit is not None:
        return hit
    cls_s = str(cls) if cls else "llm"
    model = str(name) if name and name != "unknown" else cls_s
    low = cls_s.lower()
    provider = next((p for needle, p in _PROVIDERS if needle in low), None)
    result = (model, provider, cls_s)
    if len(_MODEL_CACHE) > 1024:
        _MODEL_CACHE.clear()
    _MODEL_CACHE[key] = result
    return result


def _is_openai_class(cls_name: str) -> bool:
    return "openai" in cls_name.lower()


def _tag(tags: dict[str, Any], short: str) -> str | None:
    if not tags:
        return None
    value = tags.get(short)
    if value is None:
        value = tags.get("agentmeter." + short)
    return value if isinstance(value, str) and value else None


def _response_text(response: Any) -> str:
    # isinstance first: a missing attribute on a pydantic model is slow to probe.
    if isinstance(response, ChatResponse):
        return _tokens.message_text(response.message)
    if isinstance(response, CompletionResponse):
        return response.text or ""
    return ""


# ----------------------------------------------------------------- records
class _LLMCall:
    __slots__ = (
        "adapter",
        "agent",
        "children",
        "chunks",
        "cls",
        "depth",
        "kind",
        "last",
        "messages",
        "model",
        "outer",
        "prompt",
        "provider",
        "session",
        "sid",
        "stack",
        "stream",
        "t0",
        "usage",
    )

    def __init__(self, sid: str, kind: str, model_dict: dict[str, Any], tags: dict[str, Any]):
        self.sid = sid
        self.kind = kind
        self.model, self.provider, self.cls = model_of(model_dict)
        if tags:
            self.session = _tag(tags, "session_id")
            self.agent = _tag(tags, "agent_id")
        else:
            self.session = self.agent = None
        self.stack = STACK.get()
        self.t0 = time.perf_counter()
        self.prompt: str | None = None
        self.messages: Any = None
        self.outer: _LLMCall | None = None
        self.children = 0
        self.depth = 0
        self.last: Any = None
        self.usage: _usage.Counts | None = None
        self.stream = False
        self.chunks = 0
        self.adapter = False


class _ToolCall:
    __slots__ = ("agent", "name", "scope", "session", "sid", "t0")

    def __init__(self, sid: str, name: str, scope: Scope, session: str | None, agent: str | None):
        self.sid = sid
        self.name = name
        self.scope = scope
        self.session = session
        self.agent = agent
        self.t0 = time.perf_counter()


class _Run:
    __slots__ = ("agent_fixed", "scope")

    def __init__(self, scope: Scope, agent_fixed: bool):
        self.scope = scope
        self.agent_fixed = agent_fixed


class _ToolStep:
    """A workflow ``call_tool`` step: a failed result without a tool span under it
    (the model asked for a tool that does not exist) is a failed tool call."""

    __slots__ = ("saw_tool", "t0")

    def __init__(self) -> None:
        self.saw_tool = False
        self.t0 = time.perf_counter()


class _Embedding:
    __slots__ = ("agent", "cls", "model", "provider", "session", "stack", "t0")

    def __init__(self, model_dict: dict[str, Any], tags: dict[str, Any]):
        self.model, self.provider, self.cls = model_of(model_dict)
        self.session = _tag(tags, "session_id")
        self.agent = _tag(tags, "agent_id")
        self.stack = STACK.get()
        self.t0 = time.perf_counter()


# ----------------------------------------------------------------- handlers
def _make_handlers(core: Instrumentor) -> tuple[BaseEventHandler, BaseSpanHandler[SimpleSpan]]:
    """Handler classes bound to one instrumentor.

    The instrumentor is closed over instead of kept in a pydantic private
    attribute: reading those goes through ``BaseModel.__getattr__`` on every
    event, a measurable part of the per-call overhead.
    """
    on_event = core.on_event
    enter, leave, drop = core.span_enter, core.span_exit, core.span_drop

    class AgentMeterEventHandler(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "AgentMeterEventHandler"

        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            on_event(event)

    class AgentMeterSpanHandler(BaseSpanHandler[SimpleSpan]):
        @classmethod
        def class_name(cls) -> str:
            return "AgentMeterSpanHandler"

        def span_enter(
            self,
            id_: str,
            bound_args: inspect.BoundArguments,
            instance: Any | None = None,
            parent_id: str | None = None,
            tags: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            enter(id_, bound_args, instance, parent_id, tags)

        def span_exit(
            self,
            id_: str,
            bound_args: inspect.BoundArguments,
            instance: Any | None = None,
            result: Any | None = None,
            **kwargs: Any,
        ) -> None:
            leave(id_, result)

        def span_drop(
            self,
            id_: str,
            bound_args: inspect.BoundArguments,
            instance: Any | None = None,
            err: BaseException | None = None,
            **kwargs: Any,
        ) -> None:
            drop(id_, err)

        # The dispatcher's span bookkeeping is unused: the methods above replace it.
        def new_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
            return None

        def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
            return None

        def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> SimpleSpan | None:
            return None

    return AgentMeterEventHandler(), AgentMeterSpanHandler()


# ----------------------------------------------------------------- the core
class Instrumentor:
    """Meters LlamaIndex into one tracker; made by :func:`agentmeter_llamaindex.instrument`.

    Attributes:
        tracker: Where everything is recorded.
        errors: Internal errors caught in the handlers (the most recent ones).
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        session_from_run_id: bool = True,
        stream_usage: bool = False,
    ) -> None:
        self.tracker = tracker
        self.session_from_run_id = session_from_run_id
        self.stream_usage = stream_usage
        self.errors: list[BaseException] = []
        self._parents: dict[str, str | None] = {}
        self._llm: dict[str, _LLMCall] = {}
        self._open: dict[str, _ToolCall | _Run | _ToolStep] = {}
        self._emb: dict[str, deque[_Embedding]] = {}
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        self._kinds: dict[type, int] = {}
        self._workflow_types: tuple[type, ...] = ()
        self._agent_types: tuple[type, ...] = ()
        self._dispatch: dict[type, Callable[[Any], None] | None] = {
            LLMChatStartEvent: self._on_chat_start,
            LLMCompletionStartEvent: self._on_completion_start,
            LLMChatInProgressEvent: self._on_chunk,
            LLMCompletionInProgressEvent: self._on_chunk,
            LLMChatEndEvent: self._on_end,
            LLMCompletionEndEvent: self._on_end,
            ExceptionEvent: self._on_exception,
            EmbeddingStartEvent: self._on_embedding_start,
            EmbeddingEndEvent: self._on_embedding_end,
            SparseEmbeddingEndEvent: self._on_embedding_end,
        }
        self.event_handler, self.span_handler = _make_handlers(self)
        self._attached = False

    # -- wiring ---------------------------------------------------------------
    def attach(self) -> None:
        """Add the handlers to the root dispatcher and the call-id provider."""
        if self._attached:
            return
        try:  # imported here: these modules are heavy and optional for plain LLM use
            from llama_index.core.agent.workflow import BaseWorkflowAgent
            from llama_index.core.workflow import Workflow

            self._workflow_types = (Workflow,)
            self._agent_types = (BaseWorkflowAgent,)
        except Exception:  # pragma: no cover - present in llama-index-core 0.14
            self._workflow_types = ()
            self._agent_types = ()
        root = get_dispatcher()
        root.add_event_handler(self.event_handler)
        root.add_span_handler(self.span_handler)
        register_call_id_provider(self.current_tool_call_id)
        self._attached = True

    def detach(self) -> None:
        """Remove the handlers (spans still open are forgotten, their scopes closed)."""
        if not self._attached:
            return
        root = get_dispatcher()
        # Swap in new lists rather than mutate the ones a dispatch may be iterating.
        root.event_handlers = [h for h in root.event_handlers if h is not self.event_handler]
        root.span_handlers = [h for h in root.span_handlers if h is not self.span_handler]
        unregister_call_id_provider(self.current_tool_call_id)
        self._attached = False
        self._parents.clear()
        self._llm.clear()
        self._emb.clear()
        self._open.clear()

    def _fail(self, exc: BaseException, where: str) -> None:
        if len(self.errors) < _ERRORS_KEPT:
            self.errors.append(exc)
        swallow(exc, f"agentmeter_llamaindex {where}")

    def current_tool_call_id(self) -> str | None:
        """The span id of the LlamaIndex tool call running here (for ``@metered_tool``)."""
        sid = active_span_id.get()
        if sid is None:
            return None
        rec = self._open.get(sid)
        return rec.sid if isinstance(rec, _ToolCall) else None

    def is_nested_llm(self, span_id: str | None) -> bool:
        """True when the LLM call of ``span_id`` runs inside another LLM call."""
        if span_id is None:
            return False
        call = self._llm.get(span_id)
        return call is not None and (call.outer is not None or call.depth > 0)

    # -- events ---------------------------------------------------------------
    def on_event(self, event: BaseEvent) -> None:
        fn = self._dispatch.get(type(event), _UNKNOWN)
        if fn is _UNKNOWN:
            fn = None
            for cls, handler in list(self._dispatch.items()):
                if handler is not None and isinstance(event, cls):
                    fn = handler
                    break
            self._dispatch[type(event)] = fn
        if fn is None:
            return
        try:
            fn(event)
        except Exception as exc:
            self._fail(exc, type(event).__name__)

    def _start(self, event: Any, kind: str) -> _LLMCall:
        sid = event.span_id or event.id_
        current = self._llm.get(sid)
        if current is not None:
            # A second LLM event in the same span (a wrapper decorated twice): the
            # outer one stays, the inner one is ignored until its end.
            current.depth += 1
            return current
        call = _LLMCall(sid, kind, event.model_dict, event.tags)
        outer = self._pending_ancestor(sid)
        if outer is not None:
            call.outer = outer
            outer.children += 1
        llm = self._llm
        llm[sid] = call
        if len(llm) > _MAX_PENDING:
            llm.pop(next(iter(llm)), None)
        return call

    def _on_chat_start(self, event: LLMChatStartEvent) -> None:
        call = self._start(event, "chat")
        if call.messages is None and call.prompt is None:
            call.messages = event.messages

    def _on_completion_start(self, event: LLMCompletionStartEvent) -> None:
        call = self._start(event, "completion")
        if call.messages is None and call.prompt is None:
            call.prompt = event.prompt

    def _pending_ancestor(self, sid: str) -> _LLMCall | None:
        parents, llm = self._parents, self._llm
        p = parents.get(sid)
        for _ in range(64):
            if p is None:
                return None
            call = llm.get(p)
            if call is not None:
                return call
            p = parents.get(p)
        return None

    def _on_chunk(self, event: Any) -> None:
        call = self._llm.get(event.span_id)
        if call is None:
            return
        response = event.response
        if call.chunks == 0 and response is not None:
            # A stream that re-yields the chunks of another call (CustomLLM's
            # astream_chat iterates stream_chat): the other call is the one counted.
            for other in list(self._llm.values()):
                if other.last is response and other is not call:
                    call.adapter = True
                    # The inner call runs wherever the stream is drained; it is
                    # billed where the caller asked for the stream.
                    other.stack = call.stack
                    other.session = other.session or call.session
                    other.agent = other.agent or call.agent
                    break
        call.last = response
        call.chunks += 1
        if response is not None:
            raw = response.raw
            if raw is not None or response.additional_kwargs:
                found = _usage.from_response(response)
                if found is not None:
                    call.usage = _usage.merge(call.usage, found)

    def _on_end(self, event: Any) -> None:
        sid = event.span_id
        call = self._llm.get(sid)
        if call is None:
            return
        if call.depth:
            call.depth -= 1
            return
        if self._llm.pop(call.sid, None) is None:
            return  # finished meanwhile (e.g. by the stream finalizer)
        self._finish(call, event.response)

    def _on_exception(self, event: ExceptionEvent) -> None:
        sid = event.span_id
        call = self._llm.get(sid) if sid is not None else None
        if call is None:
            return
        if call.depth:
            call.depth -= 1
            return
        if self._llm.pop(call.sid, None) is None:
            return  # finished meanwhile (e.g. by the stream finalizer)
        exc = event.exception
        if isinstance(exc, GeneratorExit):
            self._finish(call, call.last, abandoned=True)
        else:
            self._finish(call, call.last, error=type(exc).__name__)

    def _forget_stream(self, sid: str) -> None:
        """The stream object of ``sid`` was garbage collected."""
        try:
            call = self._llm.pop(sid, None)
            if call is None:
                return
            if call.chunks == 0:
                # Never iterated: the request was not made (streams start lazily).
                self._release(call.sid)
                if call.outer is not None:
                    call.outer.children -= 1
                return
            self._finish(call, call.last, abandoned=True)
        except Exception as exc:
            self._fail(exc, "stream finalizer")

    def _release(self, call_id: str) -> None:
        self.tracker.release(call_id)

    def _finish(
        self,
        call: _LLMCall,
        response: Any,
        *,
        abandoned: bool = False,
        error: str | None = None,
    ) -> None:
        if call.children or call.adapter:
            # An adapter over inner LLM calls (chat -> complete): those are counted.
            self._release(call.sid)
            return
        usage = call.usage if call.stream else None
        if usage is None:
            usage = _usage.from_response(response)
        metadata: dict[str, Any] | None = None
        if usage is not None and not abandoned:
            inp, out, cr, cw, rs, cost = usage
            estimated = False
        else:
            out_est = _tokens.count(_response_text(response), call.model)
            if usage is not None:  # abandoned after a partial report (Anthropic's start)
                inp, cr, cw, rs, cost = usage.input, usage.cache_read, usage.cache_write, 0, None
                out = max(usage.output, out_est)
            else:
                inp, cr, cw, rs, cost = self._estimate_input(call), 0, 0, 0, None
                out = out_est
            estimated = True
            if abandoned:
                metadata = {"stream": "abandoned", "chunks": call.chunks}
            elif call.stream and error is None:
                self._warn_stream(call)
        latency = (time.perf_counter() - call.t0) * 1000.0
        stack = call.stack
        token = STACK.set(stack) if STACK.get() is not stack else None
        try:
            self.tracker.record_llm(
                call.model,
                inp,
                out,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                reasoning_tokens=rs,
                provider=call.provider,
                latency_ms=latency,
                cost_usd=cost,
                call_id=call.sid,
                kind=call.kind,
                estimated=estimated,
                session_id=call.session,
                agent_id=call.agent,
                metadata=metadata,
                ok=error is None,
                error=error,
            )
        finally:
            if token is not None:
                STACK.reset(token)

    def _estimate_input(self, call: _LLMCall) -> int:
        if call.prompt is not None:
            return _tokens.count(call.prompt, call.model)
        if call.messages is not None:
            return _tokens.count_messages(call.messages, call.model)
        return 0

    def _warn_stream(self, call: _LLMCall) -> None:
        key = call.model
        if key in self._warned:
            return
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        if _is_openai_class(call.cls):
            fix = (
                f"pass {STREAM_USAGE_FIX} to the llama-index OpenAI LLM, "
                "or instrument(stream_usage=True)"
            )
        else:
            fix = f"enable usage reporting for streams in the {call.cls} integration"
        warnings.warn(
            f"agentmeter: a stream of model {call.model!r} ended without reporting its "
            f"token usage; its counts are estimated (estimated=True). To count it exactly, {fix}.",
            StreamUsageWarning,
            stacklevel=2,
        )

    # -- embeddings -------------------------------------------------------------
    def _on_embedding_start(self, event: EmbeddingStartEvent) -> None:
        sid = event.span_id or ""
        queue = self._emb.get(sid)
        if queue is None:
            queue = self._emb[sid] = deque()
            if len(self._emb) > _MAX_PENDING:
                self._emb.pop(next(iter(self._emb)), None)
        queue.append(_Embedding(event.model_dict, event.tags))

    def _on_embedding_end(self, event: Any) -> None:
        sid = event.span_id or ""
        queue = self._emb.get(sid)
        if not queue:
            return
        emb = queue.popleft()  # batches of one span end in the order they started
        if not queue:
            self._emb.pop(sid, None)
        chunks: list[str] = event.chunks
        openai = _is_openai_class(emb.cls)
        if openai:
            # What llama-index's OpenAIEmbedding sends: newlines replaced by spaces.
            chunks = [c.replace("\n", " ") for c in chunks]
        tokens = sum(_tokens.count(c, emb.model) for c in chunks)
        exact = openai and _tokens.is_openai_tokenized(emb.model)
        latency = (time.perf_counter() - emb.t0) * 1000.0
        stack = emb.stack
        token = STACK.set(stack) if STACK.get() is not stack else None
        try:
            self.tracker.record_embedding(
                emb.model,
                tokens,
                provider=emb.provider,
                latency_ms=latency,
                cost_usd=None,
                call_id=event.id_,
                estimated=not exact,
                session_id=emb.session,
                agent_id=emb.agent,
            )
        finally:
            if token is not None:
                STACK.reset(token)

    # -- spans ----------------------------------------------------------------
    def _kind(self, instance: Any) -> int:
        cls = type(instance)
        kind = self._kinds.get(cls)
        if kind is None:
            if isinstance(instance, BaseTool):
                kind = _K_TOOL
            elif self._workflow_types and isinstance(instance, self._workflow_types):
                kind = _K_RUN
            elif isinstance(instance, BaseLLM):
                kind = _K_LLM
            else:
                kind = _K_OTHER
            self._kinds[cls] = kind
        return kind

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any,
        parent_id: str | None,
        tags: dict[str, Any] | None,
    ) -> None:
        try:
            parents = self._parents
            parents[id_] = parent_id
            if len(parents) > _MAX_OPEN:
                parents.pop(next(iter(parents)), None)
            if instance is None:
                if parent_id is not None:
                    run = self._open.get(parent_id)
                    if isinstance(run, _Run):
                        self._step_enter(id_, run, bound_args)
                return
            kind = self._kind(instance)
            if kind == _K_OTHER:
                return
            if kind == _K_TOOL:
                self._tool_enter(id_, instance, parent_id, tags)
            elif kind == _K_RUN:
                self._run_enter(id_, instance)
            elif self.stream_usage:
                self._ask_stream_usage(instance)
        except Exception as exc:
            self._fail(exc, "span_enter")

    def span_exit(self, id_: str, result: Any) -> None:
        try:
            self._parents.pop(id_, None)
            call = self._llm.get(id_)
            if call is not None and (inspect.isgenerator(result) or inspect.isasyncgen(result)):
                call.stream = True
                weakref.finalize(result, self._forget_stream, id_)
            rec = self._open.pop(id_, None)
            if rec is not None:
                self._close(id_, rec, result, None)
        except Exception as exc:
            self._fail(exc, "span_exit")

    def span_drop(self, id_: str, err: BaseException | None) -> None:
        try:
            self._parents.pop(id_, None)
            call = self._llm.get(id_)
            if call is not None and not call.stream:
                # The call raised before it returned a response (or a stream).
                self._llm.pop(id_, None)
                if call.depth:
                    call.depth = 0
                if isinstance(err, BudgetExceeded):
                    # Refused by a budget before it was made: nothing to count.
                    if call.outer is not None:
                        call.outer.children -= 1
                else:
                    self._finish_failed(call, err)
            rec = self._open.pop(id_, None)
            if rec is not None:
                self._close(id_, rec, None, err if err is not None else RuntimeError("dropped"))
        except Exception as exc:
            self._fail(exc, "span_drop")

    def _finish_failed(self, call: _LLMCall, err: BaseException | None) -> None:
        if call.children:
            self._release(call.sid)
            return
        latency = (time.perf_counter() - call.t0) * 1000.0
        stack = call.stack
        token = STACK.set(stack) if STACK.get() is not stack else None
        try:
            # The provider's usage of a failed call is unknown: it is recorded as a
            # failed call with no tokens, not as a successful one with zero.
            self.tracker.record_llm(
                call.model,
                0,
                0,
                provider=call.provider,
                latency_ms=latency,
                call_id=call.sid,
                kind=call.kind,
                session_id=call.session,
                agent_id=call.agent,
                ok=False,
                error=type(err).__name__ if err is not None else "error",
            )
        finally:
            if token is not None:
                STACK.reset(token)

    def _ask_stream_usage(self, instance: Any) -> None:
        """Opt-in: make a llama-index OpenAI LLM ask for usage in its streams."""
        if not _is_openai_class(type(instance).__name__):
            return
        extra = getattr(instance, "additional_kwargs", None)
        # llama-index drops stream_options itself from non-streaming requests.
        if isinstance(extra, dict) and "stream_options" not in extra:
            extra["stream_options"] = {"include_usage": True}

    def _tool_enter(
        self, id_: str, instance: Any, parent_id: str | None, tags: dict[str, Any] | None
    ) -> None:
        meta = getattr(instance, "metadata", None)
        name = getattr(meta, "name", None) or type(instance).__name__
        parent = self._open.get(parent_id) if parent_id is not None else None
        if isinstance(parent, _ToolCall) and parent.name == name:
            # FunctionTool.__call__ -> call, an async adapter -> the sync tool: one call.
            self._open[id_] = parent
            return
        if isinstance(parent, _ToolStep):
            parent.saw_tool = True
        session = _tag(tags or {}, "session_id")
        agent = _tag(tags or {}, "agent_id")
        scope = Scope(self.tracker, name, session, agent, None, None, name, None)
        scope.__enter__()
        self._open[id_] = _ToolCall(id_, name, scope, session, agent)

    def _run_enter(self, id_: str, instance: Any) -> None:
        tags = active_instrument_tags.get()
        session = _tag(tags, "session_id")
        agent = _tag(tags, "agent_id")
        agent_fixed = agent is not None
        if agent is None and self._agent_types and isinstance(instance, self._agent_types):
            name = getattr(instance, "name", None)
            agent = name if isinstance(name, str) and name else None
        if session is None and self.session_from_run_id:
            current = self.tracker.current_scope()
            if current is None or current.session_id is None:
                run_id = tags.get("llamaindex.run_id")
                session = run_id if isinstance(run_id, str) and run_id else None
        scope = Scope(self.tracker, f"{type(instance).__name__}.run", session, agent)
        scope.__enter__()
        self._open[id_] = _Run(scope, agent_fixed)

    def _step_enter(self, id_: str, run: _Run, bound_args: inspect.BoundArguments) -> None:
        if not run.agent_fixed:
            for value in bound_args.arguments.values():
                name = getattr(value, "current_agent_name", None)
                if isinstance(name, str) and name:
                    # Multi-agent workflows hand over between agents: the run's
                    # scope follows the agent whose step is running.
                    run.scope.agent_id = name
                    break
        if ".call_tool-" in id_:
            self._open[id_] = _ToolStep()

    def _close(
        self,
        id_: str,
        rec: _ToolCall | _Run | _ToolStep,
        result: Any,
        err: BaseException | None,
    ) -> None:
        if isinstance(rec, _ToolCall):
            if rec.sid != id_:
                return  # an inner span of the same tool call
            try:
                if err is not None and type(err).__name__ in _PAUSES:
                    return
                if err is not None:
                    ok, error = False, type(err).__name__
                elif getattr(result, "is_error", False) is True:
                    ok, error = False, "ToolOutput.is_error"
                else:
                    ok, error = True, None
                self.tracker.record_tool_call(
                    rec.name,
                    ok,
                    (time.perf_counter() - rec.t0) * 1000.0,
                    category="",
                    call_id=rec.sid,
                    session_id=rec.session,
                    agent_id=rec.agent,
                    error=error,
                )
            finally:
                rec.scope.__exit__(None, None, None)
        elif isinstance(rec, _Run):
            rec.scope.__exit__(None, None, None)
        elif not rec.saw_tool and err is None:
            output = getattr(result, "tool_output", None)
            name = getattr(result, "tool_name", None)
            if getattr(output, "is_error", False) is True and isinstance(name, str) and name:
                self.tracker.record_tool_call(
                    name,
                    False,
                    (time.perf_counter() - rec.t0) * 1000.0,
                    category="",
                    call_id=id_,
                    error="tool not found",
                )


_UNKNOWN: Any = object()
