"""``AgentMeterCallbackHandler``: meters LangChain / LangGraph runs into an agentmeter tracker.

One handler instance serves any number of concurrent runs (threads and asyncio
tasks): per-run state lives in ``_runs``, keyed by LangChain's ``run_id``, and is
dropped when the run ends (the map is bounded, so runs that never end cannot
grow it without limit). The run id is also the agentmeter ``call_id``: a call
seen twice (two handlers, or a handler and ``@agentmeter.metered_tool``) counts once,
and a budget reservation made at start is settled by the record at the end.

The handler is synchronous with ``run_inline = True``: LangChain then calls it
directly on the event loop for async runs instead of shipping every event to a
thread pool (~1 ms per call), and it runs in the caller's context, so the
caller's ``agentmeter.meter()`` scopes receive the records.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from decimal import Decimal
from time import perf_counter
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

import agentmeter
from agentmeter import BudgetExceeded, Scope
from agentmeter._guard import swallow

from . import _tokens, _usage
from ._context import tool_run_ended, tool_run_started

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["AgentMeterCallbackHandler", "UnreportedUsageWarning"]

logger = logging.getLogger("agentmeter.langchain")

_DEFAULT_MAX_RUNS = 10_000


class UnreportedUsageWarning(UserWarning):
    """A model returned no token usage; agentmeter recorded an estimate (flagged estimated)."""


# Per-run state is a plain tuple (cheaper to build than an object, and this is
# the hot path). Element 0 is the tool a run's children are credited to, element
# 1 the kind of run; the rest depends on the kind.
_LLM = 0  # (tool, _LLM, model, provider, session, agent, t0, prompt, kind, serialized, customer)
_TOOL = 1  # (tool, _TOOL, name, session, agent, category, scope, t0, customer)
_NESTED = 2  # (tool, _NESTED): a chain / retriever below a tool

_Run = tuple[Any, ...]


def _class_name(serialized: dict[str, Any] | None) -> str:
    """The model's class name from its serialized form (``id[-1]``), or ``"unknown"``."""
    if serialized:
        ids = serialized.get("id")
        if ids:
            return str(ids[-1])
    return "unknown"


def _str_or_none(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value or None
    text = str(value)
    return text or None


class AgentMeterCallbackHandler(BaseCallbackHandler):
    """Meter LangChain chat models, LLMs, streams, tools and LangGraph agents.

    Attach it to a run (``config={"callbacks": [handler]}``), to a model or
    agent, or meter every run with :func:`agentmeter_langchain.instrument`.

    What it records, per call (``call_id`` = LangChain ``run_id``):

    - LLM / chat model calls: tokens from ``AIMessage.usage_metadata`` (cache read /
      write and reasoning details included), else ``llm_output["token_usage"]``,
      else an estimate flagged ``estimated=True``; model and provider from
      ``ls_model_name`` / ``ls_provider`` and the response metadata; latency;
      failures as failed calls. A stream counts when fully consumed; an abandoned
      one is recorded with what it received and flagged.
    - Tool calls: duration and success (an exception, or a ``ToolMessage`` with
      ``status="error"``, is a failure). LLM calls made inside a tool are credited
      to it.
    - Session from the run metadata (``session_id``, else LangGraph's
      ``thread_id``); agent from ``agent_id`` / ``lc_agent_name`` metadata, else
      the LangGraph node. Explicit values (this handler's arguments, ``session_id``
      / ``agent_id`` metadata) win over the enclosing ``meter()`` scope, which wins
      over the implicit LangGraph ``thread_id`` / node. The customer (the party
      billed) from this handler's ``customer_id``, else the run metadata
      ``customer_id``, else the enclosing scope's.
    - Budgets: before each model and tool call, the budget that applies (scope,
      session) is checked and the estimated prompt reserved; a call that would
      overspend raises :class:`agentmeter.BudgetExceeded` before it is sent.

    Args:
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        session_id: Session for every call this handler sees (overrides metadata).
        agent_id: Agent for every call this handler sees (overrides metadata).
        customer_id: Customer for every call this handler sees (overrides metadata).
        enforce_budgets: Check budgets before calls (raise ``BudgetExceeded``).
        max_runs: Bound on the runs tracked at once (runs that never end are evicted).
    """

    # Raise BudgetExceeded into LangChain (it re-raises only with raise_error);
    # every other internal error is swallowed by agentmeter's guard first.
    raise_error: bool = True
    # Called inline for async runs: no thread-pool hop per event, caller's context.
    run_inline: bool = True

    def __init__(
        self,
        tracker: agentmeter.Tracker | None = None,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        enforce_budgets: bool = True,
        max_runs: int = _DEFAULT_MAX_RUNS,
    ) -> None:
        if tracker is not None and not isinstance(tracker, agentmeter.Tracker):
            raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
        for arg, value in (
            ("session_id", session_id),
            ("agent_id", agent_id),
            ("customer_id", customer_id),
        ):
            if value is not None and (type(value) is not str or not value):
                raise TypeError(f"{arg} must be a non-empty str or None, got {value!r}")
        if type(max_runs) is not int or max_runs < 1:
            raise ValueError(f"max_runs must be a positive int, got {max_runs!r}")
        self.tracker = tracker if tracker is not None else agentmeter.get_tracker()
        self.session_id = session_id
        self.agent_id = agent_id
        self.customer_id = customer_id
        self.enforce_budgets = bool(enforce_budgets)
        self.max_runs = max_runs
        self._runs: dict[UUID, _Run] = {}
        # Streams that received tokens: [characters so far, usage so far or None].
        self._streams: dict[UUID, list[Any]] = {}
        self._warned: set[str] = set()
        self.abandoned_streams = 0
        """Streams recorded as abandoned (consumer stopped, or never finished)."""
        self.unreported_usage_calls = 0
        """Calls whose usage the provider did not report (recorded as estimates)."""
        # The budget ledger's "anything to enforce?" flag, read without a call.
        from ._context import ensure_call_id_provider

        ensure_call_id_provider()

    def __repr__(self) -> str:
        return (
            f"AgentMeterCallbackHandler(session_id={self.session_id!r}, "
            f"agent_id={self.agent_id!r}, open_runs={len(self._runs)})"
        )

    # ------------------------------------------------------------ attribution
    def _who(self, md: dict[str, Any] | None) -> tuple[str | None, str | None]:
        """Session and agent for a run, from this handler, the metadata, the scope."""
        session = self.session_id
        agent = self.agent_id
        if md:
            implicit_session = implicit_agent = None
            if session is None:
                # "" (or another empty value) means no session, never an invalid one.
                session = _str_or_none(md.get("session_id"))
                if session is None:
                    implicit_session = md.get("thread_id")
            if agent is None:
                agent = _str_or_none(md.get("agent_id") or md.get("lc_agent_name"))
                if agent is None:
                    implicit_agent = md.get("langgraph_node")
            if implicit_session is not None or implicit_agent is not None:
                # The enclosing meter() scope is more explicit than LangGraph's ids.
                scope = self.tracker.current_scope()
                if implicit_session is not None and (scope is None or scope.session_id is None):
                    session = _str_or_none(implicit_session)
                if implicit_agent is not None and (scope is None or scope.agent_id is None):
                    agent = _str_or_none(implicit_agent)
        return session, agent

    def _customer(self, md: dict[str, Any] | None) -> str | None:
        """The run's customer: this handler's, else the metadata's (None: the scope's)."""
        if self.customer_id is not None or not md:
            return self.customer_id
        return _str_or_none(md.get("customer_id"))

    def _budgets_apply(self) -> bool:
        """Whether any budget may apply to a call here (decided without building one)."""
        return self.tracker.budget_applies()

    def _track(self, run_id: UUID, run: _Run) -> None:
        runs = self._runs
        runs[run_id] = run
        if len(runs) > self.max_runs:
            self._evict()

    def _evict(self) -> None:
        runs = self._runs
        while len(runs) > self.max_runs:
            try:
                old_id = next(iter(runs))
                old = runs.pop(old_id)
            except (StopIteration, RuntimeError, KeyError):  # changed by another thread
                return
            if old[1] == _LLM:
                if old_id in self._streams:
                    self._record_partial(old_id, old, None, abandoned=True)
            elif old[1] == _TOOL:
                tool_run_ended(old_id)

    # -------------------------------------------------------------- LLM start
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the call's model and attribution; check the budget (may raise)."""
        try:
            self._start(
                serialized,
                messages[0] if messages else (),
                run_id,
                parent_run_id,
                metadata,
                kwargs,
                "chat",
            )
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_chat_model_start")

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Completion-model twin of :meth:`on_chat_model_start`."""
        try:
            self._start(
                serialized,
                prompts,
                run_id,
                parent_run_id,
                metadata,
                kwargs,
                "completion",
            )
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_llm_start")

    def _start(
        self,
        serialized: dict[str, Any] | None,
        prompt: Sequence[Any],
        run_id: UUID,
        parent_run_id: UUID | None,
        md: dict[str, Any] | None,
        kwargs: dict[str, Any],
        kind: str,
    ) -> None:
        model = provider = tool = None
        if md:
            model = md.get("ls_model_name")
            provider = md.get("ls_provider")
        if model is None:
            params = kwargs.get("invocation_params")
            if params:
                model = params.get("model") or params.get("model_name")
        if parent_run_id is not None:
            parent = self._runs.get(parent_run_id)
            if parent is not None:
                tool = parent[0]
        if md and (self.session_id is None or self.agent_id is None):
            session, agent = self._who(md)
        else:
            session, agent = self.session_id, self.agent_id
        if self.enforce_budgets and self.tracker.budget_applies():
            self.tracker.check_budget(
                _tokens.estimate_messages(prompt),
                kind="llm",
                model=_str_or_none(model),
                provider=_str_or_none(provider),
                call_id=str(run_id),
                session_id=session,
            )
        runs = self._runs
        runs[run_id] = (
            tool,
            _LLM,
            model,
            provider,
            session,
            agent,
            perf_counter(),
            prompt,
            kind,
            serialized,
            self._customer(md),
        )
        if len(runs) > self.max_runs:
            self._evict()

    # ------------------------------------------------------------- streaming
    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Keep what a stream received so far (for a stream that is never finished)."""
        try:
            state = self._streams.get(run_id)
            if state is None:
                if run_id not in self._runs:
                    return
                state = self._streams[run_id] = [0, None]
            state[0] += len(token) if token.__class__ is str else _tokens.message_chars(token)
            um = getattr(getattr(chunk, "message", None), "usage_metadata", None)
            if um:
                state[1] = _usage.add_counts(state[1], _usage.from_usage_metadata(um))
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_llm_new_token")

    # --------------------------------------------------------------- LLM end
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the call with the usage the response reports (or an estimate)."""
        run = self._runs.pop(run_id, None)
        try:
            if self._streams:
                self._streams.pop(run_id, None)
            gens = response.generations
            gen = gens[0][0] if gens and gens[0] else None
            msg = getattr(gen, "message", None)
            um = getattr(msg, "usage_metadata", None)
            if um is None or run is None or msg is None or run[1] != _LLM:
                self._end_other(run, response, gen, msg, um, run_id)
                return
            # The common case, kept flat: a chat model that reported usage_metadata.
            rm = msg.response_metadata
            model = rm.get("model_name") or run[2] if rm else run[2]
            provider = run[3] or (rm.get("model_provider") if rm else None)
            inp = um.get("input_tokens", 0)
            out = um.get("output_tokens", 0)
            cr = cw = rs = 0
            details = um.get("input_token_details")
            if details:
                cr = details.get("cache_read") or 0
                cw = details.get("cache_creation") or 0
            details = um.get("output_token_details")
            if details:
                rs = details.get("reasoning") or 0
            if inp.__class__ is not int or out.__class__ is not int or cr + cw > inp or rs > out:
                inp, out, cr, cw, rs = _usage.from_usage_metadata(um)
            cost = None
            if rm:
                tu = rm.get("token_usage")
                if tu and "cost" in tu:
                    cost = _usage.reported_cost(tu)
            if model.__class__ is not str or not model:
                model = _str_or_none(model) or _class_name(run[9])
            self.tracker.record_llm(
                model,
                inp,
                out,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                reasoning_tokens=rs,
                provider=provider
                if provider is None or provider.__class__ is str
                else str(provider),
                latency_ms=(perf_counter() - run[6]) * 1000.0,
                cost_usd=cost,
                call_id=str(run_id),
                kind=run[8],
                estimated=False,
                session_id=run[4],
                agent_id=run[5],
                metadata=None,
                tool=run[0],
                customer_id=run[10],
            )
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_llm_end")

    def _end_other(
        self,
        run: _Run | None,
        response: LLMResult,
        gen: Any,
        msg: Any,
        um: Any,
        run_id: UUID,
    ) -> None:
        """Everything but a chat reply with usage_metadata: llm_output, estimates."""
        if run is not None and run[1] != _LLM:
            run = None
        rm = msg.response_metadata if msg is not None else None
        model = provider = None
        if run is not None:
            model, provider = run[2], run[3]
        if rm:
            model = rm.get("model_name") or rm.get("model") or model
            provider = provider or rm.get("model_provider")
        cost: Decimal | None = None
        estimated = False
        if um:
            inp, out, cr, cw, rs = _usage.from_usage_metadata(um)
        else:
            reported = _usage.from_llm_output(response.llm_output)
            if reported is not None:
                (inp, out, cr, cw, rs), cost = reported
                if response.llm_output and not (rm and rm.get("model_name")):
                    model = response.llm_output.get("model_name") or model
            else:
                inp, out = self._estimate(run, gen, None)
                cr = cw = rs = 0
                estimated = True
                self._unreported(model, run, gen)
        if run is not None:
            self.tracker.record_llm(
                _str_or_none(model) or _class_name(run[9]),
                inp,
                out,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                reasoning_tokens=rs,
                provider=_str_or_none(provider),
                latency_ms=(perf_counter() - run[6]) * 1000.0,
                cost_usd=cost,
                call_id=str(run_id),
                kind=run[8],
                estimated=estimated,
                session_id=run[4],
                agent_id=run[5],
                metadata=None,
                tool=run[0],
                customer_id=run[10],
            )
        else:  # the start was not seen (handler added mid-run, or evicted)
            self.tracker.record_llm(
                _str_or_none(model) or "unknown",
                inp,
                out,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                reasoning_tokens=rs,
                provider=_str_or_none(provider),
                latency_ms=None,
                cost_usd=cost,
                call_id=str(run_id),
                kind="chat" if msg is not None else "completion",
                estimated=estimated,
                session_id=self.session_id,
                agent_id=self.agent_id,
                customer_id=self.customer_id,
            )

    def _estimate(self, run: _Run | None, gen: Any, streamed_chars: int | None) -> tuple[int, int]:
        """Estimated (input, output) tokens from the prompt and what came back."""
        inp = _tokens.estimate_messages(run[7]) if run is not None else 0
        out = 0
        if gen is not None:
            msg = getattr(gen, "message", None)
            chars = _tokens.message_chars(msg) if msg is not None else len(gen.text or "")
            out = _tokens.estimate_chars(chars)
        elif streamed_chars:
            out = _tokens.estimate_chars(streamed_chars)
        return inp, out

    def _unreported(self, model: Any, run: _Run | None, gen: Any) -> None:
        """Count a call without reported usage; warn once per model with the fix."""
        self.unreported_usage_calls += 1
        name = _str_or_none(model) or "unknown"
        if name in self._warned:
            return
        self._warned.add(name)
        streamed = isinstance(gen, ChatGenerationChunk | GenerationChunk)
        cls = _class_name(run[9]) if run is not None else ""
        if streamed and cls in ("ChatOpenAI", "AzureChatOpenAI"):
            fix = (
                f"pass stream_usage=True to {cls}(...) (with a base_url it sends no "
                "stream_options, so its streams carry no usage)"
            )
        elif streamed:
            fix = (
                "enable usage in streams for this model (ChatOpenAI: stream_usage=True; "
                'OpenAI-compatible servers: stream_options={"include_usage": true})'
            )
        else:
            fix = "make the model return usage_metadata or llm_output['token_usage']"
        msg = (
            f"agentmeter: {'the stream of ' if streamed else ''}model {name!r} reported no "
            f"token usage; its tokens were estimated (recorded with estimated=True). Fix: {fix}."
        )
        logger.warning(msg)
        warnings.warn(msg, UnreportedUsageWarning, stacklevel=2)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a failed call; an abandoned or broken stream with what it received."""
        run = self._runs.pop(run_id, None)
        try:
            if run is not None and run[1] != _LLM:
                run = None
            response = kwargs.get("response")
            partial = None
            if isinstance(response, LLMResult) and response.generations:
                first = response.generations[0]
                if first and isinstance(first[0], ChatGenerationChunk | GenerationChunk):
                    partial = first[0]
            abandoned = isinstance(error, GeneratorExit)
            if partial is not None or abandoned or run_id in self._streams:
                self._record_partial(run_id, run, partial, abandoned=abandoned, error=error)
                return
            self._record_failed(run_id, run, error)
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_llm_error")

    def _record_failed(self, run_id: UUID, run: _Run | None, error: BaseException) -> None:
        # A request that failed is not billed by the provider: a failed call, no tokens.
        if run is not None:
            self.tracker.record_llm(
                _str_or_none(run[2]) or _class_name(run[9]),
                0,
                0,
                provider=_str_or_none(run[3]),
                latency_ms=(perf_counter() - run[6]) * 1000.0,
                call_id=str(run_id),
                kind=run[8],
                session_id=run[4],
                agent_id=run[5],
                tool=run[0],
                customer_id=run[10],
                ok=False,
                error=type(error).__name__,
            )
        else:
            self.tracker.record_llm(
                "unknown",
                0,
                0,
                call_id=str(run_id),
                session_id=self.session_id,
                agent_id=self.agent_id,
                customer_id=self.customer_id,
                ok=False,
                error=type(error).__name__,
            )

    def _record_partial(
        self,
        run_id: UUID,
        run: _Run | None,
        partial: Any,
        *,
        abandoned: bool,
        error: BaseException | None = None,
    ) -> None:
        """Record a stream that ended early with the usage (or estimate) of what it got."""
        state = self._streams.pop(run_id, None)
        counts: _usage.Counts | None = None
        model = run[2] if run is not None else None
        provider = run[3] if run is not None else None
        msg = getattr(partial, "message", None)
        if msg is not None:
            um = getattr(msg, "usage_metadata", None)
            if um:
                counts = _usage.from_usage_metadata(um)
            rm = msg.response_metadata
            if rm:
                model = rm.get("model_name") or model
                provider = provider or rm.get("model_provider")
        elif state is not None and state[1] is not None:
            counts = state[1]
        estimated = False
        if counts is None or (counts[0] == 0 and run is not None and run[7]):
            inp, out = self._estimate(run, partial, state[0] if state else None)
            if counts is not None:  # the output part was reported, the prompt was not
                out = max(out, counts[1])
            counts = (inp, out, 0, 0, 0)
            estimated = True
        if abandoned:
            self.abandoned_streams += 1
            note = "stream abandoned before its end"
        else:
            note = f"stream failed: {type(error).__name__}"
        self.tracker.record_llm(
            _str_or_none(model) or (_class_name(run[9]) if run is not None else "unknown"),
            counts[0],
            counts[1],
            cache_read_tokens=counts[2],
            cache_write_tokens=counts[3],
            reasoning_tokens=counts[4],
            provider=_str_or_none(provider),
            latency_ms=(perf_counter() - run[6]) * 1000.0 if run is not None else None,
            cost_usd=None,
            call_id=str(run_id),
            kind=run[8] if run is not None else "chat",
            estimated=estimated,
            session_id=run[4] if run is not None else self.session_id,
            agent_id=run[5] if run is not None else self.agent_id,
            metadata={"stream": "abandoned" if abandoned else "failed", "partial": True},
            tool=run[0] if run is not None else None,
            customer_id=run[10] if run is not None else self.customer_id,
            # The consumer stopping a stream is not a failure of the call.
            ok=abandoned,
            error=note,
        )

    def flush(self, older_than_s: float = 0.0) -> int:
        """Record the streams that started ``older_than_s`` ago or more and never ended.

        A stream whose consumer stopped reading without closing it never fires an
        end or error event. Call this when such streams are known dead (end of a
        request, shutdown); each is recorded with what it received, flagged
        abandoned (and estimated where the provider had not reported usage yet).
        Returns how many were recorded.
        """
        now = perf_counter()
        done = 0
        for run_id in list(self._streams):
            run = self._runs.get(run_id)
            if run is None or now - run[6] < older_than_s:
                continue
            if self._runs.pop(run_id, None) is not None:
                try:
                    self._record_partial(run_id, run, None, abandoned=True)
                    done += 1
                except Exception as exc:
                    swallow(exc, "AgentMeterCallbackHandler.flush")
        return done

    # ----------------------------------------------------------------- tools
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start timing a tool call; check a tool-call budget (may raise)."""
        try:
            name = (
                _str_or_none((serialized or {}).get("name"))
                or _str_or_none(kwargs.get("name"))
                or "tool"
            )
            session, agent = self._who(metadata)
            customer = self._customer(metadata)
            category = ""
            if metadata:
                category = metadata.get("tool_category") or ""
                if category.__class__ is not str:
                    category = str(category)
            if self.enforce_budgets and self._budgets_apply():
                self.tracker.check_budget(kind="tool", call_id=str(run_id), session_id=session)
            # A scope around the tool body: a function in it decorated with
            # @agentmeter.metered_tool records this session / agent too (and the
            # same call id, through the call-id provider), and plain record_llm()
            # calls inside are credited to the tool.
            scope = None
            if tool_run_started(run_id):
                scope = Scope(
                    self.tracker,
                    f"tool:{name}",
                    session,
                    agent,
                    None,
                    None,
                    name,
                    category,
                    customer_id=customer,
                )
                scope.__enter__()
            run = (name, _TOOL, name, session, agent, category, scope, perf_counter(), customer)
            self._track(run_id, run)
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_tool_start")

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the tool call; a ``ToolMessage`` with ``status="error"`` is a failure."""
        run = self._runs.pop(run_id, None)
        try:
            failed = isinstance(output, ToolMessage) and output.status == "error"
            self._tool_done(
                run,
                run_id,
                kwargs.get("name"),
                not failed,
                "ToolMessage(status='error')" if failed else None,
            )
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_tool_end")

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a tool call that raised as failed."""
        run = self._runs.pop(run_id, None)
        try:
            self._tool_done(run, run_id, kwargs.get("name"), False, type(error).__name__)
        except Exception as exc:
            swallow(exc, "AgentMeterCallbackHandler.on_tool_error")

    def _tool_done(
        self, run: _Run | None, run_id: UUID, name: Any, ok: bool, error: str | None
    ) -> None:
        tool_run_ended(run_id)
        if run is not None and run[1] == _TOOL:
            _, _, tool, session, agent, category, scope, t0, customer = run
            try:
                self.tracker.record_tool_call(
                    tool,
                    ok,
                    (perf_counter() - t0) * 1000.0,
                    category=category,
                    call_id=str(run_id),
                    session_id=session,
                    agent_id=agent,
                    error=error,
                    customer_id=customer,
                )
            finally:
                if scope is not None:
                    scope.__exit__(None, None, None)
        else:  # start not seen: count the call, without a duration
            self.tracker.record_tool_call(
                _str_or_none(name) or "tool",
                ok,
                0.0,
                category="",
                call_id=str(run_id),
                session_id=self.session_id,
                agent_id=self.agent_id,
                error=error,
                customer_id=self.customer_id,
            )

    # ------------------------------------------- runs nested below a tool
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Track a chain only when it runs below a tool (to credit LLM calls to the tool)."""
        if parent_run_id is not None:
            parent = self._runs.get(parent_run_id)
            if parent is not None and parent[0] is not None:
                self._track(run_id, (parent[0], _NESTED))

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Forget a nested chain."""
        if self._runs:
            self._runs.pop(run_id, None)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Forget a nested chain."""
        if self._runs:
            self._runs.pop(run_id, None)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Track a retriever below a tool (its LLM calls are the tool's)."""
        self.on_chain_start(serialized, {}, run_id=run_id, parent_run_id=parent_run_id)

    def on_retriever_end(
        self,
        documents: Sequence[Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Forget a nested retriever."""
        if self._runs:
            self._runs.pop(run_id, None)

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Forget a nested retriever."""
        if self._runs:
            self._runs.pop(run_id, None)
