"""``@metered`` and ``@metered_tool`` for sync, async, generator and async-generator functions.

The kind of function is inspected once, at decoration time, and one of four
wrappers is chosen. Generators get a scope that is active only while the
generator's own code runs: between two ``yield`` s, the consumer's records do not
land in the generator's scope.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from . import _validate
from .budget import Budget
from .instrumentation import ToolCall, start_tool
from .scope import _CALL_ID_PROVIDERS as _PROVIDERS
from .scope import STACK, Scope, ambient_call_id

if TYPE_CHECKING:
    from .tracker import Tracker

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["metered", "metered_tool"]


class _Spec:
    """What one decoration asked for; builds a fresh scope per call."""

    __slots__ = (
        "agent_id",
        "budget",
        "category",
        "cost_usd",
        "customer_id",
        "name",
        "session_id",
        "tags",
        "tool",
        "tracker",
    )

    def __init__(
        self,
        tracker: Tracker,
        name: str,
        session_id: str | None,
        agent_id: str | None,
        budget: Budget | None,
        tool: str | None,
        category: str | None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
        cost_usd: Decimal | float | None = None,
    ) -> None:
        self.tracker = tracker
        self.name = name
        self.session_id = session_id
        self.agent_id = agent_id
        self.budget = budget
        self.tool = tool
        self.category = category
        self.customer_id = customer_id
        self.tags = tags
        self.cost_usd = cost_usd

    def scope_factory(self) -> Callable[[], Scope]:
        """What builds the fresh scope of each call: a partial, so that a call of
        the decorated function pays for no Python frame of ours before Scope's own."""
        return functools.partial(
            Scope,
            self.tracker,
            self.name,
            self.session_id,
            self.agent_id,
            self.budget,
            None,
            self.tool,
            self.category,
            self.customer_id,
            self.tags,
        )


# ------------------------------------------------------------------ @metered
def _wrap_scope(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    new_scope = spec.scope_factory()
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            scope = new_scope()
            stack = scope.enter_detached()
            agen = func(*args, **kwargs)
            try:
                async for item in _drive_async(agen, stack):
                    yield item
            except BaseException as exc:
                scope.error = scope.error or type(exc).__name__
                raise
            finally:
                scope.exit()

        return agen_wrapper
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            scope = new_scope()
            stack = scope.enter_detached()
            try:
                return (yield from _drive(func(*args, **kwargs), stack))
            except BaseException as exc:
                scope.error = scope.error or type(exc).__name__
                raise
            finally:
                scope.exit()

        return gen_wrapper
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = new_scope().enter()
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                scope.error = type(exc).__name__
                raise
            finally:
                scope.exit()

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = new_scope().enter()
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            scope.error = type(exc).__name__
            raise
        finally:
            scope.exit()

    return wrapper


def _drive(gen: Generator[Any, Any, Any], stack: tuple[Scope, ...]) -> Generator[Any, Any, Any]:
    """Run ``gen`` with ``stack`` as the scope stack during each of its steps only."""
    send: Any = None
    throw: BaseException | None = None
    while True:
        token = STACK.set(stack)
        try:
            item = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return stop.value
        finally:
            STACK.reset(token)
        throw = None
        try:
            send = yield item
        except GeneratorExit:
            token = STACK.set(stack)
            try:
                gen.close()
            finally:
                STACK.reset(token)
            raise
        except BaseException as exc:
            throw = exc


async def _drive_async(
    agen: AsyncGenerator[Any, Any], stack: tuple[Scope, ...]
) -> AsyncGenerator[Any, Any]:
    """Async twin of :func:`_drive` (``asend``/``athrow`` under the scope stack)."""
    send: Any = None
    throw: BaseException | None = None
    while True:
        token = STACK.set(stack)
        try:
            if throw is not None:
                item = await agen.athrow(throw)
            else:
                item = await agen.asend(send)
        except StopAsyncIteration:
            return
        finally:
            STACK.reset(token)
        throw = None
        try:
            send = yield item
        except GeneratorExit:
            token = STACK.set(stack)
            try:
                await agen.aclose()
            finally:
                STACK.reset(token)
            raise
        except BaseException as exc:
            throw = exc


# ------------------------------------------------------------- @metered_tool
def _start(spec: _Spec) -> ToolCall:
    """One call of a metered tool, in flight: its scope open, a tool call reserved."""
    return start_tool(
        spec.tool or spec.name,
        category=spec.category or "",
        # The framework's id of this tool call, when an integration knows it: the
        # decorator and the framework's own callback then record it once.
        call_id=ambient_call_id() if _PROVIDERS else None,
        scope_name=spec.name,
        budget=spec.budget,
        tracker=spec.tracker,
        session_id=spec.session_id,
        agent_id=spec.agent_id,
        customer_id=spec.customer_id,
        tags=spec.tags,
        cost_usd=spec.cost_usd,
    )


def _start_detached(spec: _Spec) -> tuple[ToolCall, tuple[Scope, ...]]:
    """Start a generator tool's call; its scope is taken off the current stack again
    (the generator's steps run under the returned stack, see :func:`_drive`)."""
    call = _start(spec)
    stack = STACK.get()
    scope = call.scope
    if scope is not None:
        STACK.set(tuple(s for s in stack if s is not scope))
    return call, stack


def _end(call: ToolCall, error: BaseException | None) -> None:
    if error is None:
        call.finish()
    else:
        call.fail(error)


def _wrap_tool(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            call, stack = _start_detached(spec)
            error: BaseException | None = None
            try:
                async for item in _drive_async(func(*args, **kwargs), stack):
                    yield item
            except GeneratorExit:
                raise  # abandoned by the consumer: the tool itself did not fail
            except BaseException as exc:
                error = exc
                raise
            finally:
                token = STACK.set(stack)
                try:
                    _end(call, error)
                finally:
                    STACK.reset(token)

        return agen_wrapper
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            call, stack = _start_detached(spec)
            error: BaseException | None = None
            try:
                return (yield from _drive(func(*args, **kwargs), stack))
            except GeneratorExit:
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                token = STACK.set(stack)
                try:
                    _end(call, error)
                finally:
                    STACK.reset(token)

        return gen_wrapper
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = _start(spec)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                call.fail(exc)
                raise
            call.finish()
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _start(spec)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        call.finish()
        return result

    return wrapper


# ------------------------------------------------------------ the factories
def _check(
    session_id: object, agent_id: object, budget: object, customer_id: object, tags: object
) -> dict[str, str] | None:
    _validate.names(session_id=session_id, agent_id=agent_id, customer_id=customer_id)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget must be an agentmeter.Budget, got {type(budget).__name__}")
    return _validate.tags(tags)


def metered(
    tracker: Tracker,
    func_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    budget: Budget | None = None,
    customer_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """Implementation of :meth:`Tracker.metered <agentmeter.Tracker.metered>`."""
    tags = _check(session_id, agent_id, budget, customer_id, tags)

    def decorate(func: F) -> F:
        label = name or (func_or_name if isinstance(func_or_name, str) else None)
        label = label or getattr(func, "__qualname__", None) or repr(func)
        spec = _Spec(tracker, label, session_id, agent_id, budget, None, None, customer_id, tags)
        return _wrap_scope(func, spec)  # type: ignore[return-value]

    if callable(func_or_name):
        return decorate(func_or_name)
    if func_or_name is not None and not isinstance(func_or_name, str):
        raise TypeError("metered() takes a function or a scope name")
    return decorate


def metered_tool(
    tracker: Tracker,
    func_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    category: str = "",
    session_id: str | None = None,
    agent_id: str | None = None,
    budget: Budget | None = None,
    customer_id: str | None = None,
    tags: dict[str, str] | None = None,
    cost_usd: Decimal | float | None = None,
) -> Any:
    """Implementation of :meth:`Tracker.metered_tool <agentmeter.Tracker.metered_tool>`."""
    tags = _check(session_id, agent_id, budget, customer_id, tags)
    if type(category) is not str:
        raise TypeError("category must be a str")
    _validate.opt_cost_micros("cost_usd", cost_usd)

    def decorate(func: F) -> F:
        label = name or (func_or_name if isinstance(func_or_name, str) else None)
        label = label or getattr(func, "__name__", None) or repr(func)
        spec = _Spec(
            tracker,
            label,
            session_id,
            agent_id,
            budget,
            label,
            category,
            customer_id,
            tags,
            cost_usd,
        )
        return _wrap_tool(func, spec)  # type: ignore[return-value]

    if callable(func_or_name):
        return decorate(func_or_name)
    if func_or_name is not None and not isinstance(func_or_name, str):
        raise TypeError("metered_tool() takes a function or a tool name")
    return decorate
