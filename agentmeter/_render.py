"""Rendering hooks: how value objects reach the modules that render them.

The value objects (:mod:`agentmeter.models`, :class:`~agentmeter.Scope`) sit
below their renderers (:mod:`agentmeter._display` for text and HTML tables,
:mod:`agentmeter.frames` for pandas), so they must not import them. Instead each
renderer registers its functions here when it is imported -- ``import
agentmeter`` imports both -- and the objects' ``__str__`` / ``_repr_html_`` /
``to_dataframe`` look them up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register", "render", "text"]

_RENDERERS: dict[str, Callable[..., Any]] = {}


def register(**renderers: Callable[..., Any]) -> None:
    """Register renderers by name (``register(usage_html=usage_html, ...)``)."""
    _RENDERERS.update(renderers)


def render(name: str, obj: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the renderer ``name`` on ``obj``.

    Raises:
        LookupError: if no renderer of that name is registered (``agentmeter``'s
            ``__init__`` imports every renderer, so this means a broken install).
    """
    fn = _RENDERERS.get(name)
    if fn is None:
        raise LookupError(f"agentmeter: no renderer {name!r} registered")
    return fn(obj, *args, **kwargs)


def text(name: str, obj: Any) -> str:
    """:func:`render` for the renderers that return text or HTML."""
    return str(render(name, obj))
