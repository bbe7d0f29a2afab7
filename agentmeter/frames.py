"""pandas DataFrames of snapshots, sessions, tool stats and events.

Needs pandas (``pip install 'agentmeter-core[pandas]'``); ``import agentmeter``
never imports it, and the functions here import it when called. The model
methods delegate here: ``snapshot.to_dataframe(by=...)``,
``session.to_dataframe(by=...)`` and ``tracker.tool_stats().to_dataframe()``.

Numbers are the snapshot's own: token and call counts as integers,
``cost_micros`` as exact integer micro-USD, and ``cost_usd`` as a float for
arithmetic and plots, ``NaN`` when the cost is unknown ("unpriced", never 0).
Durations are in milliseconds, ``NaN`` before the first call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _render
from .models import SessionUsage, Snapshot, ToolStats, Usage, UsageEvent

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, import-not-found, unused-ignore]

__all__ = [
    "INSTALL_HINT",
    "SESSION_VIEWS",
    "SNAPSHOT_VIEWS",
    "cells_frame",
    "events_frame",
    "session_frame",
    "session_frames",
    "session_tool_frame",
    "snapshot_frame",
    "snapshot_frames",
    "to_dataframe",
    "tool_stats_frame",
    "usage_frame",
]

INSTALL_HINT = "pip install 'agentmeter-core[pandas]'"

SNAPSHOT_VIEWS = (
    "cells",
    "totals",
    "session",
    "model",
    "provider",
    "agent",
    "customer",
    "tool",
    "category",
    "session_tool",
)
SESSION_VIEWS = ("tool", "model", "agent", "totals")

NAN = float("nan")

# Usage columns in a stable order: the stored counters, then the derived ones.
USAGE_COLUMNS: tuple[str, ...] = (*Usage.model_fields, "total_tokens", "cost_usd")
TOOL_COLUMNS: tuple[str, ...] = (
    "category",
    "calls",
    "ok",
    "failed",
    "success_rate",
    "total_duration_ms",
    "mean_duration_ms",
    "min_duration_ms",
    "p50_ms",
    "p95_ms",
    "max_duration_ms",
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "embedding_tokens",
    "total_tokens",
    "cost_micros",
    "cost_usd",
    "unpriced_calls",
)
CELL_KEYS = ("customer_id", "session_id", "agent_id", "model", "provider", "tool")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(f"agentmeter's DataFrame export needs pandas: {INSTALL_HINT}") from exc
    return pandas


def _usd(value: Decimal | None) -> float:
    return NAN if value is None else float(value)


def _opt(value: float | None) -> float:
    return NAN if value is None else float(value)


def _usage_record(u: Usage) -> dict[str, Any]:
    rec: dict[str, Any] = {f: getattr(u, f) for f in Usage.model_fields}
    rec["total_tokens"] = u.total_tokens
    rec["cost_usd"] = _usd(u.cost_usd)
    return rec


def _tool_record(t: ToolStats) -> dict[str, Any]:
    return {
        "category": t.category,
        "calls": t.calls,
        "ok": t.ok,
        "failed": t.failed,
        "success_rate": _opt(t.success_rate),
        "total_duration_ms": t.total_duration_ms,
        "mean_duration_ms": _opt(t.mean_duration_ms),
        "min_duration_ms": _opt(t.min_duration_ms),
        "p50_ms": _opt(t.p50_ms),
        "p95_ms": _opt(t.p95_ms),
        "max_duration_ms": _opt(t.max_duration_ms),
        "llm_calls": t.llm_calls,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cache_read_tokens": t.cache_read_tokens,
        "embedding_tokens": t.embedding_tokens,
        "total_tokens": t.total_tokens,
        "cost_micros": t.cost_micros,
        "cost_usd": _usd(t.cost_usd),
        "unpriced_calls": t.unpriced_calls,
    }


def _frame(records: list[dict[str, Any]], columns: Iterable[str], index: Any) -> pd.DataFrame:
    pd_ = _pandas()
    cols = list(columns)
    if not records:
        # Typed empty columns, so that concatenation and sums behave as with data.
        empty = {c: pd_.Series(dtype="object" if c == "category" else "float64") for c in cols}
        frame: pd.DataFrame = pd_.DataFrame(empty, columns=cols)
        if index is not None:
            frame.index = index
        return frame
    full: pd.DataFrame = pd_.DataFrame.from_records(records, columns=cols, index=index)
    return full


def usage_frame(usages: Mapping[str, Usage], index_name: str = "key") -> pd.DataFrame:
    """One row per key (model, session, agent ...), one column per usage counter.

    Args:
        usages: e.g. ``snapshot.by_model`` or ``session.by_agent``.
        index_name: Name of the index (``"model"``, ``"session"`` ...).
    """
    pd_ = _pandas()
    index = pd_.Index(list(usages), name=index_name, dtype="object")
    return _frame([_usage_record(u) for u in usages.values()], USAGE_COLUMNS, index)


def tool_stats_frame(stats: Mapping[str, ToolStats], index_name: str = "tool") -> pd.DataFrame:
    """One row per tool: calls, ok / failed, durations (ms), tokens and cost spent inside.

    Args:
        stats: ``tracker.tool_stats()``, ``session.tools`` or ``snapshot.by_tool``.
        index_name: Name of the index (``"category"`` for ``snapshot.by_category``).
    """
    pd_ = _pandas()
    index = pd_.Index(list(stats), name=index_name, dtype="object")
    return _frame([_tool_record(t) for t in stats.values()], TOOL_COLUMNS, index)


def session_tool_frame(snap: Snapshot) -> pd.DataFrame:
    """Tool stats per (session, tool): a two-level index, the tool columns."""
    pd_ = _pandas()
    keys = [(s, t) for s, tools in snap.by_session_tool.items() for t in tools]
    records = [_tool_record(snap.by_session_tool[s][t]) for s, t in keys]
    index = pd_.MultiIndex.from_tuples(keys, names=["session", "tool"]) if keys else None
    frame = _frame(records, TOOL_COLUMNS, index)
    if not keys:
        frame.index = pd_.MultiIndex.from_tuples([], names=["session", "tool"])
    return frame


def cells_frame(snap: Snapshot) -> pd.DataFrame:
    """The snapshot's joint breakdown, tidy: one row per (session, agent, model, provider, tool).

    Every ``by_*`` view is a group-by of this frame, e.g.
    ``cells_frame(snap).groupby("model")[["input_tokens", "cost_micros"]].sum()``.
    Keys that do not apply are ``None``.
    """
    records = []
    for c in snap.cells:
        rec: dict[str, Any] = {k: getattr(c, k) for k in CELL_KEYS}
        rec.update(_usage_record(c.usage))
        records.append(rec)
    frame = _frame(records, (*CELL_KEYS, *USAGE_COLUMNS), None)
    return frame


def snapshot_frame(snap: Snapshot, by: str = "cells") -> pd.DataFrame:
    """One view of a snapshot as a DataFrame.

    Args:
        snap: The snapshot.
        by: ``"cells"`` (tidy joint breakdown, the default), ``"totals"`` (one row),
            ``"session"``, ``"model"``, ``"provider"``, ``"agent"``, ``"customer"``
            (usage per key),
            ``"tool"``, ``"category"`` (tool stats) or ``"session_tool"`` (tool stats
            per session and tool).

    Raises:
        ValueError: for another ``by``.
    """
    if by == "cells":
        return cells_frame(snap)
    if by == "totals":
        return usage_frame({"total": snap.totals}, "scope")
    if by in ("session", "model", "provider", "agent", "customer"):
        usages: Mapping[str, Usage] = getattr(snap, f"by_{by}")
        return usage_frame(usages, by)
    if by in ("tool", "category"):
        return tool_stats_frame(getattr(snap, f"by_{by}"), by)
    if by == "session_tool":
        return session_tool_frame(snap)
    raise ValueError(f"by must be one of {list(SNAPSHOT_VIEWS)}, got {by!r}")


def snapshot_frames(snap: Snapshot) -> dict[str, pd.DataFrame]:
    """Every view of a snapshot: ``{view: DataFrame}`` for each of :data:`SNAPSHOT_VIEWS`."""
    return {view: snapshot_frame(snap, view) for view in SNAPSHOT_VIEWS}


def session_frame(session: SessionUsage, by: str = "tool") -> pd.DataFrame:
    """One view of a session as a DataFrame.

    Args:
        session: ``tracker.session(session_id)``.
        by: ``"tool"`` (its tool stats, the default), ``"model"``, ``"agent"`` or
            ``"totals"`` (one row).

    Raises:
        ValueError: for another ``by``.
    """
    if by == "tool":
        return tool_stats_frame(session.tools)
    if by == "model":
        return usage_frame(session.by_model, "model")
    if by == "agent":
        return usage_frame(session.by_agent, "agent")
    if by == "totals":
        return usage_frame({session.session_id: session.usage}, "session")
    raise ValueError(f"by must be one of {list(SESSION_VIEWS)}, got {by!r}")


def session_frames(session: SessionUsage) -> dict[str, pd.DataFrame]:
    """Every view of a session: ``{view: DataFrame}`` for each of :data:`SESSION_VIEWS`."""
    return {view: session_frame(session, view) for view in SESSION_VIEWS}


EVENT_COLUMNS: tuple[str, ...] = (*UsageEvent.model_fields, "total_tokens", "cost_usd")


def events_frame(events: Iterable[UsageEvent]) -> pd.DataFrame:
    """One row per event (e.g. what a ``tracker.subscribe`` callback collected).

    ``cost_micros`` is ``None`` for an unpriced call (and for tool events);
    ``cost_usd`` is then ``NaN``.
    """
    records = []
    for e in events:
        rec: dict[str, Any] = {f: getattr(e, f) for f in UsageEvent.model_fields}
        rec["total_tokens"] = e.total_tokens
        rec["cost_usd"] = _usd(e.cost_usd)
        records.append(rec)
    return _frame(records, EVENT_COLUMNS, None)


def to_dataframe(obj: Any, by: str | None = None) -> pd.DataFrame:
    """A DataFrame of any of agentmeter's results.

    Accepts a :class:`~agentmeter.Snapshot`, a :class:`~agentmeter.SessionUsage`,
    a :class:`~agentmeter.Usage`, ``{name: ToolStats}``, ``{name: Usage}`` or an
    iterable of :class:`~agentmeter.UsageEvent`.
    """
    if isinstance(obj, Snapshot):
        return snapshot_frame(obj, by or "cells")
    if isinstance(obj, SessionUsage):
        return session_frame(obj, by or "tool")
    if isinstance(obj, Usage):
        return usage_frame({"total": obj}, by or "scope")
    if isinstance(obj, Mapping):
        values = list(obj.values())
        if all(isinstance(v, ToolStats) for v in values):
            return tool_stats_frame(obj, by or "tool")
        if all(isinstance(v, Usage) for v in values):
            return usage_frame(obj, by or "key")
        raise TypeError("to_dataframe() takes a mapping of ToolStats or of Usage")
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        events = list(obj)
        if all(isinstance(e, UsageEvent) for e in events):
            return events_frame(events)
    raise TypeError(f"to_dataframe() cannot convert {type(obj).__name__}")


# SessionUsage / Snapshot / ToolTable.to_dataframe() find these through agentmeter._render.
_render.register(
    session_frame=session_frame,
    snapshot_frame=snapshot_frame,
    tool_stats_frame=tool_stats_frame,
)
