"""``instrument()`` / ``uninstrument()``: meter every run of the process, no hooks to pass.

The SDK sends ``Runner.run`` / ``run_sync`` / ``run_streamed`` to its default
``AgentRunner`` (``agents.run.set_default_agent_runner``, the seam durable-execution
integrations use too). ``instrument()`` installs a runner that adds
:class:`AgentMeterRunHooks` to each run -- composed with the run's own ``hooks``,
never doubling hooks that are already agentmeter's -- and passes everything else to
the runner that was the default before. Knowing the run, it also gives the hooks the
run's ``RunConfig`` (``group_id``, ``trace_metadata``, ``model``) and SDK ``session``,
and settles a run's pending calls when the run ends: a model call that raised, a
streamed run that was cancelled.

A run started inside another (an agent used as a tool) inherits the outer run's
session and customer through a ``ContextVar``: the tool body runs in a task created
inside the outer run, which copies it.
"""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar
from typing import Any

from agents import RunResult, RunResultStreaming
from agents.lifecycle import RunHooksBase
from agents.run import AgentRunner, get_default_agent_runner, set_default_agent_runner

import agentmeter
from agentmeter import instrumentation as ami

from ._resolve import RunDefaults, config_ids
from .hooks import AgentMeterRunHooks

__all__ = ["instrument", "instrumented_hooks", "uninstrument"]

# The outer run's session / customer, for runs started inside it (agents as tools).
_OUTER: ContextVar[RunDefaults | None] = ContextVar("agentmeter_openai_agents_run", default=None)


class _MeteredRunner(AgentRunner):
    """The default runner while instrumented: adds agentmeter's hooks to every run."""

    def __init__(self, inner: AgentRunner, hooks: AgentMeterRunHooks) -> None:
        super().__init__()
        self.inner = inner
        self.hooks = hooks

    def _prepare(self, kwargs: dict[str, Any]) -> tuple[AgentMeterRunHooks | None, RunDefaults]:
        """Put a per-run ``AgentMeterRunHooks`` into ``kwargs['hooks']`` (composed)."""
        hooks: AgentMeterRunHooks | None = None
        defaults = RunDefaults()
        with ami.guarded("instrument.run"):
            outer = _OUTER.get()
            d = config_ids(kwargs.get("run_config"), kwargs.get("session"))
            defaults = RunDefaults(
                d.session_id or (outer.session_id if outer else None),
                d.customer_id or (outer.customer_id if outer else None),
            )
            user = kwargs.get("hooks")
            base = self.hooks
            if isinstance(user, AgentMeterRunHooks):
                base, user = user, None  # the run's own agentmeter hooks: use those, once
            if user is not None and not isinstance(user, RunHooksBase):
                user = None  # the SDK rejects it with its own error below
                hooks = None
            else:
                if user is not None:
                    base = AgentMeterRunHooks(
                        base.tracker,
                        session_id=base.session_id,
                        customer_id=base.customer_id,
                        tags=base.tags,
                        enforce_budgets=base.enforce_budgets,
                        forward=user,
                    )
                hooks = base.for_run(defaults, kwargs.get("run_config"))
                kwargs["hooks"] = hooks
        return hooks, defaults

    async def run(self, starting_agent: Any, input: Any, **kwargs: Any) -> RunResult:
        hooks, defaults = self._prepare(kwargs)
        token = _OUTER.set(defaults)
        try:
            result = await self.inner.run(starting_agent, input, **kwargs)
        except BaseException as exc:
            if hooks is not None:
                hooks.settle(exc, cancelled=isinstance(exc, asyncio.CancelledError))
            raise
        finally:
            _OUTER.reset(token)
        if hooks is not None:
            hooks.settle()
        return result

    def run_streamed(self, starting_agent: Any, input: Any, **kwargs: Any) -> RunResultStreaming:
        hooks, defaults = self._prepare(kwargs)
        token = _OUTER.set(defaults)  # copied by the run's task, created in there
        try:
            result = self.inner.run_streamed(starting_agent, input, **kwargs)
        except BaseException as exc:
            if hooks is not None:
                hooks.settle(exc)
            raise
        finally:
            _OUTER.reset(token)
        if hooks is not None:
            with ami.guarded("instrument.run_streamed"):
                task = result.run_loop_task
                if task is not None:
                    task.add_done_callback(lambda t: _settle_task(hooks, t))
        return result


def _settle_task(hooks: AgentMeterRunHooks, task: Any) -> None:
    if task.cancelled():
        hooks.settle(cancelled=True)
        return
    hooks.settle(task.exception())


_lock = threading.Lock()
_installed: _MeteredRunner | None = None


def instrument(
    tracker: agentmeter.Tracker | None = None,
    *,
    session_id: str | None = None,
    customer_id: str | None = None,
    tags: dict[str, str] | None = None,
    enforce_budgets: bool = True,
) -> AgentMeterRunHooks:
    """Meter every ``Runner.run`` / ``run_sync`` / ``run_streamed`` of this process.

    Idempotent: calling it again replaces the settings (e.g. the tracker), never
    stacks a second runner. A run that passes ``hooks=AgentMeterRunHooks(...)``
    itself is metered by those, once.

    Args:
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        session_id: Session of every call (default: from each run, see
            :class:`AgentMeterRunHooks`).
        customer_id: Customer of every call (default: from each run).
        tags: Tags of every call.
        enforce_budgets: Raise ``BudgetExceeded`` before a call that would overspend.

    Returns:
        The hooks (a template: each run gets a copy of its own).
    """
    global _installed
    hooks = AgentMeterRunHooks(
        tracker,
        session_id=session_id,
        customer_id=customer_id,
        tags=tags,
        enforce_budgets=enforce_budgets,
    )
    with _lock:
        if _installed is not None and get_default_agent_runner() is _installed:
            _installed.hooks = hooks
        else:
            _installed = _MeteredRunner(get_default_agent_runner(), hooks)
            set_default_agent_runner(_installed)
    return hooks


def uninstrument() -> None:
    """Give the SDK its previous default runner back (idempotent)."""
    global _installed
    with _lock:
        if _installed is not None and get_default_agent_runner() is _installed:
            set_default_agent_runner(_installed.inner)
        _installed = None


def instrumented_hooks() -> AgentMeterRunHooks | None:
    """The hooks :func:`instrument` installed, or ``None`` when not instrumented."""
    runner = _installed
    return runner.hooks if runner is not None else None
