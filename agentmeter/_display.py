"""How agentmeter's value objects look: HTML tables for Jupyter, text tables for terminals.

The model classes delegate to these functions (``Snapshot._repr_html_`` calls
:func:`snapshot_html`, ``str(snapshot)`` calls :func:`snapshot_text` ...), so the
formatting rules live in one place:

- counts with thousands separators (``12,345``);
- cost in dollars with enough digits for sub-cent calls (``$0.00024``), and
  ``unpriced`` (never ``$0``) when the model had no known price; a cost that
  leaves some calls out says so (``$0.0123 +2 unpriced``);
- token counts that include estimated calls are marked ``~`` with a footnote;
- durations in ms (``12.3 ms``) or seconds (``1.24 s``); ``—`` when unknown.

Every piece of user text (tool, session, model names) is HTML-escaped, and the
HTML is a fragment that a strict HTML5 parser accepts. Only the standard library
is used here: ``import agentmeter`` stays light.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _render
from .models import BudgetStatus, SessionUsage, Snapshot, ToolStats, ToolTable, Usage

if TYPE_CHECKING:
    from .scope import Scope

__all__ = [
    "ToolTable",
    "budget_html",
    "budget_text",
    "fmt_count",
    "fmt_ms",
    "fmt_usd",
    "scope_html",
    "scope_text",
    "session_html",
    "session_repr",
    "session_text",
    "snapshot_html",
    "snapshot_repr",
    "snapshot_text",
    "tool_stats_html",
    "tool_stats_text",
    "tool_table",
    "usage_html",
    "usage_repr",
    "usage_text",
]

DASH = "—"
ESTIMATED_MARK = "~"
ESTIMATED_NOTE = "~ includes estimated token counts (the provider did not report them)"
UNPRICED_NOTE = "unpriced: no known price for the model, so no cost is claimed (not $0)"


# ---------------------------------------------------------------------- numbers
def fmt_count(n: int | float | Decimal) -> str:
    """A count with thousands separators: ``12,345``."""
    if not isinstance(n, int) and n != int(n):
        return f"{n:,.1f}"
    return f"{int(n):,}"


def _usd_digits(value: Decimal) -> str:
    """Dollars with cents for >= $1, else up to micro-dollar precision without trailing zeros."""
    if value == 0:
        return "$0.00"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= 1:
        return f"{sign}${v:,.2f}"
    text = f"{v:.6f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{v:.2f}"
    return f"{sign}${text}"


def fmt_usd(cost: Decimal | None, unpriced_calls: int = 0) -> str:
    """Dollars (``$0.0123``), ``unpriced`` for an unknown price, ``+N unpriced`` when partial."""
    if cost is None:
        return "unpriced"
    text = _usd_digits(cost)
    return f"{text} +{unpriced_calls:,} unpriced" if unpriced_calls else text


def fmt_ms(ms: float | None) -> str:
    """A duration: ``0.42 ms``, ``12.3 ms``, ``1.24 s``; ``—`` when unknown."""
    if ms is None:
        return DASH
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:,.2f} s"


def fmt_pct(share: float | None) -> str:
    """A share as a percentage (``97.5%``); ``—`` when unknown."""
    if share is None:
        return DASH
    return f"{share * 100:.0f}%" if share in (0.0, 1.0) else f"{share * 100:.1f}%"


def _fmt_limit(name: str, value: int | Decimal) -> str:
    if "cost" in name:
        return _usd_digits(Decimal(value))
    return fmt_count(value)


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


# ---------------------------------------------------------------------- tables
_CELL = "padding:2px 6px;white-space:nowrap"
_SCROLL = "overflow-x:auto;max-width:100%"


@dataclass
class Table:
    """A table that renders to HTML and to text: headers, string cells, notes."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def html(self, notes: bool = True) -> str:
        align = ["right" if n else "left" for n in self.numeric]
        # The wrapper scrolls a table wider than its notebook cell (the page never does).
        out = [
            f'<div class="agentmeter-scroll" style="{_SCROLL}">'
            '<table class="agentmeter-table" style="border-collapse:collapse">'
        ]
        if self.title:
            out.append(
                '<caption style="text-align:left;font-weight:bold;padding:4px 0">'
                f"{html.escape(self.title)}</caption>"
            )
        out.append("<thead><tr>")
        out.extend(
            f'<th style="text-align:{a};{_CELL};border-bottom:1px solid #999">{html.escape(h)}</th>'
            for h, a in zip(self.headers, align, strict=True)
        )
        out.append("</tr></thead><tbody>")
        for row in self.rows:
            out.append("<tr>")
            for i, (cell, a) in enumerate(zip(row, align, strict=True)):
                tag = "th" if i == 0 and not self.numeric[0] else "td"
                style = f"text-align:{a};{_CELL}"
                if cell == "unpriced" or cell.endswith(" unpriced"):
                    style += ";font-style:italic;color:#a15c00"
                out.append(f'<{tag} style="{style}">{html.escape(cell)}</{tag}>')
            out.append("</tr>")
        out.append("</tbody></table></div>")
        if notes:
            out.append(_notes_html(self.notes))
        return "".join(out)

    def text(self, notes: bool = True) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.rjust(w) if num else c.ljust(w)
                for c, w, num in zip(cells, widths, self.numeric, strict=True)
            ]
            return "  ".join(parts).rstrip()

        out = [self.title] if self.title else []
        out.append(line(self.headers))
        out.append("  ".join("-" * w for w in widths))
        out.extend(line(r) for r in self.rows)
        if notes:
            out.extend(self.notes)
        return "\n".join(out)


def _all_notes(tables: Iterable[Table]) -> list[str]:
    """The tables' notes, each once, in order."""
    return list(dict.fromkeys(n for t in tables for n in t.notes))


def _notes_html(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return (
        '<p style="font-size:smaller;color:#666;margin:2px 0 8px 0">'
        + "<br>".join(html.escape(n) for n in notes)
        + "</p>"
    )


@dataclass
class _Col:
    header: str
    cell: Callable[[Any], str]
    shown: Callable[[Any], bool] = lambda _item: True  # shown if true for some row


def _build(
    key_header: str,
    items: Sequence[tuple[str, Any]],
    cols: Sequence[_Col],
    title: str = "",
) -> Table:
    used = [c for c in cols if any(c.shown(v) for _, v in items)] if items else list(cols)
    rows = [[k, *(c.cell(v) for c in used)] for k, v in items]
    return Table(
        headers=[key_header, *(c.header for c in used)],
        rows=rows,
        numeric=[False, *(True for _ in used)],
        title=title,
    )


def _tok(value: int, u: Usage) -> str:
    text = fmt_count(value)
    # The aggregate cannot tell which of its tokens were estimated: mark every non-zero count.
    return f"{ESTIMATED_MARK}{text}" if u.estimated_calls and value else text


# Most-read columns first (what it cost, how many calls and failures), the detail after:
# a notebook cell narrower than the table scrolls it sideways, the first columns stay
# in view (issue: a 1280 px page cut the failures off).
_USAGE_COLS: tuple[_Col, ...] = (
    _Col("total tokens", lambda u: _tok(u.total_tokens, u)),
    _Col("cost", lambda u: fmt_usd(u.cost_usd, u.unpriced_calls)),
    _Col("LLM calls", lambda u: fmt_count(u.llm_calls)),
    _Col("LLM failures", lambda u: fmt_count(u.failed_llm_calls), lambda u: u.failed_llm_calls > 0),
    _Col("tool calls", lambda u: fmt_count(u.tool_calls), lambda u: u.tool_calls > 0),
    _Col(
        "tool failures",
        lambda u: fmt_count(u.failed_tool_calls),
        lambda u: u.failed_tool_calls > 0,
    ),
    _Col("input", lambda u: _tok(u.input_tokens, u)),
    _Col("output", lambda u: _tok(u.output_tokens, u)),
    _Col("cache read", lambda u: _tok(u.cache_read_tokens, u), lambda u: u.cache_read_tokens > 0),
    _Col(
        "cache write", lambda u: _tok(u.cache_write_tokens, u), lambda u: u.cache_write_tokens > 0
    ),
    _Col("reasoning", lambda u: _tok(u.reasoning_tokens, u), lambda u: u.reasoning_tokens > 0),
    _Col("embed calls", lambda u: fmt_count(u.embedding_calls), lambda u: u.embedding_calls > 0),
    _Col("embed tokens", lambda u: _tok(u.embedding_tokens, u), lambda u: u.embedding_calls > 0),
    _Col(
        "mean LLM latency",
        lambda u: fmt_ms(u.llm_latency_ms / u.llm_calls if u.llm_calls else None),
        lambda u: u.llm_latency_ms > 0,
    ),
    _Col("cache hits", lambda u: fmt_count(u.cache_hits), lambda u: u.cache_hits > 0),
    _Col("cache misses", lambda u: fmt_count(u.cache_misses), lambda u: u.cache_misses > 0),
    _Col("tokens saved", lambda u: fmt_count(u.tokens_saved), lambda u: u.tokens_saved > 0),
)


def _usage_notes(usages: Iterable[Usage]) -> list[str]:
    us = list(usages)
    notes = []
    if any(u.estimated_calls for u in us):
        notes.append(ESTIMATED_NOTE)
    if any(u.unpriced_calls for u in us):
        notes.append(UNPRICED_NOTE)
    return notes


def usage_table(usages: Mapping[str, Usage], key_header: str = "", title: str = "") -> Table:
    """A table of usages, one row per key (columns that are zero everywhere are left out)."""
    items = list(usages.items())
    table = _build(key_header, items, _USAGE_COLS, title)
    table.notes = _usage_notes(usages.values())
    return table


def _tool_cost(t: ToolStats) -> str:
    if not t.llm_calls and not t.embedding_tokens and not t.cost_micros:
        return DASH  # nothing priced happened inside: no cost, not "$0"
    return fmt_usd(t.cost_usd, t.unpriced_calls)


_TOOL_COLS: tuple[_Col, ...] = (
    _Col("calls", lambda t: fmt_count(t.calls)),
    _Col("failed", lambda t: fmt_count(t.failed)),
    _Col("success", lambda t: fmt_pct(t.success_rate)),
    _Col("p50", lambda t: fmt_ms(t.p50_ms)),
    _Col("p95", lambda t: fmt_ms(t.p95_ms)),
    _Col("cost", _tool_cost),
    _Col("tokens", lambda t: fmt_count(t.total_tokens)),
    _Col("LLM calls", lambda t: fmt_count(t.llm_calls)),
    _Col("mean", lambda t: fmt_ms(t.mean_duration_ms)),
    _Col("max", lambda t: fmt_ms(t.max_duration_ms)),
    _Col("ok", lambda t: fmt_count(t.ok)),
    _Col("category", lambda t: t.category, lambda t: bool(t.category)),
)


def _tool_notes(stats: Iterable[ToolStats]) -> list[str]:
    notes = ["durations: p50 / p95 from a log-scale histogram (within ~2%)"]
    if any(t.unpriced_calls for t in stats):
        notes.append(UNPRICED_NOTE)
    return notes


def _text_category(table: Table) -> None:
    """The category column (the last, when shown) is text: left-aligned like the key."""
    if table.headers[-1] == "category":
        table.numeric[-1] = False


def tools_table(stats: Mapping[str, ToolStats], title: str = "", key_header: str = "tool") -> Table:
    """A table of tool stats, one row per tool (tokens and cost are those spent inside)."""
    items = list(stats.items())
    cols = _TOOL_COLS if key_header == "tool" else _TOOL_COLS[:-1]
    table = _build(key_header, items, cols, title)
    _text_category(table)
    table.notes = _tool_notes(stats.values())
    return table


def _session_tool_table(by_session_tool: Mapping[str, Mapping[str, ToolStats]]) -> Table:
    items = [(f"{s} / {t}", st) for s, tools in by_session_tool.items() for t, st in tools.items()]
    table = _build("session / tool", items, _TOOL_COLS)
    _text_category(table)
    table.notes = _tool_notes(st for _, st in items)
    return table


def budget_table(status: BudgetStatus) -> Table:
    """A budget's limits against what was used and reserved."""
    rows = []
    for name, limit in status.limits.items():
        used = status.used.get(name, 0)
        reserved = status.reserved.get(name, 0)
        share = float(used + reserved) / float(limit) if limit else None
        rows.append(
            [
                "cost" if name == "max_cost_usd" else name.removeprefix("max_").replace("_", " "),
                _fmt_limit(name, limit),
                _fmt_limit(name, used),
                _fmt_limit(name, reserved),
                _fmt_limit(name, status.remaining.get(name, 0)),
                fmt_pct(share) if share is not None else DASH,
            ]
        )
    state = status.state
    if status.refused is not None:
        state = f"refused a call ({status.refused.limit}, requested {status.refused.requested})"
    if status.period is not None and status.resets_at is not None:
        state += f"; {status.period} period, resets {status.resets_at.isoformat()}"
    return Table(
        headers=["limit", "max", "used", "reserved", "remaining", "% of max"],
        rows=rows,
        numeric=[False, True, True, True, True, True],
        title=f"budget of {status.owner}: {state}",
    )


# ---------------------------------------------------------------------- summaries
def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _summary(u: Usage) -> str:
    """One line: tokens, cost, LLM calls, tool calls."""
    tokens = fmt_count(u.total_tokens)
    if u.estimated_calls:
        tokens = ESTIMATED_MARK + tokens
    parts = [f"{tokens} tokens", fmt_usd(u.cost_usd, u.unpriced_calls)]
    parts.append(_n(u.llm_calls, "LLM call"))
    if u.embedding_calls:
        parts.append(_n(u.embedding_calls, "embedding call"))
    tools = _n(u.tool_calls, "tool call")
    if u.failed_tool_calls:
        tools += f" ({u.failed_tool_calls:,} failed)"
    parts.append(tools)
    return ", ".join(parts)


def _is_empty(u: Usage) -> bool:
    return not any(u.to_row())


_WRAP = '<div class="agentmeter" style="font-size:13px">'


def _header(title: str, detail: str) -> str:
    return (
        f'<p style="margin:4px 0"><strong>{html.escape(title)}</strong> {html.escape(detail)}</p>'
    )


def _section(title: str, table: Table, *, collapsed: bool = False) -> str:
    """A titled table (its notes are left to the caller, to print them once)."""
    if collapsed:
        return (
            f"<details><summary>{html.escape(title)} ({len(table.rows)})</summary>"
            f"{table.html(notes=False)}</details>"
        )
    if table.title:  # the caption says it already
        return table.html(notes=False)
    return f'<h4 style="margin:10px 0 2px 0">{html.escape(title)}</h4>{table.html(notes=False)}'


def _compose_html(header: str, sections: Sequence[tuple[str, Table, bool]]) -> str:
    """Header, the first table bare, the others titled, then every note once."""
    out = [_WRAP, header]
    for i, (title, table, collapsed) in enumerate(sections):
        if i == 0:
            out.append(table.html(notes=False))
        else:
            out.append(_section(title, table, collapsed=collapsed))
    out.append(_notes_html(_all_notes(t for _, t, _ in sections)))
    out.append("</div>")
    return "".join(out)


def _compose_text(header: str, sections: Sequence[tuple[str, Table, bool]]) -> str:
    parts = [header]
    for i, (title, table, _collapsed) in enumerate(sections):
        if i and not table.title:
            table.title = title
        parts.append(table.text(notes=False))
    notes = _all_notes(t for _, t, _ in sections)
    if notes:
        parts.append("\n".join(notes))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------- Usage
def usage_repr(u: Usage) -> str:
    """``Usage(input_tokens=1200, output_tokens=80, llm_calls=1, ...)``: the non-zero fields."""
    fields = [f"{k}={v!r}" for k, v in u if v]
    return f"Usage({', '.join(fields)})"


def usage_text(u: Usage, title: str = "usage") -> str:
    """A one-row text table of a usage, under a summary line."""
    if _is_empty(u):
        return f"{title}: nothing recorded"
    return f"{title}: {_summary(u)}\n" + usage_table({"total": u}).text()


def usage_html(u: Usage, title: str = "usage") -> str:
    """A one-row HTML table of a usage."""
    if _is_empty(u):
        return f"{_WRAP}{_header(title, 'nothing recorded')}</div>"
    return f"{_WRAP}{_header(title, _summary(u))}{usage_table({'total': u}).html()}</div>"


# ---------------------------------------------------------------------- tools
def tool_stats_text(stats: Mapping[str, ToolStats], title: str = "tool stats") -> str:
    """Tool stats as a text table."""
    if not stats:
        return f"{title}: no tool calls"
    return tools_table(stats, title).text()


def tool_stats_html(stats: Mapping[str, ToolStats], title: str = "tool stats") -> str:
    """Tool stats as an HTML table."""
    if not stats:
        return f"{_WRAP}{_header(title, 'no tool calls')}</div>"
    return f"{_WRAP}{tools_table(stats, title).html()}</div>"


def tool_table(stats: Mapping[str, ToolStats]) -> ToolTable:
    """Wrap tool stats (e.g. ``session.tools``) so they display as a table."""
    return stats if isinstance(stats, ToolTable) else ToolTable(stats)


# ---------------------------------------------------------------------- budgets
def budget_text(status: BudgetStatus) -> str:
    """A budget status as a text table."""
    return budget_table(status).text()


def budget_html(status: BudgetStatus) -> str:
    """A budget status as an HTML table."""
    return f"{_WRAP}{budget_table(status).html()}</div>"


# ---------------------------------------------------------------------- sessions
def session_repr(s: SessionUsage) -> str:
    """``<SessionUsage 's1': 1,234 tokens, $0.0012, 3 LLM calls, 2 tool calls>``."""
    extra = ""
    if s.budget is not None:
        extra = {"refused": ", budget refused a call", "exhausted": ", budget exhausted"}.get(
            s.budget.state, ", within budget"
        )
    return f"<SessionUsage {s.session_id!r}: {_summary(s.usage)}{extra}>"


def _session_tables(s: SessionUsage) -> list[tuple[str, Table, bool]]:
    out: list[tuple[str, Table, bool]] = [("total", usage_table({"total": s.usage}), False)]
    if s.by_model:
        out.append(("by model", usage_table(s.by_model, "model"), False))
    if s.by_agent:
        out.append(("by agent", usage_table(s.by_agent, "agent"), False))
    if s.tools:
        out.append(("tools", tools_table(s.tools), False))
    if s.budget is not None:
        out.append(("budget", budget_table(s.budget), False))
    return out


def session_text(s: SessionUsage) -> str:
    """A session: summary line, totals, per-model, per-agent, tool stats and budget."""
    return _compose_text(f"session {s.session_id}: {_summary(s.usage)}", _session_tables(s))


def session_html(s: SessionUsage) -> str:
    """A session as HTML tables."""
    return _compose_html(_header(f"session {s.session_id}", _summary(s.usage)), _session_tables(s))


# ---------------------------------------------------------------------- snapshots
def snapshot_repr(snap: Snapshot) -> str:
    """``<Snapshot 2025-01-01 12:00:00 UTC: 1,234 tokens, ...; 3 sessions, 2 models, 4 tools>``."""
    counts = ", ".join(
        _n(len(view), noun)
        for view, noun in (
            (snap.by_session, "session"),
            (snap.by_model, "model"),
            (snap.by_agent, "agent"),
            (snap.by_tool, "tool"),
        )
    )
    return f"<Snapshot {_fmt_time(snap.taken_at)}: {_summary(snap.totals)}; {counts}>"


def _snapshot_tables(snap: Snapshot) -> list[tuple[str, Table, bool]]:
    """(title, table, collapsed) for each non-empty view of a snapshot."""
    out: list[tuple[str, Table, bool]] = [("total", usage_table({"total": snap.totals}), False)]
    views: list[tuple[str, Mapping[str, Usage], str]] = [
        ("by session", snap.by_session, "session"),
        ("by model", snap.by_model, "model"),
        ("by agent", snap.by_agent, "agent"),
    ]
    for title, usages, key in views:
        if usages:
            out.append((title, usage_table(usages, key), False))
    if snap.by_tool:
        out.append(("by tool", tools_table(snap.by_tool), False))
    if snap.by_session_tool:
        out.append(("tools per session", _session_tool_table(snap.by_session_tool), True))
    if snap.by_provider:
        out.append(("by provider", usage_table(snap.by_provider, "provider"), True))
    if snap.by_category and any(snap.by_category):
        out.append(("by tool category", tools_table(snap.by_category, key_header="category"), True))
    return out


def snapshot_text(snap: Snapshot) -> str:
    """A snapshot: summary line, then a text table per non-empty breakdown."""
    when = f"agentmeter snapshot at {_fmt_time(snap.taken_at)}"
    if _is_empty(snap.totals):
        return f"{when}: nothing recorded"
    return _compose_text(f"{when}: {_summary(snap.totals)}", _snapshot_tables(snap))


def snapshot_html(snap: Snapshot) -> str:
    """A snapshot as HTML: totals, by session / model / agent / tool, the rest collapsed."""
    when = f"at {_fmt_time(snap.taken_at)}"
    if _is_empty(snap.totals):
        return f"{_WRAP}{_header('agentmeter snapshot', when + ': nothing recorded')}</div>"
    header = _header("agentmeter snapshot", f"{when}: {_summary(snap.totals)}")
    return _compose_html(header, _snapshot_tables(snap))


# ---------------------------------------------------------------------- scopes
def _scope_detail(scope: Scope) -> str:
    bits = []
    if scope.session_id is not None:
        bits.append(f"session {scope.session_id}")
    if scope.agent_id is not None:
        bits.append(f"agent {scope.agent_id}")
    if scope.tool is not None:
        bits.append(f"tool {scope.tool}")
    if scope.active:
        bits.append("open")
    elif scope.started_at is None:
        bits.append("not entered")
    else:
        bits.append(f"closed after {fmt_ms(scope.duration_ms)}")
    if scope.error:
        bits.append(f"left by {scope.error}")
    return ", ".join(bits)


def _scope_tables(scope: Scope, u: Usage) -> list[tuple[str, Table, bool]]:
    out: list[tuple[str, Table, bool]] = []
    if not _is_empty(u):
        out.append(("total", usage_table({"total": u}), False))
    status = scope.budget_status
    if status is not None:
        out.append(("budget", budget_table(status), False))
    return out


def scope_text(scope: Scope) -> str:
    """A scope: path, session, agent, state, its inclusive usage and its budget."""
    u = scope.usage
    header = f"scope {'/'.join(scope.path)} ({_scope_detail(scope)}): {_summary(u)}"
    return _compose_text(header, _scope_tables(scope, u))


def scope_html(scope: Scope) -> str:
    """A scope as HTML: a header line, its usage table and its budget."""
    u = scope.usage
    header = _header(f"scope {'/'.join(scope.path)}", f"({_scope_detail(scope)}): {_summary(u)}")
    return _compose_html(header, _scope_tables(scope, u))


# ---------------------------------------------------------------------- customers
def _customer_tables(c: Any) -> list[tuple[str, Table, bool]]:
    out: list[tuple[str, Table, bool]] = [("total", usage_table({"total": c.usage}), False)]
    if c.by_session:
        out.append(("by session", usage_table(c.by_session, "session"), False))
    if c.by_model:
        out.append(("by model", usage_table(c.by_model, "model"), False))
    if c.by_agent:
        out.append(("by agent", usage_table(c.by_agent, "agent"), False))
    if c.tools:
        out.append(("tools", tools_table(c.tools), False))
    if c.budget is not None:
        out.append(("budget", budget_table(c.budget), False))
    return out


def customer_text(c: Any) -> str:
    """A customer (a :class:`~agentmeter.CustomerUsage`): summary, breakdowns, tools, budget."""
    return _compose_text(f"customer {c.customer_id}: {_summary(c.usage)}", _customer_tables(c))


def customer_html(c: Any) -> str:
    """A customer as HTML tables."""
    return _compose_html(
        _header(f"customer {c.customer_id}", _summary(c.usage)), _customer_tables(c)
    )


# The value objects' __str__ / _repr_html_ find these through agentmeter._render.
_render.register(
    usage_repr=usage_repr,
    usage_text=usage_text,
    usage_html=usage_html,
    tool_stats_text=tool_stats_text,
    tool_stats_html=tool_stats_html,
    budget_text=budget_text,
    budget_html=budget_html,
    session_repr=session_repr,
    session_text=session_text,
    session_html=session_html,
    customer_text=customer_text,
    customer_html=customer_html,
    snapshot_repr=snapshot_repr,
    snapshot_text=snapshot_text,
    snapshot_html=snapshot_html,
    scope_text=scope_text,
    scope_html=scope_html,
)
