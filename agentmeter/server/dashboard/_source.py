"""Where the dashboard reads: a stored database (``UsageStore``) or a live tracker.

Both answer the same questions through the readers' public API; a page never
touches SQL or a tracker's internals. A live tracker keeps totals, not
timestamps, so it has no time ranges and no time series (``series`` is ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ...models import BudgetStatus, SessionUsage, Snapshot, ToolStats, Usage

__all__ = ["Range", "Source", "StoreSource", "TrackerSource", "source_of"]

SeriesRows = list[tuple[datetime, str | None, Usage]]


@dataclass(frozen=True)
class Range:
    """The time range a page shows: ``since`` inclusive, ``until`` exclusive (UTC)."""

    since: datetime | None = None
    until: datetime | None = None

    def kw(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        if self.since is not None:
            out["since"] = self.since
        if self.until is not None:
            out["until"] = self.until
        return out


class Source(Protocol):
    live: bool

    def totals(self, r: Range) -> Usage: ...
    def top(self, dimension: str, r: Range, limit: int | None) -> dict[str, Usage]: ...
    def count_keys(self, dimension: str, r: Range) -> int: ...
    def listing(
        self, dimension: str, r: Range, q: str, limit: int, offset: int
    ) -> tuple[int, dict[str, Usage]]: ...
    def series(self, bucket: str, by: str | None, r: Range, **eq: str) -> SeriesRows | None: ...
    def session(self, session_id: str, r: Range) -> SessionUsage: ...
    def customer(self, customer_id: str, r: Range) -> Any: ...
    def tools(self, r: Range) -> dict[str, ToolStats]: ...
    def session_times(self, ids: Sequence[str]) -> dict[str, tuple[datetime, datetime]]: ...
    def time_range(self) -> tuple[datetime | None, datetime | None]: ...
    def budgets(self) -> list[BudgetStatus] | None: ...


def _matching(usages: dict[str, Usage], q: str) -> list[tuple[str, Usage]]:
    needle = q.casefold()
    return [(k, u) for k, u in usages.items() if needle in k.casefold()]


class StoreSource:
    """A database, read through :class:`agentmeter.storage.UsageStore` (its rollups)."""

    live = False

    def __init__(self, store: Any) -> None:
        self.store = store

    def totals(self, r: Range) -> Usage:
        result: Usage = self.store.totals(**r.kw())
        return result

    def top(self, dimension: str, r: Range, limit: int | None) -> dict[str, Usage]:
        result: dict[str, Usage] = self.store.by(dimension, limit=limit, **r.kw())
        return result

    def count_keys(self, dimension: str, r: Range) -> int:
        return int(self.store.count_keys(dimension, **r.kw()))

    def listing(
        self, dimension: str, r: Range, q: str, limit: int, offset: int
    ) -> tuple[int, dict[str, Usage]]:
        if not q:
            page = self.top_page(dimension, r, limit, offset)
            return self.count_keys(dimension, r), page
        if dimension == "session":
            # Search the ids alone (one index read), then read one page of usage:
            # not the usage of every session of the history.
            needle = q.casefold()
            ids = [k for k in self.store.keys(dimension, **r.kw()) if needle in k.casefold()]
            shown = ids[offset : offset + limit]
            found_page: dict[str, Usage] = {}
            for sid in shown:
                found_page.update(self.store.by(dimension, session=sid, **r.kw()))
            return len(ids), found_page
        found = _matching(self.top(dimension, r, None), q)
        return len(found), dict(found[offset : offset + limit])

    def top_page(self, dimension: str, r: Range, limit: int, offset: int) -> dict[str, Usage]:
        result: dict[str, Usage] = self.store.by(dimension, limit=limit, offset=offset, **r.kw())
        return result

    def series(self, bucket: str, by: str | None, r: Range, **eq: str) -> SeriesRows | None:
        rows: SeriesRows = self.store.timeseries(bucket=bucket, by=by, **r.kw(), **eq)
        return rows

    def session(self, session_id: str, r: Range) -> SessionUsage:
        result: SessionUsage = self.store.session(session_id, **r.kw())
        return result

    def customer(self, customer_id: str, r: Range) -> Any:
        return self.store.customer(customer_id, **r.kw())

    def tools(self, r: Range) -> dict[str, ToolStats]:
        return dict(self.store.tool_stats(**r.kw()))

    def session_times(self, ids: Sequence[str]) -> dict[str, tuple[datetime, datetime]]:
        result: dict[str, tuple[datetime, datetime]] = self.store.session_times(list(ids))
        return result

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        lo, hi = self.store.time_range()
        return lo, hi

    def budgets(self) -> list[BudgetStatus] | None:
        return None  # budgets live in the tracker that enforces them


class TrackerSource:
    """A live :class:`~agentmeter.Tracker`: one snapshot per page, budgets included."""

    live = True

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self._snap: Snapshot | None = None

    @property
    def snap(self) -> Snapshot:
        if self._snap is None:
            self._snap = self.tracker.snapshot()
        return self._snap

    def _view(self, dimension: str) -> dict[str, Usage]:
        views: dict[str, dict[str, Usage]] = {
            "session": self.snap.by_session,
            "model": self.snap.by_model,
            "agent": self.snap.by_agent,
            "provider": self.snap.by_provider,
            "customer": dict(getattr(self.snap, "by_customer", {})),
        }
        ordered = sorted(views[dimension].items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
        return dict(ordered)

    def totals(self, r: Range) -> Usage:
        return self.snap.totals

    def top(self, dimension: str, r: Range, limit: int | None) -> dict[str, Usage]:
        items = list(self._view(dimension).items())
        return dict(items if limit is None else items[:limit])

    def count_keys(self, dimension: str, r: Range) -> int:
        return len(self._view(dimension))

    def listing(
        self, dimension: str, r: Range, q: str, limit: int, offset: int
    ) -> tuple[int, dict[str, Usage]]:
        found = _matching(self._view(dimension), q) if q else list(self._view(dimension).items())
        return len(found), dict(found[offset : offset + limit])

    def series(self, bucket: str, by: str | None, r: Range, **eq: str) -> SeriesRows | None:
        return None  # a tracker keeps totals, not timestamps

    def session(self, session_id: str, r: Range) -> SessionUsage:
        result: SessionUsage = self.tracker.session(session_id)
        return result

    def customer(self, customer_id: str, r: Range) -> Any:
        return self.tracker.customer(customer_id)

    def tools(self, r: Range) -> dict[str, ToolStats]:
        return dict(self.snap.by_tool)

    def session_times(self, ids: Sequence[str]) -> dict[str, tuple[datetime, datetime]]:
        return {}

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        return None, None

    def budgets(self) -> list[BudgetStatus] | None:
        out = []
        for sid in self.tracker.sessions():
            status = self.tracker.budget_status(sid)
            if status is not None:
                out.append(status)
        return out


def source_of(backend: Any) -> Source:
    """The dashboard's reader over the REST API's backend (a database or a tracker)."""
    if getattr(backend, "source", None) == "database":
        return StoreSource(backend.store)
    return TrackerSource(backend.tracker)
