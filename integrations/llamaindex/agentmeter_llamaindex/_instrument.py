"""Metering through LlamaIndex's instrumentation dispatcher, on ``agentmeter.instrumentation``.

One :class:`Instrumentor` owns an event handler and a span handler on the root
dispatcher. Events drive the LLM and embedding calls (see ``_llm.py``). Spans
give the parent of every open span (to find the LLM call another one runs in),
tool calls (spans of a ``BaseTool``: a :class:`~agentmeter.instrumentation.ToolCall`
whose scope credits everything recorded inside to the tool) and workflow runs
(the span of ``Workflow.run``: a scope carrying the session and the running
agent; steps run as asyncio tasks created inside the run, so they inherit it).

Budgets: the dispatcher swallows whatever its handlers raise, so it cannot stop
a call; LlamaIndex's ``CallbackManager`` can. With ``enforce_budgets`` (the
default), entering the span of an LLM or embedding model while a budget applies
puts this instrumentor's :class:`~agentmeter_llamaindex.AgentMeterCallbackHandler`
(its *gate*) on the ``CallbackManager`` that model has *now* -- the one its call
is about to use, whichever component (a query engine, a chat engine, an agent)
set it -- so the gate reserves before the call and raises ``BudgetExceeded``
before the request is sent. A call that ends without any such handler having
seen it while a budget applied is reported once, loudly
(:class:`~agentmeter_llamaindex.BudgetNotEnforcedWarning`).

Handlers must not raise into LlamaIndex (the dispatcher swallows everything):
internal errors are logged, kept in :attr:`Instrumentor.errors` and re-raised in
strict mode, where the dispatcher still drops them -- tests assert ``errors`` is
empty.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events import embedding as emb_events
from llama_index.core.instrumentation.events import llm as llm_events
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.span import SimpleSpan, active_span_id
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.tools.types import BaseTool
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.dispatcher import active_instrument_tags

from agentmeter import BudgetExceeded, BudgetStoreUnavailable, Scope, Tracker
from agentmeter.instrumentation import (
    ToolCall,
    guarded,
    register_call_id_provider,
    start_tool,
    unregister_call_id_provider,
)

from ._common import output_limit, tag
from ._llm import _GENERATORS, LLMEvents, is_openai, warn_unenforced
from ._tools import forget, guard, refuse

if TYPE_CHECKING:
    from .callback import AgentMeterCallbackHandler

__all__ = ["Instrumentor"]

_MAX_OPEN = 50_000  # open spans remembered (a leak guard; spans normally close)
_ERRORS_KEPT = 100
_K_OTHER, _K_TOOL, _K_RUN, _K_LLM, _K_EMB = 0, 1, 2, 3, 4
_MAX_CLAIMED = 10_000  # callback events a handler claimed (two handlers: one reserves)
# Exceptions that pause a tool rather than fail it (human-in-the-loop workflows).
_PAUSES = frozenset({"WaitingForEvent"})
_UNKNOWN: Any = object()


@dataclass(slots=True, eq=False)
class _Run:
    scope: Scope
    agent_fixed: bool  # from instrument_tags: hand-offs do not change it


@dataclass(slots=True, eq=False)
class _Refusal:
    """A tool call a budget refused: its function raises ``exc`` instead of running."""

    name: str
    exc: BaseException


@dataclass(slots=True, eq=False)
class _ToolStep:
    """A workflow ``call_tool`` step: a failed result without a tool span under it
    (the model asked for a tool that does not exist) is a failed tool call."""

    saw_tool: bool = False
    t0: float = field(default_factory=time.perf_counter)


def _make_handlers(core: Instrumentor) -> tuple[BaseEventHandler, BaseSpanHandler[SimpleSpan]]:
    """Handler classes bound to one instrumentor.

    The instrumentor is closed over instead of kept in a pydantic private
    attribute: reading those goes through ``BaseModel.__getattr__`` on every
    event, a measurable part of the per-call overhead. For the same reason the
    handlers do the per-call part themselves, on the instrumentor's containers
    (never replaced, only cleared): an event is dispatched here and an LLM
    span's enter and exit are handled here, without a further call each; the
    rest goes to the instrumentor's methods. The dispatcher passes everything
    by keyword.
    """
    dispatch = core._dispatch
    parents, limits, llm, opened, kinds = (
        core._parents,
        core._limits,
        core._llm,
        core._open,
        core._kinds,
    )
    on_event, fail, forget_stream = core.on_event, core._fail, core._forget_stream
    enter, leave, drop = core.span_enter, core.span_exit, core.span_drop

    class AgentMeterEventHandler(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "AgentMeterEventHandler"

        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            fn = dispatch.get(event.__class__)  # Instrumentor.on_event, inline
            if fn is not None:
                try:
                    fn(event)
                except Exception as exc:
                    fail(exc, type(event).__name__)
            elif event.__class__ not in dispatch:
                on_event(event)  # the first event of its class: finds its handler

    class AgentMeterSpanHandler(BaseSpanHandler[SimpleSpan]):
        @classmethod
        def class_name(cls) -> str:
            return "AgentMeterSpanHandler"

        def span_enter(
            self,
            id_: str,
            bound_args: inspect.BoundArguments | None = None,
            instance: Any = None,
            parent_id: str | None = None,
            tags: dict[str, Any] | None = None,
            **kw: Any,
        ) -> None:
            if instance is None or kinds.get(instance.__class__) != _K_LLM:
                enter(id_, bound_args, instance, parent_id, tags)
                return
            # An LLM's span (Instrumentor.span_enter's LLM branch, inline).
            try:
                if opened or llm or parents:
                    # Its parent is kept only while something it could be nested in
                    # -- a tool, a run, another call or span -- is open: the chain of
                    # parents is walked up to those (LLMEvents._pending_ancestor). A
                    # call made with nothing open (the usual top-level call) has no
                    # ancestor to find, and whatever opens later is its descendant.
                    parents[id_] = parent_id
                    if len(parents) > _MAX_OPEN:
                        parents.pop(next(iter(parents)), None)
                if core.enforce_budgets and core.tracker.budget_applies():
                    core._llm_enter(id_, instance)
                if core.stream_usage:
                    core._ask_stream_usage(instance)
            except Exception as exc:
                fail(exc, "span_enter")

        def span_exit(
            self,
            id_: str,
            bound_args: inspect.BoundArguments | None = None,
            instance: Any = None,
            result: Any = None,
            **kw: Any,
        ) -> None:
            if opened:
                leave(id_, result)  # tools, runs and steps are open: the whole exit
                return
            # Instrumentor.span_exit without open tools or runs, inline.
            try:
                if parents:
                    parents.pop(id_, None)
                if limits:
                    limits.pop(id_, None)
                span = llm.get(id_)
                if span is not None and isinstance(result, _GENERATORS):
                    span.stream = True
                    weakref.finalize(result, forget_stream, id_)
            except Exception as exc:
                fail(exc, "span_exit")

        def span_drop(
            self, id_: str, *args: Any, err: BaseException | None = None, **kw: Any
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


class Instrumentor(LLMEvents):
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
        enforce_budgets: bool = True,
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.session_from_run_id = session_from_run_id
        self.stream_usage = stream_usage
        self.enforce_budgets = enforce_budgets
        self._gate: AgentMeterCallbackHandler | None = None
        # The callback managers the gate was put on (taken off again by detach()).
        self._gated: weakref.WeakSet[CallbackManager] = weakref.WeakSet()
        self._claimed: dict[str, None] = {}
        self._limits: dict[str, int] = {}  # LLM span id -> its request's output limit
        self._claim_lock = threading.Lock()
        self.errors: list[BaseException] = []
        self._parents: dict[str, str | None] = {}
        self._open: dict[str, ToolCall | _Run | _ToolStep | _Refusal] = {}
        self._kinds: dict[type, int] = {}
        self._workflow_types: tuple[type, ...] = ()
        self._agent_types: tuple[type, ...] = ()
        self._dispatch: dict[type, Callable[[Any], None] | None] = {
            # One body for both starts; the partial binds its kind in C (no frame).
            llm_events.LLMChatStartEvent: partial(self._on_start, "chat"),
            llm_events.LLMCompletionStartEvent: partial(self._on_start, "completion"),
            llm_events.LLMChatInProgressEvent: self._on_chunk,
            llm_events.LLMCompletionInProgressEvent: self._on_chunk,
            llm_events.LLMChatEndEvent: self._on_end,
            llm_events.LLMCompletionEndEvent: self._on_end,
            ExceptionEvent: self._on_exception,
            emb_events.EmbeddingStartEvent: self._on_embedding_start,
            emb_events.EmbeddingEndEvent: self._on_embedding_end,
            emb_events.SparseEmbeddingEndEvent: self._on_embedding_end,
        }
        self.event_handler, self.span_handler = _make_handlers(self)
        self._attached = False

    # -- wiring ---------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """True while the handlers are on the root dispatcher."""
        return self._attached

    def attach(self) -> None:
        """Add the handlers to the root dispatcher and the call-id provider."""
        if self._attached:
            return
        # Imported here: these modules are heavy, and unused for plain LLM calls.
        from llama_index.core.agent.workflow import BaseWorkflowAgent
        from llama_index.core.workflow import Workflow

        self._workflow_types, self._agent_types = (Workflow,), (BaseWorkflowAgent,)
        if self.enforce_budgets and self._gate is None:
            from .callback import AgentMeterCallbackHandler

            self._gate = AgentMeterCallbackHandler(self.tracker, instrument=False)
            self._gate._instrumentor = self._gate._gate_of = self
        root = get_dispatcher()
        root.add_event_handler(self.event_handler)
        root.add_span_handler(self.span_handler)
        register_call_id_provider(self.current_tool_call_id)
        self._attached = True

    def detach(self) -> None:
        """Remove the handlers (calls and spans still open are forgotten)."""
        if not self._attached:
            return
        root = get_dispatcher()
        # Swap in new lists rather than mutate the ones a dispatch may be iterating.
        root.event_handlers = [h for h in root.event_handlers if h is not self.event_handler]
        root.span_handlers = [h for h in root.span_handlers if h is not self.span_handler]
        unregister_call_id_provider(self.current_tool_call_id)
        self._attached = False
        gate = self._gate
        for cm in list(self._gated):
            cm.handlers = [h for h in cm.handlers if h is not gate]
        self._gated = weakref.WeakSet()
        for pending in (self._parents, self._llm, self._emb, self._open, self._claimed):
            pending.clear()
        self._limits.clear()

    def output_limit(self, span_id: str | None) -> int | None:
        """The output-token limit of the LLM whose span ``span_id`` is (None: unknown)."""
        return self._limits.get(span_id) if span_id is not None and self._limits else None

    def claim(self, event_id: str, span_id: str | None, llm: bool) -> bool:
        """True for the first agentmeter handler of this tracker that sees a callback event.

        The gate and a handler the user added can both be on one callback manager:
        one of them reserves. An LLM call claimed is one that could be refused.
        """
        with self._claim_lock:
            claimed = self._claimed
            if event_id in claimed:
                return False
            claimed[event_id] = None
            if len(claimed) > _MAX_CLAIMED:
                claimed.pop(next(iter(claimed)), None)
        if llm:
            self.gate(span_id)
        return True

    def _put_gate(self, instance: Any) -> None:
        """Put the gate on the callback manager ``instance`` is about to call with."""
        gate = self._gate
        if gate is None:
            return
        cm = getattr(instance, "callback_manager", None)
        if not isinstance(cm, CallbackManager):
            cm = CallbackManager([])  # what llama-index's callback wrappers would create
            instance.callback_manager = cm
        from .callback import AgentMeterCallbackHandler

        handlers = cm.handlers
        tracker = gate.tracker
        for h in handlers:
            if h is gate or (isinstance(h, AgentMeterCallbackHandler) and h.tracker is tracker):
                return  # guarded already (a handler the user added reserves the same way)
        # A new list: a manager built without handlers shares Settings' list.
        cm.handlers = [*handlers, gate]
        self._gated.add(cm)

    def _fail(self, exc: BaseException, where: str) -> None:
        if len(self.errors) < _ERRORS_KEPT:
            self.errors.append(exc)
        with guarded(f"agentmeter_llamaindex {where}"):  # logs; re-raises in strict mode
            raise exc

    def current_tool_call_id(self) -> str | None:
        """The span id of the LlamaIndex tool call running here (for ``@metered_tool``)."""
        sid = active_span_id.get()
        rec = self._open.get(sid) if sid is not None else None
        return rec.call_id if isinstance(rec, ToolCall) else None

    def on_event(self, event: BaseEvent) -> None:
        fn = self._dispatch.get(type(event), _UNKNOWN)
        if fn is _UNKNOWN:
            fn = next(
                (h for cls, h in list(self._dispatch.items()) if h and isinstance(event, cls)),
                None,
            )
            self._dispatch[type(event)] = fn
        if fn is not None:
            try:
                fn(event)
            except Exception as exc:
                self._fail(exc, type(event).__name__)

    # -- spans ----------------------------------------------------------------
    def _kind(self, instance: Any) -> int:
        cls = type(instance)
        kind = self._kinds.get(cls)
        if kind is None:
            if isinstance(instance, BaseTool):
                kind = _K_TOOL
            elif isinstance(instance, self._workflow_types):
                kind = _K_RUN
            elif isinstance(instance, BaseLLM):
                kind = _K_LLM
            elif isinstance(instance, BaseEmbedding):
                kind = _K_EMB
            else:
                kind = _K_OTHER
            self._kinds[cls] = kind
        return kind

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments | None,
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
                run = self._open.get(parent_id) if parent_id is not None else None
                if isinstance(run, _Run):
                    self._step_enter(id_, run, bound_args)
                return
            kind = self._kind(instance)
            if kind == _K_TOOL:
                self._tool_enter(id_, instance, parent_id, tags)
            elif kind == _K_RUN:
                self._run_enter(id_, instance)
            elif kind == _K_LLM:
                if self.enforce_budgets and self.tracker.budget_applies():
                    self._llm_enter(id_, instance)
                if self.stream_usage:
                    self._ask_stream_usage(instance)
            elif kind == _K_EMB and self.enforce_budgets and self.tracker.budget_applies():
                self._put_gate(instance)
        except Exception as exc:
            self._fail(exc, "span_enter")

    def _llm_enter(self, id_: str, instance: Any) -> None:
        """The span of an LLM opens while a budget applies: gate it, note its limit."""
        self._put_gate(instance)
        limit = output_limit(instance)
        if limit is not None:  # a hard cap reserves the call's worst case
            limits = self._limits
            limits[id_] = limit
            if len(limits) > _MAX_OPEN:
                limits.pop(next(iter(limits)), None)

    def span_exit(self, id_: str, result: Any) -> None:
        try:
            self._parents.pop(id_, None)
            if self._limits:
                self._limits.pop(id_, None)
            self._llm_span_exit(id_, result)
            rec = self._open.pop(id_, None)
            if rec is not None:
                self._close(id_, rec, result, None)
        except Exception as exc:
            self._fail(exc, "span_exit")

    def span_drop(self, id_: str, err: BaseException | None) -> None:
        try:
            self._parents.pop(id_, None)
            if self._limits:
                self._limits.pop(id_, None)
            self._llm_span_drop(id_, err)
            rec = self._open.pop(id_, None)
            if rec is not None:
                self._close(id_, rec, None, err if err is not None else RuntimeError("dropped"))
        except Exception as exc:
            self._fail(exc, "span_drop")

    def _ask_stream_usage(self, instance: Any) -> None:
        """Opt-in: make a llama-index OpenAI LLM ask for usage in its streams."""
        extra = getattr(instance, "additional_kwargs", None)
        # llama-index drops stream_options itself from non-streaming requests.
        if is_openai(type(instance).__name__) and isinstance(extra, dict):
            extra.setdefault("stream_options", {"include_usage": True})

    def _tool_enter(
        self, id_: str, instance: Any, parent_id: str | None, tags: dict[str, Any] | None
    ) -> None:
        name = getattr(getattr(instance, "metadata", None), "name", None) or type(instance).__name__
        parent = self._open.get(parent_id) if parent_id is not None else None
        if isinstance(parent, ToolCall) and parent.name == name:
            # FunctionTool.__call__ -> call, an async adapter -> the sync tool: one call.
            self._open[id_] = parent
            return
        if isinstance(parent, _Refusal) and parent.name == name:
            self._open[id_] = parent  # the inner span of a refused call refuses too
            refuse(id_, parent.exc)
            return
        if isinstance(parent, _ToolStep):
            parent.saw_tool = True
        session, agent = tag(tags, "session_id"), tag(tags, "agent_id")
        enforce = self.enforce_budgets
        try:
            call = start_tool(
                name,
                call_id=id_,
                scope_name=name,
                tracker=self.tracker,
                session_id=session,
                agent_id=agent,
                check_budget=enforce,
            )
        except (BudgetExceeded, BudgetStoreUnavailable) as exc:
            if guard(instance):
                # Raised by the tool's own function wrapper, before its body (_tools.py).
                self._open[id_] = _Refusal(name, exc)
                refuse(id_, exc)
                return
            self._warn_tool(name, instance, exc)
            call = start_tool(
                name,
                call_id=id_,
                scope_name=name,
                tracker=self.tracker,
                session_id=session,
                agent_id=agent,
                check_budget=False,
            )
        self._open[id_] = call

    def _warn_tool(self, name: str, instance: Any, exc: BaseException) -> None:
        cls = type(instance).__name__
        key = "tool:" + cls
        if key in self._warned:
            return
        self._warned.add(key)
        warn_unenforced(
            f"agentmeter: a budget refused a call of tool {name!r} ({exc}), but agentmeter "
            f"cannot stop a {cls} before it runs (LlamaIndex's dispatcher cannot refuse a call, "
            "and only a FunctionTool runs its function where agentmeter can check it first); "
            "it runs and is counted against the budget. To enforce the budget on it: make it a "
            "FunctionTool (FunctionTool.from_defaults(fn)), or decorate the function it runs "
            "with @agentmeter.metered_tool."
        )

    def _run_enter(self, id_: str, instance: Any) -> None:
        tags = active_instrument_tags.get()
        session, agent = tag(tags, "session_id"), tag(tags, "agent_id")
        agent_fixed = agent is not None
        if agent is None and isinstance(instance, self._agent_types):
            name = getattr(instance, "name", None)
            agent = name if isinstance(name, str) and name else None
        if session is None and self.session_from_run_id:
            current = self.tracker.current_scope()
            if current is None or current.session_id is None:
                run_id = tags.get("llamaindex.run_id")
                session = run_id if isinstance(run_id, str) and run_id else None
        name = f"{type(instance).__name__}.run"
        scope = self.tracker.meter(name, session_id=session, agent_id=agent).enter()
        self._open[id_] = _Run(scope, agent_fixed)

    def _step_enter(self, id_: str, run: _Run, bound_args: inspect.BoundArguments | None) -> None:
        if not run.agent_fixed and bound_args is not None:
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
        rec: ToolCall | _Run | _ToolStep | _Refusal,
        result: Any,
        err: BaseException | None,
    ) -> None:
        if isinstance(rec, _Refusal):
            forget(id_)  # refused before it ran: nothing to record
        elif isinstance(rec, ToolCall):
            if rec.call_id != id_:
                pass  # an inner span of the same tool call
            elif err is not None and type(err).__name__ in _PAUSES:
                rec.cancel()  # paused, not ended: recorded when it runs again
            elif err is not None:
                rec.finish(False, type(err).__name__)
            elif getattr(result, "is_error", False) is True:
                rec.finish(False, "ToolOutput.is_error")
            else:
                rec.finish()
        elif isinstance(rec, _Run):
            rec.scope.exit()
        elif not rec.saw_tool and err is None:
            output = getattr(result, "tool_output", None)
            name = getattr(result, "tool_name", None)
            if getattr(output, "is_error", False) is True and isinstance(name, str) and name:
                self.tracker.record_tool_call(
                    name,
                    False,
                    (time.perf_counter() - rec.t0) * 1000.0,
                    call_id=id_,
                    error="tool not found",
                )
