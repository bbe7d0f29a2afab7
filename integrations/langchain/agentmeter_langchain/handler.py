"""``AgentMeterCallbackHandler``: meters LangChain / LangGraph runs into an agentmeter tracker.

Built on :mod:`agentmeter.instrumentation`: a model run is an ``LLMCall`` in flight
from its start event to its end or error event, a tool run a ``ToolCall``. One
handler serves any number of concurrent runs (threads and asyncio tasks): the
calls in flight live in ``_runs``, keyed by LangChain's ``run_id`` (its ``int``: a
UUID hashes through a Python ``__hash__``, an int in C), which is also their
``call_id`` -- so a call seen twice (two handlers, or a handler and
``@agentmeter.metered_tool``) counts once, and the reservation made at start is
settled by the record at the end. The map is bounded: runs that never end are
evicted (a stream among them is recorded as abandoned).

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
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

import agentmeter
from agentmeter.instrumentation import (
    LLMCall,
    ToolCall,
    UsageCounts,
    capture,
    from_langchain,
    from_langchain_llm_output,
    from_openai_chat,
    guarded,
    start_llm,
    start_tool,
)

from ._context import ensure_call_id_provider, tool_run_ended, tool_run_started
from ._limits import LIMIT_KEYS as _LIMIT_KEYS
from ._limits import MAX_LIMIT as _MAX_LIMIT
from ._limits import output_limit

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["AgentMeterCallbackHandler", "BudgetNotEnforcedWarning", "UnreportedUsageWarning"]

logger = logging.getLogger("agentmeter.langchain")

# A run is a call in flight, or (a chain / retriever below a tool) that tool's name.
_Run = LLMCall | ToolCall | str
# The run map's key of a run id: LangChain's UUID as its int (hashed in C; the hot
# paths spell this expression inline), anything else as it is.
_RunKey = int | UUID


def _rk(run_id: UUID) -> _RunKey:
    """The key of ``run_id`` in the handler's run maps."""
    return run_id.int if run_id.__class__ is UUID else run_id


def _run_id(key: _RunKey) -> UUID:
    """The run id a run map's key stands for (the inverse of :func:`_rk`)."""
    return UUID(int=key) if isinstance(key, int) else key


# One guard per entry point (stateless, so shared). The hot paths -- a model call's
# start and end -- use try/except, free when nothing is raised, and _swallow.
_G_START = guarded("AgentMeterCallbackHandler.on_llm_start")
_G_TOKEN = guarded("AgentMeterCallbackHandler.on_llm_new_token")
_G_END = guarded("AgentMeterCallbackHandler.on_llm_end")
_G_ERROR = guarded("AgentMeterCallbackHandler.on_llm_error")
_G_FLUSH = guarded("AgentMeterCallbackHandler.flush")
_G_TOOL = guarded("AgentMeterCallbackHandler.on_tool")

# ChatOpenAI with a base_url sends no stream_options: the fix is named for it.
_OPENAI_CLASSES = {"openai": "ChatOpenAI", "azure": "AzureChatOpenAI"}
# The run metadata keys _who reads (without any of them it answers the handler's own).
_WHO_KEYS = frozenset(("session_id", "thread_id", "agent_id", "lc_agent_name", "langgraph_node"))


class UnreportedUsageWarning(UserWarning):
    """A model returned no (or malformed) token usage; agentmeter recorded an estimate."""


class BudgetNotEnforcedWarning(UserWarning):
    """A budget applied to LangChain calls that this handler cannot see, so cannot stop.

    Said once per handler, with the setting that makes the budget enforceable: a
    handler given only to a chat model's constructor (``ChatX(callbacks=[h])``)
    sees that model's runs, never the tool runs of the agent around it, so tool
    budgets (``tool_limits``, ``max_tool_calls``, a budget set on a tool, a priced
    tool under a cost budget) do not stop those tools. The model calls themselves
    are still metered and budgeted.
    """


_UNSEEN_TOOLS = (
    "agentmeter: a budget limits tool calls here, but this AgentMeterCallbackHandler "
    "cannot see the tool runs of the agent or chain around the model (it was given to "
    "the chat model's constructor, ChatX(callbacks=[handler]), so LangChain shows it "
    "only that model's runs): those tool budgets are NOT enforced and tool calls are not "
    "metered. Fix: pass the handler in the run's config, "
    'agent.invoke(inputs, config={"callbacks": [handler]}), or meter every run with '
    "agentmeter_langchain.instrument()."
)


def _swallow(exc: Exception, guard: guarded) -> None:
    """Log and swallow ``exc`` as ``guard`` does (re-raised in strict mode, or a budget's)."""
    with guard:
        raise exc


def _str_or_none(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value or None
    return str(value) or None


def _class_name(serialized: dict[str, Any] | None) -> str:
    """The model's class name from its serialized form (``id[-1]``), or ``"unknown"``."""
    ids = serialized.get("id") if serialized else None
    return str(ids[-1]) if ids else "unknown"


def _text(content: Any) -> str:
    """The text of message content: a string, or the text of its content blocks."""
    if content.__class__ is str:
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        b if isinstance(b, str) else b["text"]
        for b in content
        if isinstance(b, str) or (isinstance(b, dict) and isinstance(b.get("text"), str))
    )


def _output_text(gen: Any) -> str:
    """What a generation carries (text and tool calls), to estimate its tokens."""
    msg = getattr(gen, "message", None)
    if msg is None:
        return getattr(gen, "text", None) or ""
    calls = getattr(msg, "tool_calls", None) or ()
    return _text(msg.content) + "".join(f"{c.get('name', '')}{c.get('args', '')}" for c in calls)


def _reported_cost(token_usage: dict[str, Any]) -> Decimal | None:
    """A charge the provider reported in its usage block (OpenRouter's ``cost``)."""
    counts = from_openai_chat(token_usage)
    return counts.cost_usd if counts is not None else None


def _tool_of(run: _Run | None) -> str | None:
    """The tool a run's child runs are credited to."""
    if run is None or isinstance(run, str):
        return run
    return run.name if isinstance(run, ToolCall) else run.attribution.tool


class AgentMeterCallbackHandler(BaseCallbackHandler):
    """Meter LangChain chat models, LLMs, streams, tools and LangGraph agents.

    Attach it to a run (``config={"callbacks": [handler]}``), to a model or
    agent, or meter every run with :func:`agentmeter_langchain.instrument`.

    What it records, per call (``call_id`` = LangChain ``run_id``):

    - LLM / chat model calls: tokens from ``AIMessage.usage_metadata`` (cache read /
      write and reasoning details included), else ``llm_output["token_usage"]``,
      else an estimate flagged ``estimated=True``. Malformed values (negative, NaN,
      not a number) are ignored, the wholes among them estimated and flagged, and
      named in the event metadata ``usage_malformed``. Model and provider from
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
    # LangChain reads these on every event (BaseCallbackHandler has them as
    # properties, a Python call each); plain class attributes answer in C.
    ignore_llm: bool = False
    ignore_chat_model: bool = False

    def __init__(
        self,
        tracker: agentmeter.Tracker | None = None,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        enforce_budgets: bool = True,
        max_runs: int = 10_000,
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
        self._runs: dict[_RunKey, _Run] = {}
        self._warned: set[tuple[str, bool]] = set()
        # Chain runs in progress, only while it is undecided whether this handler
        # sees the runs around its model runs (see _unseen_parent); then emptied.
        self._chains: dict[_RunKey, None] = {}
        self._parents_seen: bool | None = None  # None: undecided
        self.abandoned_streams = 0
        """Streams recorded as abandoned (consumer stopped, or never finished)."""
        self.unreported_usage_calls = 0
        """Calls whose usage the provider did not report validly (recorded as estimates)."""
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
                v = md.get("session_id")
                session = None if v is None else _str_or_none(v)
                if session is None:
                    implicit_session = md.get("thread_id")
            if agent is None:
                v = md.get("agent_id") or md.get("lc_agent_name")
                agent = None if v is None else _str_or_none(v)
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

    # ---------------------------------------------------------------- run map
    def _track(self, key: _RunKey, run: _Run) -> None:
        runs = self._runs
        runs[key] = run
        while len(runs) > self.max_runs:
            try:
                old_id = next(iter(runs))
                old = runs.pop(old_id)
            except (StopIteration, RuntimeError, KeyError):  # changed by another thread
                return
            if isinstance(old, LLMCall) and old.chunks:  # a stream nobody finished
                self.abandoned_streams += 1
                old.abandon()
            elif isinstance(old, ToolCall):
                tool_run_ended(_run_id(old_id))

    def _orphan(self, run_id: UUID, kind: str = "chat") -> LLMCall:
        """A call whose start this handler did not see (added mid-run, or evicted)."""
        return start_llm(
            "unknown",
            kind=kind,
            call_id=run_id,
            tracker=self.tracker,
            session_id=self.session_id,
            agent_id=self.agent_id,
            customer_id=self.customer_id,
            check_budget=False,
        )

    # -------------------------------------------------------------- LLM start
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        _completion: Sequence[str] | None = None,
        # Named, though unused, because LangChain passes them on every call: a
        # keyword that lands in **kwargs costs ~65 ns to collect, a named one ~0.
        tags: list[str] | None = None,
        options: dict[str, Any] | None = None,
        name: str | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Start the call in flight: model, attribution, budget check (may raise)."""
        # One body for chat and completion models (on_llm_start passes its prompts
        # as _completion), in this frame: no second call on every model call's start.
        try:
            if _completion is None:
                prompt: Sequence[Any] = messages[0] if messages else ()
                kind = "chat"
            else:
                prompt, kind = _completion, "completion"
            md, params = metadata, invocation_params
            model = provider = limit = None
            if md:
                model = md.get("ls_model_name")
                provider = md.get("ls_provider")
                limit = md.get("ls_max_tokens")
            if model is None and params:
                model = params.get("model") or params.get("model_name")
            if model.__class__ is not str or not model:
                model = _str_or_none(model) or _class_name(serialized)
            if provider.__class__ is not str or not provider:
                provider = _str_or_none(provider)
            if (
                md
                and (self.session_id is None or self.agent_id is None)
                # In C, and most runs carry none of them. set.isdisjoint(dict) walks the
                # dict's few keys; md.keys().isdisjoint(set) walked the set's whole table.
                and not _WHO_KEYS.isdisjoint(md)
            ):
                session, agent = self._who(md)
            else:
                session, agent = self.session_id, self.agent_id
            customer = self.customer_id
            if customer is None and md:
                customer = md.get("customer_id")  # as self._customer(md)
                if customer is not None:
                    customer = _str_or_none(customer)
            # The request's output limit: a hard cap reserves the call's worst case. The
            # usual answers (LangChain's ls_max_tokens, or no limit at all) in C.
            if not self.enforce_budgets:
                limit = None
            elif limit.__class__ is not int or not 0 < limit <= _MAX_LIMIT:
                limit = (
                    output_limit(None, params)
                    if params and not params.keys().isdisjoint(_LIMIT_KEYS)
                    else None
                )
            runs = self._runs
            tool = None
            if parent_run_id is not None:
                pk = parent_run_id.int if parent_run_id.__class__ is UUID else parent_run_id
                parent = runs.get(pk)
                if parent is not None:
                    tool = _tool_of(parent)
                elif self._parents_seen is None:  # undecided: is this handler on the whole tree?
                    if pk in self._chains:
                        self._decided(True)
                    else:
                        self._unseen_parent(session, agent, customer)
            call = start_llm(
                model,
                provider=provider,
                kind=kind,
                call_id=run_id,
                prompt=prompt,
                tracker=self.tracker,
                session_id=session,
                agent_id=agent,
                customer_id=customer,
                tool=tool,
                check_budget=self.enforce_budgets,  # reserves only where a budget applies
                max_output_tokens=limit,
            )
            key = run_id.int if run_id.__class__ is UUID else run_id  # _rk(run_id), inline
            runs[key] = call
            if len(runs) > self.max_runs:
                self._track(key, call)  # evicts
        except Exception as exc:
            _swallow(exc, _G_START)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        tags: list[str] | None = None,  # named for speed, as on_chat_model_start's
        options: dict[str, Any] | None = None,
        name: str | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Completion-model twin of :meth:`on_chat_model_start`."""
        self.on_chat_model_start(
            serialized,
            [],
            run_id=run_id,
            parent_run_id=parent_run_id,
            metadata=metadata,
            invocation_params=invocation_params,
            _completion=prompts,
        )

    def _unseen_parent(self, session: str | None, agent: str | None, customer: str | None) -> None:
        """A model run below a run this handler never saw: say once if tool budgets go unseen.

        A handler in the run's config (or ``instrument()``'s) sees every run of the
        tree, so a model run's parent -- a chain, an agent node -- started through it
        first. When it did not, the handler only hangs on the model (constructor
        callbacks) and the agent's tool runs never reach it. Decided once: after the
        first such run the handler stops tracking chains.
        """
        with _G_START:
            if not self.enforce_budgets:
                self._decided(False)
                return
            attribution = capture(
                self.tracker, session_id=session, agent_id=agent, customer_id=customer
            )
            if attribution.tools_budgeted:
                self._decided(False)
                logger.warning(_UNSEEN_TOOLS)
                warnings.warn(_UNSEEN_TOOLS, BudgetNotEnforcedWarning, stacklevel=4)

    def _decided(self, seen: bool) -> None:
        self._parents_seen = seen
        self._chains.clear()

    # ------------------------------------------------------------- streaming
    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,  # named for speed, as on_chat_model_start's
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Count what a stream received so far (for a stream that is never finished)."""
        call = self._runs.get(run_id.int if run_id.__class__ is UUID else run_id)
        if isinstance(call, LLMCall):
            with _G_TOKEN:
                um = getattr(getattr(chunk, "message", None), "usage_metadata", None)
                call.add_chunk(_text(token), from_langchain(um) if um else None)

    # --------------------------------------------------------------- LLM end
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,  # named for speed, as on_chat_model_start's
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish the call with the usage the response reports (or an estimate)."""
        call = self._runs.pop(run_id.int if run_id.__class__ is UUID else run_id, None)
        try:
            gens = response.generations
            gen = gens[0][0] if gens and gens[0] else None
            msg = getattr(gen, "message", None)
            if not isinstance(call, LLMCall):
                call = self._orphan(run_id, "chat" if msg is not None else "completion")
            model = provider = cost = usage = None
            if msg is not None:
                rm = msg.response_metadata
                if rm:
                    model = rm.get("model_name") or rm.get("model")
                    if call.provider is None:
                        provider = rm.get("model_provider")
                    tu = rm.get("token_usage")
                    if tu.__class__ is dict and "cost" in tu:  # OpenRouter's own charge
                        cost = _reported_cost(tu)
                um = msg.usage_metadata
                if um:
                    usage = from_langchain(um)
            if usage is None and response.llm_output:
                usage = from_langchain_llm_output(response.llm_output)
                model = model or response.llm_output.get("model_name")
            metadata = output_text = None
            if (
                usage is None
                or not (usage.reported_input and usage.reported_output)
                or usage.malformed
            ):
                metadata = self._unreported(call, gen, usage)
                # A stream's text was counted chunk by chunk (add_chunk) already.
                if not call.chunks and (usage is None or not usage.reported_output):
                    output_text = _output_text(gen)
            if model is not None and model.__class__ is not str:
                model = _str_or_none(model)
            if metadata is None and provider is None and cost is None and output_text is None:
                call.finish(usage, model=model or None)  # the usual case, fewer arguments
            else:
                call.finish(
                    usage,
                    output_text=output_text,
                    model=model or None,
                    provider=_str_or_none(provider),
                    cost_usd=cost,
                    metadata=metadata,
                )
        except Exception as exc:
            _swallow(exc, _G_END)

    def _unreported(
        self, call: LLMCall, gen: Any, usage: UsageCounts | None
    ) -> dict[str, Any] | None:
        """Count a call without (valid) usage and warn once per model with the fix.

        Returns the event metadata naming the malformed fields, if there are any.
        """
        if usage is None or not usage.fully_reported:
            self.unreported_usage_calls += 1
        bad = usage.malformed if usage is not None else ()
        metadata = {"usage_malformed": ",".join(bad)} if bad else None
        if (call.model, bool(bad)) in self._warned:
            return metadata
        self._warned.add((call.model, bool(bad)))
        streamed = isinstance(gen, ChatGenerationChunk | GenerationChunk)
        cls = _OPENAI_CLASSES.get(call.provider or "")
        if bad:
            msg = (
                f"agentmeter: model {call.model!r} reported malformed token usage "
                f"({', '.join(bad)}); "
                "those values were ignored, and a whole input or output count among them "
                "was estimated (recorded with estimated=True)."
            )
        else:
            if streamed and cls:
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
                f"agentmeter: {'the stream of ' if streamed else ''}model {call.model!r} "
                "reported no token usage; its tokens were estimated (recorded with "
                f"estimated=True). Fix: {fix}."
            )
        logger.warning(msg)
        warnings.warn(msg, UnreportedUsageWarning, stacklevel=3)
        return metadata

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a failed call; an abandoned or broken stream with what it received."""
        call = self._runs.pop(_rk(run_id), None)
        with _G_ERROR:
            if not isinstance(call, LLMCall):
                call = None
            response = kwargs.get("response")
            partial = None
            if isinstance(response, LLMResult) and response.generations:
                first = response.generations[0]
                if first and isinstance(first[0], ChatGenerationChunk | GenerationChunk):
                    partial = first[0]
            abandoned = isinstance(error, GeneratorExit)
            if partial is None and not abandoned and (call is None or not call.chunks):
                # A request that failed is not billed by the provider: no tokens.
                (call or self._orphan(run_id)).fail(error)
                return
            call = call or self._orphan(run_id)
            msg = getattr(partial, "message", None)
            usage = None
            if msg is not None:
                rm = msg.response_metadata
                if rm:
                    call.model = _str_or_none(rm.get("model_name")) or call.model
                    call.provider = call.provider or _str_or_none(rm.get("model_provider"))
                if msg.usage_metadata:
                    usage = from_langchain(msg.usage_metadata)
            if not call.chunks and partial is not None:
                call.add_chunk(_output_text(partial))  # chunks this handler did not see
            if abandoned:
                self.abandoned_streams += 1
                call.abandon(usage=usage)
            else:
                call.abandon(f"stream failed: {type(error).__name__}", usage=usage, ok=False)

    def flush(self, older_than_s: float = 0.0) -> int:
        """Record the streams that started ``older_than_s`` ago or more and never ended.

        A stream whose consumer stopped reading without closing it never fires an
        end or error event. Call this when such streams are known dead (end of a
        request, shutdown); each is recorded with what it received, flagged
        abandoned (and estimated where the provider had not reported usage yet).
        Returns how many were recorded.
        """
        done = 0
        for key, call in list(self._runs.items()):
            if not isinstance(call, LLMCall) or not call.chunks:
                continue
            if call.elapsed_ms() < older_than_s * 1000.0:
                continue
            if self._runs.pop(key, None) is not None:
                with _G_FLUSH:
                    self.abandoned_streams += 1
                    done += call.abandon()
        return done

    # ----------------------------------------------------------------- tools
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start the tool call in flight; check a tool-call budget (may raise)."""
        with _G_TOOL:
            name = (
                _str_or_none((serialized or {}).get("name"))
                or _str_or_none(kwargs.get("name"))
                or "tool"
            )
            session, agent = self._who(metadata)
            category = (metadata.get("tool_category") or "") if metadata else ""
            # A scope around the tool body, opened by the first handler that sees
            # the run (so scopes still nest): a function in it decorated with
            # @agentmeter.metered_tool records the same call (the call-id provider
            # gives it this run id), and LLM calls inside are credited to the tool.
            opens = tool_run_started(run_id)
            try:
                call = start_tool(
                    name,
                    category=category if category.__class__ is str else str(category),
                    call_id=run_id,
                    open_scope=opens,
                    tracker=self.tracker,
                    session_id=session,
                    agent_id=agent,
                    customer_id=self._customer(metadata),
                    check_budget=self.enforce_budgets,
                )
            except BaseException:
                if opens:
                    tool_run_ended(run_id)
                raise
            self._track(_rk(run_id), call)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record the tool call; a ``ToolMessage`` with ``status="error"`` is a failure."""
        call = self._runs.pop(_rk(run_id), None)
        with _G_TOOL:
            if isinstance(output, ToolMessage) and output.status == "error":
                self._tool(call, run_id, kwargs).fail("ToolMessage(status='error')")
            else:
                self._tool(call, run_id, kwargs).finish()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a tool call that raised as failed."""
        call = self._runs.pop(_rk(run_id), None)
        with _G_TOOL:
            self._tool(call, run_id, kwargs).fail(error)

    def _tool(self, call: _Run | None, run_id: UUID, kwargs: dict[str, Any]) -> ToolCall:
        tool_run_ended(run_id)
        if isinstance(call, ToolCall):
            return call
        return start_tool(  # start not seen: count the call, without a duration
            _str_or_none(kwargs.get("name")) or "tool",
            call_id=run_id,
            open_scope=False,
            tracker=self.tracker,
            session_id=self.session_id,
            agent_id=self.agent_id,
            customer_id=self.customer_id,
            check_budget=False,
        )

    # ------------------------------------------- runs nested below a tool
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Track a chain only when it runs below a tool (to credit LLM calls to the tool)."""
        key = run_id.int if run_id.__class__ is UUID else run_id  # _rk(run_id), inline
        if parent_run_id is not None:
            pk = parent_run_id.int if parent_run_id.__class__ is UUID else parent_run_id
            tool = _tool_of(self._runs.get(pk))
            if tool is not None:
                self._track(key, tool)
        if self._parents_seen is None:  # until decided: which runs a model's parent may be
            chains = self._chains
            chains[key] = None
            if len(chains) > self.max_runs:
                self._decided(True)  # thousands of chains seen: this handler sees the tree

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Track a retriever below a tool (its LLM calls are the tool's)."""
        self.on_chain_start(serialized, {}, run_id=run_id, parent_run_id=parent_run_id)

    def on_chain_end(self, outputs: dict[str, Any], *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a nested chain."""
        key = run_id.int if run_id.__class__ is UUID else run_id  # _rk(run_id), inline
        self._runs.pop(key, None)
        self._chains.pop(key, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a nested chain."""
        key = run_id.int if run_id.__class__ is UUID else run_id  # _rk(run_id), inline
        self._runs.pop(key, None)
        self._chains.pop(key, None)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a nested retriever."""
        key = run_id.int if run_id.__class__ is UUID else run_id  # _rk(run_id), inline
        self._runs.pop(key, None)
        self._chains.pop(key, None)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a nested retriever."""
        key = run_id.int if run_id.__class__ is UUID else run_id  # _rk(run_id), inline
        self._runs.pop(key, None)
        self._chains.pop(key, None)
