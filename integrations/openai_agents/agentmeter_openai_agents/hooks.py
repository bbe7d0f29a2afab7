"""``AgentMeterRunHooks``: the SDK's run hooks, metering every model and tool call of a run.

The path of a model call: the SDK awaits ``on_llm_start`` just before it sends the
request -- an :class:`~agentmeter.instrumentation.LLMCall` is started there, which
reserves the budget and raises :class:`~agentmeter.BudgetExceeded` *before* the
request (the SDK lets a hook's exception end the run); ``on_llm_end`` receives the
``ModelResponse`` whose ``usage`` (cached and reasoning tokens included) finishes
the call. Streamed runs fire the same two hooks around ``stream_response``, so a
streamed call is counted once, from the final response's usage.

Tool calls: ``on_tool_start`` starts a :class:`~agentmeter.instrumentation.ToolCall`
(a budget on tool calls stops the tool before it runs), ``on_tool_end`` ends it;
a result the SDK produced from the tool's exception (its default
``failure_error_function`` message, or its timeout message) is a failed call.

Why hooks and not a tracing processor: a processor's exceptions are swallowed by
the SDK (it cannot stop a call) and it sees nothing once tracing is disabled
(``set_tracing_disabled``, common with other providers). Hooks see the agent of
every call, so a hand-off is credited to the agent that ran; an agent used as a
tool runs a nested run whose context is the tool's ``ToolContext``: its model
calls are credited to the inner agent *and* to the tool, and counted once.

The SDK runs each hook in a task of its own (``asyncio.gather``), so nothing set in
a hook's context survives it: calls are kept here, keyed by the run's context
wrapper (model calls of one run are sequential) and by tool call id.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

from agents import Agent, ModelResponse, RunContextWrapper, RunHooks, Tool
from agents.lifecycle import RunHooksBase
from agents.tool import default_tool_error_function
from agents.tool_context import ToolContext

import agentmeter
from agentmeter import instrumentation as ami

from . import _tool_ids
from ._resolve import RunDefaults, context_ids, model_and_provider, output_text, usage_of
from .errors import BudgetExceeded

__all__ = ["AgentMeterRunHooks", "UnreportedUsageWarning"]


class UnreportedUsageWarning(UserWarning):
    """A model response carried no token usage; agentmeter recorded an estimate."""


_warned: set[str] = set()  # models warned about (once each; bounded by the models in use)


def _warn_unreported(model: str) -> None:
    if model in _warned or len(_warned) > 1000:
        return
    _warned.add(model)
    warnings.warn(
        f"agentmeter: a response of {model!r} reported no token usage; the call was recorded "
        "with estimated tokens (estimated=True). A Chat Completions stream reports usage "
        "only when asked: ModelSettings(include_usage=True) on the agent or RunConfig.",
        UnreportedUsageWarning,
        stacklevel=2,
    )


_METERED = frozenset({"on_llm_start", "on_llm_end", "on_tool_start", "on_tool_end"})


def _default_error_prefix() -> str:
    """The start of the message the SDK's default ``failure_error_function`` returns."""
    try:
        return default_tool_error_function(RunContextWrapper(context=None), Exception("")).rstrip()
    except Exception:  # a future SDK with another signature: the message of 0.20-0.24
        return "An error occurred while running the tool. Please try again. Error:"


_ERROR_PREFIXES = (
    _default_error_prefix(),
    "An error occurred while parsing tool arguments.",
)


def _error_of(result: object, tool: Tool) -> str | None:
    """The error a tool result stands for (the SDK turned an exception into it), or None."""
    if not isinstance(result, str):
        return None
    text = result
    if text.startswith(_ERROR_PREFIXES):
        return "ToolError"
    if text.startswith(f"Tool '{tool.name}' timed out after "):
        return "ToolTimeoutError"
    return None


class AgentMeterRunHooks(RunHooks[Any]):
    """Run hooks that meter a run's model and tool calls into an agentmeter tracker.

    Pass them to a run (``Runner.run(agent, input, hooks=AgentMeterRunHooks())``,
    ``run_sync``, ``run_streamed``), or call :func:`agentmeter_openai_agents.instrument`
    once to meter every run. One instance may serve many runs at once.

    Attribution of every call: ``agent`` is the name of the agent that made it;
    ``session_id`` / ``customer_id`` are the ones given here, else the run's context
    (a mapping with the keys ``session_id`` / ``customer_id``, or an object with those
    attributes), else (under ``instrument()``, or in a nested agent-as-tool run) the
    run config's ``trace_metadata`` keys, ``group_id`` or the SDK ``session``'s id,
    else the enclosing ``agentmeter.meter(...)`` scope.

    Args:
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        session_id: Session of every call of the run (default: from the run, see above).
        customer_id: Customer of every call (default: from the run).
        tags: Tags of every call.
        enforce_budgets: Raise ``BudgetExceeded`` before a call that would overspend.
        forward: Your own ``RunHooks``, called after agentmeter's (a run takes one
            ``hooks`` object; this composes them).
    """

    def __init__(
        self,
        tracker: agentmeter.Tracker | None = None,
        *,
        session_id: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
        enforce_budgets: bool = True,
        forward: RunHooksBase[Any, Any] | None = None,
    ) -> None:
        # Checked here, once, with the core's own messages (capture raises on bad input).
        ami.capture(tracker, session_id=session_id, customer_id=customer_id, tags=tags)
        if type(enforce_budgets) is not bool:
            raise TypeError(f"enforce_budgets must be a bool, got {type(enforce_budgets).__name__}")
        if forward is not None and not isinstance(forward, RunHooksBase):
            raise TypeError(f"forward must be RunHooks or None, got {type(forward).__name__}")
        self.tracker = tracker
        self.session_id = session_id
        self.customer_id = customer_id
        self.tags = tags
        self.enforce_budgets = enforce_budgets
        self.forward = forward
        self._defaults = RunDefaults()
        self._run_config: object = None
        self._llm: dict[int, ami.LLMCall] = {}
        self._tools: dict[tuple[int, str], tuple[ami.ToolCall, int | None]] = {}
        self._watched: set[int] = set()
        if forward is not None:
            # Hooks agentmeter does not meter go straight to the user's (also hooks a
            # later SDK adds: every ``on_*`` of the base class).
            for name in dir(RunHooksBase):
                if name.startswith("on_") and name not in _METERED:
                    setattr(self, name, getattr(forward, name))

    def for_run(self, defaults: RunDefaults, run_config: object = None) -> AgentMeterRunHooks:
        """A copy for one run, with what the runner knows of it (used by ``instrument()``)."""
        hooks = AgentMeterRunHooks(
            self.tracker,
            session_id=self.session_id,
            customer_id=self.customer_id,
            tags=self.tags,
            enforce_budgets=self.enforce_budgets,
            forward=self.forward,
        )
        hooks._defaults = defaults
        hooks._run_config = run_config
        return hooks

    # ------------------------------------------------------------------ attribution
    def _ids(self, context: RunContextWrapper[Any]) -> tuple[str | None, str | None]:
        sid, cid = self.session_id, self.customer_id
        if sid is None or cid is None:
            ctx = context_ids(context)
            sid = sid or ctx.session_id or self._defaults.session_id
            cid = cid or ctx.customer_id or self._defaults.customer_id
        return sid, cid

    def _watch(self, context: RunContextWrapper[Any]) -> None:
        """Settle the calls of a run that ended without telling us (a failed model call
        fires no hook): when its context wrapper is freed, what is pending failed."""
        key = id(context)
        if key in self._watched:
            return
        try:
            weakref.finalize(context, self._orphaned, key)
        except TypeError:  # not weak-referenceable: instrument() settles instead
            return
        self._watched.add(key)

    def _orphaned(self, key: int) -> None:
        with ami.guarded("AgentMeterRunHooks.settle"):
            self._watched.discard(key)
            call = self._llm.pop(key, None)
            if call is not None:
                call.fail("run ended before the model call returned")
            for tkey in [k for k in self._tools if k[0] == key]:
                self._end_tool(self._tools.pop(tkey), "run ended before the tool returned")

    def settle(self, error: BaseException | None = None, *, cancelled: bool = False) -> None:
        """End every call still pending on these hooks: failed, or abandoned if cancelled.

        ``instrument()`` calls it when a run ends (on the run's own copy). With hooks of
        your own, a run that raised leaves its model call (or a tool whose exception
        ended the run) pending until the run's context is freed; call this to settle
        it at once -- on hooks that serve that one run only, since it ends every call
        they have in flight.
        """
        with ami.guarded("AgentMeterRunHooks.settle"):
            llm, self._llm = self._llm, {}
            tools, self._tools = self._tools, {}
            for call in llm.values():
                if cancelled:
                    call.abandon("run cancelled before the model call returned", ok=False)
                else:
                    call.fail(error if error is not None else "run ended without a response")
            for entry in tools.values():
                self._end_tool(entry, error or "run ended before the tool returned")

    @staticmethod
    def _end_tool(
        entry: tuple[ami.ToolCall, int | None], error: BaseException | str | None
    ) -> None:
        call, key = entry
        _tool_ids.unbind(key, call.call_id)
        if error is None:
            call.finish(True)
        else:
            call.fail(error)

    # ------------------------------------------------------------------ model calls
    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[Any],
    ) -> None:
        """Start the model call: raises ``BudgetExceeded`` before the request is sent.

        Raises:
            agentmeter_openai_agents.BudgetExceeded: an ``agentmeter.BudgetExceeded``.
        """
        call = None
        with ami.guarded("AgentMeterRunHooks.on_llm_start"):
            sid, cid = self._ids(context)
            run_config = self._run_config
            tool = None
            if isinstance(context, ToolContext):  # a nested run: an agent used as a tool
                tool = context.tool_name
                run_config = context.run_config or run_config
            model, provider = model_and_provider(agent, run_config)
            prompt: list[Any] = list(input_items) if input_items else []
            if system_prompt:
                prompt.insert(0, {"role": "system", "content": system_prompt})
            try:
                call = ami.start_llm(
                    model,
                    provider=provider,
                    prompt=prompt,
                    tracker=self.tracker,
                    session_id=sid,
                    agent_id=agent.name or None,
                    customer_id=cid,
                    tool=tool,
                    tags=self.tags,
                    check_budget=self.enforce_budgets,
                )
            except agentmeter.BudgetExceeded as exc:
                raise BudgetExceeded.of(exc) from None
            stale = self._llm.pop(id(context), None)
            if stale is not None:  # an earlier call of this run never returned
                stale.fail("no response")
            self._llm[id(context)] = call
            self._watch(context)
        if self.forward is not None:
            try:
                await self.forward.on_llm_start(context, agent, system_prompt, input_items)
            except BaseException:
                if call is not None and self._llm.pop(id(context), None) is call:
                    call.cancel()  # the user's hook stopped the call: it was never made
                raise

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        """Finish the model call with the response's usage (estimated if it has none)."""
        with ami.guarded("AgentMeterRunHooks.on_llm_end"):
            call = self._llm.pop(id(context), None)
            if call is not None:
                usage = usage_of(response)
                if usage is None:
                    _warn_unreported(call.model)
                    call.finish(None, output_text=output_text(response))
                else:
                    call.finish(usage)
        if self.forward is not None:
            await self.forward.on_llm_end(context, agent, response)

    # ------------------------------------------------------------------- tool calls
    @staticmethod
    def _tool_key(context: RunContextWrapper[Any], tool: Tool) -> tuple[int, str]:
        call_id = getattr(context, "tool_call_id", None)
        return id(context), call_id if isinstance(call_id, str) else tool.name

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        """Start the tool call: raises ``BudgetExceeded`` before the tool runs."""
        with ami.guarded("AgentMeterRunHooks.on_tool_start"):
            sid, cid = self._ids(context)
            # No scope of its own: the tool body runs in another task than this hook, so
            # a scope opened here would not be current there. LLM calls inside an agent
            # used as a tool are credited to the tool by its nested run (see above).
            try:
                call = ami.start_tool(
                    tool.name,
                    open_scope=False,
                    tracker=self.tracker,
                    session_id=sid,
                    agent_id=agent.name or None,
                    customer_id=cid,
                    tags=self.tags,
                    check_budget=self.enforce_budgets,
                )
            except agentmeter.BudgetExceeded as exc:
                # The SDK would wrap a plain one in UserError (see .errors).
                raise BudgetExceeded.of(exc) from None
            # A @metered_tool inside the tool body records under this same id: once.
            self._tools[self._tool_key(context, tool)] = (call, _tool_ids.bind(call.call_id))
            self._watch(context)  # a tool whose exception ends the run fires no end hook
        if self.forward is not None:
            try:
                await self.forward.on_tool_start(context, agent, tool)
            except BaseException:
                entry = self._tools.pop(self._tool_key(context, tool), None)
                if entry is not None:
                    _tool_ids.unbind(entry[1], entry[0].call_id)
                    entry[0].cancel()
                raise

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        """End the tool call: ok, or failed when the result is the SDK's error message."""
        with ami.guarded("AgentMeterRunHooks.on_tool_end"):
            entry = self._tools.pop(self._tool_key(context, tool), None)
            if entry is not None:
                self._end_tool(entry, _error_of(result, tool))
        if self.forward is not None:
            await self.forward.on_tool_end(context, agent, tool, result)
