"""``AgentMeter``: the pydantic-ai capability that meters an agent's runs.

pydantic-ai 2.x extends agents with *capabilities* (``Agent(capabilities=[...])``
for every run, ``agent.run(..., capabilities=[...])`` for one). ``AgentMeter``
uses three of their hooks:

- the first hook of a run resolves who the run is billed to -- the agent
  (``agent.name``), the session and customer (given, or read from the run: see
  :class:`AgentMeter`) -- and keeps it by run id. Not ``for_run``: a capability that
  returns a copy there makes pydantic-ai re-extract the agent's configuration on every
  run (~0.5 ms of CPU per run measured here, more than all the metering);
- ``before_model_request``: hands the request to a :class:`~.model.MeteredModel`
  around the run's model, so each request to the provider is metered and its
  budget checked *before* it is sent, streamed or not;
- ``before_tool_execute`` / ``wrap_tool_execute``: each execution of a function
  tool is an ``agentmeter.instrumentation.ToolCall`` -- its duration, success, a
  ``ModelRetry`` (recorded as a failed attempt, ``error="ModelRetry"``, each
  attempt once), an exception; a tool call budget is checked before the tool runs.
  What runs inside the tool (another agent's requests) is credited to the tool.

Two ``AgentMeter`` on one run (one on the agent, one given to the run) count each
request and tool call once; the run's values win.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import ValidatedToolArgs, WrapToolExecuteHandler
from pydantic_ai.exceptions import (
    ApprovalRequired,
    CallDeferred,
    ModelRetry,
    SkipToolExecution,
    ToolRetryError,
)
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.tools import RunContext, ToolDefinition

from agentmeter import Tracker
from agentmeter import instrumentation as ami

from .model import MeteredModel, Who, check_who

__all__ = ["AgentMeter"]

_G_RUN = ami.guarded("AgentMeter.resolve")
_G_REQUEST = ami.guarded("AgentMeter.before_model_request")
_G_TOOL = ami.guarded("AgentMeter.tool")

_NOT_CALLS = (SkipToolExecution, CallDeferred, ApprovalRequired)  # the tool did not run
_RETRIES = (ModelRetry, ToolRetryError)


@dataclass(eq=False)
class _ToolPending:
    """One tool execution, between ``before_tool_execute`` and its ``wrap_tool_execute``."""

    key: tuple[str | None, str]
    who: Who
    started: bool = False


_RUNS_KEPT = 1024  # runs remembered at once (more concurrent runs only resolve again)


@dataclass(eq=False)
class _Run:
    """What a capability keeps of one run: who it bills, the metered model it last built
    (a run asks the same model again and again; a metered model holds nothing else)."""

    who: Who
    model: Any = None
    metered: MeteredModel | None = None


# The tool execution about to run in this task: every AgentMeter of the run adds its
# attribution in before_tool_execute (outer first), the outermost wrap meters it once.
_TOOL: ContextVar[_ToolPending | None] = ContextVar("agentmeter_pydantic_ai.tool", default=None)

# The id of the tool call running in this context, so that ``@agentmeter.metered_tool``
# on the tool's function records the same call (once) instead of a second one.
_CALL_ID: ContextVar[str | None] = ContextVar("agentmeter_pydantic_ai.call_id", default=None)
ami.register_call_id_provider(_CALL_ID.get)


def _from_deps(deps: object, name: str) -> str | None:
    """``deps.<name>`` or ``deps["<name>"]`` when it is a non-empty str."""
    if deps is None:
        return None
    try:
        value = deps.get(name) if isinstance(deps, Mapping) else getattr(deps, name, None)
    except Exception:
        return None
    return value if isinstance(value, str) and value else None


@dataclass(kw_only=True)
class AgentMeter(AbstractCapability[Any]):
    """Meter a pydantic-ai agent's model requests and tool calls into agentmeter.

    ::

        agent = Agent("openai:gpt-4o", capabilities=[AgentMeter()])
        await agent.run("...", deps=deps)            # deps.session_id, deps.customer_id
        await agent.run("...", capabilities=[AgentMeter(session_id="s1")])  # one run

    Attribution of a run, first found wins: the value given here; the
    ``session_from`` / ``customer_from`` function of the ``RunContext``; the run's
    ``deps.session_id`` / ``deps.customer_id`` (an attribute, or a key of a mapping);
    the run's ``metadata`` (``agent.run(..., metadata={"session_id": ...})``); else the
    enclosing ``agentmeter.meter(session_id=..., customer_id=...)`` scope.
    The agent is ``agent_id`` if given, else the running agent's ``name``.

    Args:
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        session_id, customer_id, agent_id: Fixed attribution.
        tags: ``{str: str}`` labels stored with every record.
        session_from, customer_from: ``f(ctx: RunContext) -> str | None``, called once per run.
        tools: Meter tool calls too (default True).

    Raises:
        TypeError, ValueError: on bad arguments, naming the argument.
    """

    tracker: Tracker | None = None
    session_id: str | None = None
    customer_id: str | None = None
    agent_id: str | None = None
    tags: dict[str, str] | None = None
    session_from: Callable[[RunContext[Any]], str | None] | None = None
    customer_from: Callable[[RunContext[Any]], str | None] | None = None
    tools: bool = True
    # The runs seen lately, by run id (bounded: a run that ended is simply forgotten).
    _runs: dict[str, _Run] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_who(Who(self.tracker, self.session_id, self.agent_id, self.customer_id, self.tags))
        for name in ("session_from", "customer_from"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a callable, got {type(fn).__name__}")
        if self.tools is not True and self.tools is not False:
            raise TypeError(f"tools must be a bool, got {type(self.tools).__name__}")

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None  # holds a tracker and functions: not built from an agent spec

    # ------------------------------------------------------------ attribution
    def _resolve(self, ctx: RunContext[Any]) -> Who:
        """Who this run is billed to (see the class docstring); never raises."""
        session, customer, agent = self.session_id, self.customer_id, self.agent_id
        with _G_RUN:
            if session is None and self.session_from is not None:
                session = self.session_from(ctx)
            if customer is None and self.customer_from is not None:
                customer = self.customer_from(ctx)
            deps, metadata = ctx.deps, ctx.metadata
            if session is None:
                session = _from_deps(deps, "session_id") or _from_deps(metadata, "session_id")
            if customer is None:
                customer = _from_deps(deps, "customer_id") or _from_deps(metadata, "customer_id")
            if agent is None and ctx.agent is not None:
                name = ctx.agent.name
                agent = name if isinstance(name, str) and name else None
            who = Who(self.tracker, session, agent, customer, self.tags)
            check_who(who)  # a bad id from the run: logged, and the run left unattributed
            return who
        return Who(self.tracker, self.session_id, self.agent_id, self.customer_id, self.tags)

    def _run(self, ctx: RunContext[Any]) -> _Run:
        """This run's state: its attribution, resolved once per run id."""
        run_id = ctx.run_id
        runs = self._runs
        run = runs.get(run_id) if run_id is not None else None
        if run is None:
            run = _Run(self._resolve(ctx))
            if run_id is not None:
                if len(runs) >= _RUNS_KEPT:
                    with contextlib.suppress(Exception):  # another thread evicted it first
                        del runs[next(iter(runs))]
                runs[run_id] = run
        return run

    # ----------------------------------------------------------- model requests
    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        with _G_REQUEST:
            model = request_context.model
            run = self._run(ctx)
            if run.model is model and run.metered is not None:
                request_context.model = run.metered  # the run asks the same model again
                return request_context
            if isinstance(model, MeteredModel):  # metered() already, or another AgentMeter
                metered_model = model.bound(run.who)
            else:
                metered_model = MeteredModel.around(model, run.who)
            run.model, run.metered = model, metered_model
            request_context.model = metered_model
        return request_context

    # --------------------------------------------------------------- tool calls
    async def before_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
    ) -> ValidatedToolArgs:
        if not self.tools:
            return args
        with _G_TOOL:
            who = self._run(ctx).who
            key = (ctx.run_id, call.tool_call_id)
            pending = _TOOL.get()
            if pending is not None and pending.key == key and not pending.started:
                pending.who = pending.who.over(who)  # an inner AgentMeter: its values win
            else:
                _TOOL.set(_ToolPending(key, who))
        return args

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        pending = _TOOL.get()
        key = (ctx.run_id, call.tool_call_id)
        if not self.tools or (pending is not None and pending.key == key and pending.started):
            return await handler(args)  # metered by an outer AgentMeter
        who = pending.who if pending is not None and pending.key == key else self._run(ctx).who
        if pending is not None and pending.key == key:
            pending.started = True
        tool: ami.ToolCall | None = None
        with _G_TOOL:  # BudgetExceeded propagates: the tool does not run
            tool = ami.start_tool(
                tool_def.name,
                # One id per attempt: a retried call keeps its tool_call_id.
                call_id=f"{ctx.run_id}:{call.tool_call_id}:{ctx.retry}",
                tracker=who.tracker,
                session_id=who.session_id,
                agent_id=who.agent_id,
                customer_id=who.customer_id,
                tags=who.tags,
            )
        if tool is None:
            return await handler(args)
        call_token = _CALL_ID.set(tool.call_id)
        try:
            result = await handler(args)
        except _NOT_CALLS:
            with _G_TOOL:
                tool.cancel()
            raise
        except _RETRIES as exc:
            with _G_TOOL:
                tool.finish(False, "ModelRetry", exc=exc)
            raise
        except BaseException as exc:
            with _G_TOOL:
                tool.fail(exc)
            raise
        finally:
            _CALL_ID.reset(call_token)
        with _G_TOOL:
            tool.finish()
        return result
