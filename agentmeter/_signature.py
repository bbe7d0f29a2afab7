"""Keyword-only arguments without CPython's keyword-only binding cost, for hot paths.

CPython (3.11-3.13) fills each keyword-only parameter a call leaves out with a
dictionary lookup in the function's ``__kwdefaults__``; positional-or-keyword
defaults are copied from a tuple. For ``record_llm`` (17 optional keywords) that
is ~170 ns of a ~1.8 us call. The hot record methods therefore declare their
optional parameters after a marker parameter instead of after ``*``::

    @keywords_only
    def record_llm(self, model, input_tokens, output_tokens, _kw: KeywordsOnly = KW,
                   cache_read_tokens=0, ...):
        if _kw is not KW:
            raise positional_error("record_llm", 3)

and behave exactly as keyword-only: a fourth positional argument lands in the
marker and is refused (``TypeError``); a type checker refuses it too (it is not a
``KeywordsOnly``); ``inspect.signature`` / ``help()`` show the keyword-only
signature without the marker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = ["KW", "TRUSTED", "KeywordsOnly", "keywords_only", "positional_error"]

F = TypeVar("F", bound=Callable[..., Any])


class KeywordsOnly:
    """The type of :data:`KW`, the marker's default, and of :data:`TRUSTED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<keywords only>"


KW: Final = KeywordsOnly()

# Passed in the marker's place by agentmeter's own callers whose arguments are
# checked already (the calls in flight of agentmeter.instrumentation): the record
# method then skips its checks, in the same frame. Never part of a public API.
TRUSTED: Final = KeywordsOnly()


def keywords_only(func: F) -> F:
    """Publish ``func``'s signature with its marker parameter (the one defaulting to
    :data:`KW`) removed and every parameter after it keyword-only."""
    sig = inspect.signature(func)
    params: list[inspect.Parameter] = []
    after = False
    for p in sig.parameters.values():
        if p.default is KW:
            after = True
            continue
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if after else p)
    if not after:
        raise TypeError(f"{func.__qualname__} has no keywords-only marker parameter")
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return func


def positional_error(name: str, positional: int) -> TypeError:
    """The error of a call that passed more than ``positional`` arguments by position."""
    return TypeError(
        f"{name}() takes {positional} positional arguments; pass the others by keyword"
    )
