"""The process-wide default tracker, held below every module that needs it.

``agentmeter/__init__.py`` creates the tracker and installs it here, so that
lower layers (the instrumentation API) can find it without importing upward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["get", "install"]

_tracker: Tracker | None = None


def install(tracker: Tracker) -> None:
    """Make ``tracker`` the default (called once, by ``agentmeter/__init__.py``)."""
    global _tracker
    _tracker = tracker


def get() -> Tracker:
    """The default tracker."""
    if _tracker is None:  # pragma: no cover - the package's __init__ installs it first
        raise RuntimeError("agentmeter's default tracker is not installed yet")
    return _tracker
