"""``@metered`` and ``@metered_tool`` for sync, async, generator and async-generator functions.

The kind of function is inspected once, at decoration time, and one of four
wrappers is chosen. Generators get a scope that is active only while the
generator's own code runs: between two ``yield`` s, the consumer's records do not
land in the generator's scope.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from . import _validate
from .budget import Budget
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

    def scope(self) -> Scope:
        return Scope(
            self.tracker,
            self.name,
            self.session_id,
            self.agent_id,
            self.budget,
            None,
            self.tool,
            self.category,
            customer_id=self.customer_id,
            tags=self.tags,
        )


# ------------------------------------------------------------------ @metered
def _wrap_scope(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            scope = spec.scope()
            scope._enter()
            stack = STACK.get()
            STACK.reset(scope._token)  # type: ignore[arg-type]
            scope._token = None
            agen = func(*args, **kwargs)
            try:
                async for item in _drive_async(agen, stack):
                    yield item
            except BaseException as exc:
                scope.error = scope.error or type(exc).__name__
                raise
            finally:
                scope._exit()

        return agen_wrapper
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            scope = spec.scope()
            scope._enter()
            stack = STACK.get()
            STACK.reset(scope._token)  # type: ignore[arg-type]
            scope._token = None
            try:
                return (yield from _drive(func(*args, **kwargs), stack))
            except BaseException as exc:
                scope.error = scope.error or type(exc).__name__
                raise
            finally:
                scope._exit()

        return gen_wrapper
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = spec.scope()
            scope._enter()
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                scope.error = type(exc).__name__
                raise
            finally:
                scope._exit()

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = spec.scope()
        scope._enter()
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            scope.error = type(exc).__name__
            raise
        finally:
            scope._exit()

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
class _ToolCall:
    """One running call of a metered tool: its scope, id, clock and reservation."""

    __slots__ = ("call_id", "scope", "spec", "t0")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.scope = spec.scope()
        self.scope._enter()
        self.call_id = ambient_call_id() if _PROVIDERS else None
        tracker = spec.tracker
        try:
            if self.scope.budget_refs or tracker._budgets.active:
                if self.call_id is None:
                    self.call_id = tracker.new_call_id()
                tracker.check_budget(kind="tool", call_id=self.call_id)
        except BaseException:
            self.scope._exit()
            raise
        self.t0 = time.perf_counter()

    def finish(self, exc: BaseException | None) -> None:
        duration = (time.perf_counter() - self.t0) * 1000.0
        spec = self.spec
        try:
            spec.tracker.record_tool_call(
                spec.tool or spec.name,
                exc is None,
                duration,
                spec.category or "",
                self.call_id,
                error=None if exc is None else type(exc).__name__,
            )
        finally:
            self.scope._exit(exc)


def _wrap_tool(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            call = _ToolCall(spec)
            stack = STACK.get()
            STACK.reset(call.scope._token)  # type: ignore[arg-type]
            call.scope._token = None
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
                    call.finish(error)
                finally:
                    STACK.reset(token)

        return agen_wrapper
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            call = _ToolCall(spec)
            stack = STACK.get()
            STACK.reset(call.scope._token)  # type: ignore[arg-type]
            call.scope._token = None
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
                    call.finish(error)
                finally:
                    STACK.reset(token)

        return gen_wrapper
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = _ToolCall(spec)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                call.finish(exc)
                raise
            call.finish(None)
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _ToolCall(spec)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        call.finish(None)
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
        spec = _Spec(
            tracker, label, session_id, agent_id, budget, None, None, customer_id, tags
        )
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
) -> Any:
    """Implementation of :meth:`Tracker.metered_tool <agentmeter.Tracker.metered_tool>`."""
    tags = _check(session_id, agent_id, budget, customer_id, tags)
    if type(category) is not str:
        raise TypeError("category must be a str")

    def decorate(func: F) -> F:
        label = name or (func_or_name if isinstance(func_or_name, str) else None)
        label = label or getattr(func, "__name__", None) or repr(func)
        spec = _Spec(
            tracker, label, session_id, agent_id, budget, label, category, customer_id, tags
        )
        return _wrap_tool(func, spec)  # type: ignore[return-value]

    if callable(func_or_name):
        return decorate(func_or_name)
    if func_or_name is not None and not isinstance(func_or_name, str):
        raise TypeError("metered_tool() takes a function or a tool name")
    return decorate
