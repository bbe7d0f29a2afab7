"""Refusing a LlamaIndex tool call before its body runs.

The dispatcher swallows what its span handlers raise, so the span of a tool
call can reserve the call's budget but cannot refuse it. A ``FunctionTool``
calls its function through ``self._fn`` / ``self._async_fn`` inside that span:
:func:`guard` wraps those two once per tool, and the wrapper raises the
refusal the span recorded (:func:`refuse`) before calling the function, so
``BudgetExceeded`` leaves ``tool.call()`` / ``acall()`` and the body never runs.
Other tools (``QueryEngineTool``, a ``BaseTool`` subclass) give agentmeter no
such hook: a refusal there is said once, loudly, and the tool is counted.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.tools import FunctionTool

__all__ = ["forget", "guard", "refuse"]

_MAX_REFUSED = 10_000  # refusals whose tool body never asked (a leak guard)
_refused: dict[str, BaseException] = {}
_lock = threading.Lock()
_MARK = "_agentmeter_guarded"


def refuse(span_id: str, exc: BaseException) -> None:
    """The tool call of ``span_id`` must not run: its function raises ``exc``."""
    with _lock:
        _refused[span_id] = exc
        if len(_refused) > _MAX_REFUSED:
            _refused.pop(next(iter(_refused)), None)


def refused(span_id: str | None) -> BaseException | None:
    """The refusal recorded for ``span_id``, if any."""
    return _refused.get(span_id) if span_id is not None else None


def forget(span_id: str) -> None:
    """The span ended: drop its refusal."""
    _refused.pop(span_id, None)


def _check() -> None:
    sid = active_span_id.get()
    exc = _refused.get(sid) if sid is not None and _refused else None
    if exc is not None:
        raise exc


def _sync(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded_tool_fn(*args: Any, **kwargs: Any) -> Any:
        _check()
        return fn(*args, **kwargs)

    return guarded_tool_fn


def _async(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def guarded_tool_afn(*args: Any, **kwargs: Any) -> Any:
        _check()
        return await fn(*args, **kwargs)

    return guarded_tool_afn


def guard(tool: Any) -> bool:
    """Make ``tool`` refusable before its body runs; True if it is (a ``FunctionTool``)."""
    if not isinstance(tool, FunctionTool):
        return False
    if getattr(tool, _MARK, False):
        return True
    with _lock:
        if not getattr(tool, _MARK, False):
            fn, afn = getattr(tool, "_fn", None), getattr(tool, "_async_fn", None)
            if not callable(fn) or not callable(afn):
                return False
            tool._fn = _sync(fn)
            tool._async_fn = _async(afn)
            setattr(tool, _MARK, True)
    return True
