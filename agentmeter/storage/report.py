"""Usage reports of a stored database: text tables, JSON or CSV.

``render("agentmeter.db")`` is what ``agentmeter report`` prints (and what the
demo ends with): totals, then tables by session, model, agent and tool.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..models import ToolStats, Usage
from .query import UsageStore

__all__ = ["FORMATS", "SECTIONS", "collect", "render"]

FORMATS = ("table", "json", "csv")
SECTIONS = ("session", "model", "agent", "tool")
Progress = Callable[[str], None]


def _usd(value: Decimal | None, unpriced: int = 0) -> str:
    if value is None:
        return "unpriced"
    text = f"${value:.6f}"
    return f"{text} (+{unpriced} unpriced)" if unpriced else text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def collect(
    db: str | os.PathLike[str] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sections: Sequence[str] = SECTIONS,
    limit: int | None = None,
    progress: Progress | None = None,
    store: UsageStore | None = None,
) -> dict[str, Any]:
    """The report's data: ``totals`` and ``by_<section>`` mappings of core models."""
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown report section(s) {bad}; choose from {list(SECTIONS)}")
    say = progress or (lambda _msg: None)
    own = store is None
    st = store if store is not None else UsageStore(db)
    try:
        say("counting events")
        events = st.count(since, until)
        say(f"aggregating {events:,} events")
        out: dict[str, Any] = {
            "database": st.url,
            "since": since,
            "until": until,
            "events": events,
            "totals": st.totals(since, until),
        }
        for section in sections:
            say(f"grouping by {section}")
            if section == "tool":
                tools = st.tool_stats(since=since, until=until)
                ordered = sorted(tools.items(), key=lambda kv: (-kv[1].calls, kv[0]))
                out["by_tool"] = dict(ordered[:limit] if limit else ordered)
            else:
                out[f"by_{section}"] = st.by(section, since, until, limit=limit)
        return out
    finally:
        if own:
            st.close()


def _usage_table(title: str, key: str, rows: dict[str, Usage]) -> list[list[str]]:
    table = [[key, "llm calls", "input", "output", "total tokens", "cost", "tool calls", "failed"]]
    for name, u in rows.items():
        table.append(
            [
                name,
                f"{u.llm_calls + u.embedding_calls:,}",
                f"{u.input_tokens + u.embedding_tokens:,}",
                f"{u.output_tokens:,}",
                f"{u.total_tokens:,}",
                _usd(u.cost_usd, u.unpriced_calls),
                f"{u.tool_calls:,}",
                f"{u.failed_tool_calls:,}",
            ]
        )
    return table


def _tool_table(rows: dict[str, ToolStats]) -> list[list[str]]:
    table = [["tool", "category", "calls", "ok", "failed", "p50 ms", "p95 ms", "tokens", "cost"]]
    for name, t in rows.items():
        table.append(
            [
                name,
                t.category or "-",
                f"{t.calls:,}",
                f"{t.ok:,}",
                f"{t.failed:,}",
                _ms(t.p50_ms),
                _ms(t.p95_ms),
                f"{t.total_tokens:,}",
                _usd(t.cost_usd, t.unpriced_calls),
            ]
        )
    return table


def _format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _as_table(data: dict[str, Any]) -> str:
    t: Usage = data["totals"]
    span = ""
    if data["since"] or data["until"]:
        span = f" from {data['since'] or 'the start'} until {data['until'] or 'now'}"
    out = [
        f"agentmeter report: {data['events']:,} events{span}",
        f"total: {t.total_tokens:,} tokens ({t.input_tokens:,} in, {t.output_tokens:,} out, "
        f"{t.embedding_tokens:,} embedding), {t.llm_calls:,} LLM calls, "
        f"{t.tool_calls:,} tool calls ({t.failed_tool_calls:,} failed), "
        f"cost {_usd(t.cost_usd, t.unpriced_calls)}",
    ]
    titles = {"session": "sessions", "model": "models", "agent": "agents"}
    for section in SECTIONS:
        rows = data.get(f"by_{section}")
        if rows is None:
            continue
        out.append("")
        out.append(f"by {section}:")
        if not rows:
            out.append(f"  (no {titles.get(section, 'tools')})")
            continue
        table = _tool_table(rows) if section == "tool" else _usage_table(section, section, rows)
        out.append(_format_table(table))
    return "\n".join(out) + "\n"


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, Usage):
            out[key] = value.model_dump(mode="json")
        elif isinstance(value, dict):
            out[key] = {
                k: v.model_dump(mode="json", exclude={"duration_histogram"})
                if isinstance(v, ToolStats)
                else v.model_dump(mode="json")
                for k, v in value.items()
            }
        else:
            out[key] = value
    return out


_CSV_COLUMNS = (
    "section",
    "name",
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "embedding_tokens",
    "total_tokens",
    "cost_usd",
    "unpriced_calls",
    "tool_calls",
    "failed_tool_calls",
    "category",
    "p50_ms",
    "p95_ms",
)


def _as_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_COLUMNS)

    def usage_row(section: str, name: str, u: Usage) -> list[Any]:
        cost = "" if u.cost_usd is None else str(u.cost_usd)
        return [
            section,
            name,
            u.llm_calls,
            u.input_tokens,
            u.output_tokens,
            u.embedding_tokens,
            u.total_tokens,
            cost,
            u.unpriced_calls,
            u.tool_calls,
            u.failed_tool_calls,
            "",
            "",
            "",
        ]

    w.writerow(usage_row("total", "", data["totals"]))
    for section in SECTIONS:
        rows = data.get(f"by_{section}")
        for name, v in (rows or {}).items():
            if isinstance(v, ToolStats):
                w.writerow(
                    [
                        "tool",
                        name,
                        v.llm_calls,
                        v.input_tokens,
                        v.output_tokens,
                        v.embedding_tokens,
                        v.total_tokens,
                        "" if v.cost_usd is None else str(v.cost_usd),
                        v.unpriced_calls,
                        v.calls,
                        v.failed,
                        v.category,
                        "" if v.p50_ms is None else f"{v.p50_ms:.3f}",
                        "" if v.p95_ms is None else f"{v.p95_ms:.3f}",
                    ]
                )
            else:
                w.writerow(usage_row(section, name, v))
    return buf.getvalue()


def render(
    db_url: str | os.PathLike[str] | None = None,
    fmt: str = "table",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sections: Sequence[str] = SECTIONS,
    limit: int | None = None,
    progress: Progress | None = None,
) -> str:
    """The report of a stored database as text.

    Args:
        db_url: A path (SQLite) or SQLAlchemy URL; default ``$AGENTMETER_DB`` or
            ``./agentmeter.db``.
        fmt: ``"table"`` (aligned text), ``"json"`` or ``"csv"``.
        since: Only events at or after this time (naive datetimes are UTC).
        until: Only events before this time.
        sections: Which breakdowns: any of ``"session"``, ``"model"``, ``"agent"``, ``"tool"``.
        limit: At most this many rows per breakdown (largest first).
        progress: Called with a short message before each step (e.g. print to stderr).

    Raises:
        agentmeter.storage.DatabaseError: the database is missing, corrupt or not agentmeter's.
        ValueError: unknown format or section.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {list(FORMATS)}, got {fmt!r}")
    data = collect(
        db_url, since=since, until=until, sections=sections, limit=limit, progress=progress
    )
    if fmt == "json":
        return json.dumps(_jsonable(data), indent=2) + "\n"
    if fmt == "csv":
        return _as_csv(data)
    return _as_table(data)
