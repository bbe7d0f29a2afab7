"""The dashboard's pages: each turns a reader (:mod:`._source`) and a view (the
query parameters) into a heading and an HTML body.

Every id and name is HTML-escaped where it is shown and URL-encoded where it is
linked (ids travel as the ``id`` query parameter, so ``/``, ``..``, ``#`` or ``?``
in an id cannot change the path). Figures use the notebooks' formatting rules
(``agentmeter._display``): ``unpriced`` is never shown as ``$0``, ``~`` marks
estimated token counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from threading import Lock
from typing import Any
from urllib.parse import urlencode

from ..._display import DASH, fmt_count, fmt_ms, fmt_pct, fmt_usd
from ...models import BudgetStatus, SessionUsage, ToolStats, Usage
from . import _svg
from ._source import Range, SeriesRows, Source

__all__ = ["PAGES", "BadRequest", "Markup", "View", "parse_view"]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PRESETS: dict[str, timedelta | None] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "all": None,
}
PRESET_LABELS = {
    "24h": "last 24 hours",
    "7d": "last 7 days",
    "30d": "last 30 days",
    "90d": "last 90 days",
    "all": "all time",
}
STACKS = ("model", "customer", "agent")
PAGE_SIZE = 50
TOP = 10
MAX_BARS = 240  # more buckets than this are merged k at a time
HOURLY_UP_TO = timedelta(days=3)  # "auto" buckets: hours up to this span, then days
MAX_HOURS = 24 * 31  # an explicit hour bucket over a longer span falls back to days
NO_KEY = "(none)"


class Markup(str):
    """HTML that is already safe (built from escaped parts)."""

    __slots__ = ()


class BadRequest(ValueError):
    """A query parameter the page cannot use (answered with 400 and this message)."""


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def _cell(value: str) -> str:
    return value if isinstance(value, Markup) else esc(value)


# ---------------------------------------------------------------- the view
@dataclass
class View:
    """What a request asks for: the time range, the bucket, the stack, the search."""

    path: str
    r: Range = field(default_factory=Range)
    preset: str = "all"
    since_text: str = ""
    until_text: str = ""
    bucket: str = "auto"
    stack: str = "model"
    q: str = ""
    page: int = 1
    ident: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    notes: list[str] = field(default_factory=list)

    def keep(self) -> dict[str, str]:
        """The range parameters every link carries to the next page."""
        out: dict[str, str] = {}
        if self.since_text or self.until_text:
            if self.since_text:
                out["since"] = self.since_text
            if self.until_text:
                out["until"] = self.until_text
        elif self.preset != "all":
            out["range"] = self.preset
        if self.bucket != "auto":
            out["bucket"] = self.bucket
        return out

    def href(self, path: str, **extra: str | int | None) -> str:
        params = self.keep()
        for k, v in extra.items():
            if v is None or v == "":
                params.pop(k, None)
            else:
                params[k] = str(v)
        return path + ("?" + urlencode(params) if params else "")


def _parse_time(name: str, text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 date or time (2025-01-31 or 2025-01-31T12:00), "
            f"got {text!r}"
        ) from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_view(path: str, query: Mapping[str, str], now: datetime | None = None) -> View:
    """Read the common query parameters (``range``, ``since``, ``until``, ``bucket``,
    ``by``, ``q``, ``page``, ``id``).

    Raises:
        BadRequest: an unknown preset / bucket / stack, a bad time, since >= until.
    """
    view = View(path=path, now=now or datetime.now(UTC))
    preset = query.get("range", "") or "all"
    if preset not in PRESETS:
        raise BadRequest(f"range must be one of {', '.join(PRESETS)}, got {preset!r}")
    view.since_text = query.get("since", "").strip()
    view.until_text = query.get("until", "").strip()
    since = _parse_time("since", view.since_text) if view.since_text else None
    until = _parse_time("until", view.until_text) if view.until_text else None
    if since is None and until is None:
        view.preset = preset
        span = PRESETS[preset]
        if span is not None:  # on an hour boundary: the store reads whole-hour rollups
            since = _floor(view.now - span, HOUR)
    else:
        view.preset = "custom"
    if since is not None and until is not None and since >= until:
        raise BadRequest("since must be before until")
    view.r = Range(since, until)
    view.bucket = query.get("bucket", "") or "auto"
    if view.bucket not in ("auto", "hour", "day"):
        raise BadRequest(f"bucket must be auto, hour or day, got {view.bucket!r}")
    view.stack = query.get("by", "") or "model"
    if view.stack not in STACKS:
        raise BadRequest(f"by must be one of {', '.join(STACKS)}, got {view.stack!r}")
    view.q = query.get("q", "").strip()[:200]
    try:
        view.page = max(1, min(int(query.get("page", "1") or "1"), 10**6))
    except ValueError:
        raise BadRequest(f"page must be a number, got {query.get('page')!r}") from None
    view.ident = query.get("id", "")
    return view


def _floor(t: datetime, step: timedelta) -> datetime:
    t = t.astimezone(UTC)
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if step >= DAY else t


# ---------------------------------------------------------------- formatting
def fmt_time(t: datetime | None) -> str:
    return DASH if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_tokens(value: int, u: Usage | None = None) -> str:
    text = fmt_count(value)
    return f"~{text}" if u is not None and u.estimated_calls and value else text


def fmt_cost(u: Usage) -> str:
    return fmt_usd(u.cost_usd, u.unpriced_calls)


def tool_cost(t: ToolStats) -> str:
    if not t.llm_calls and not t.embedding_tokens and not t.cost_micros:
        return DASH  # nothing priced happened inside the tool
    return fmt_usd(t.cost_usd, t.unpriced_calls)


def _usd_micros(v: float) -> str:
    return fmt_usd(Decimal(round(v)).scaleb(-6))


def _compact(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            text = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return text + unit
    return f"{v:g}"


def _compact_usd(micros: float) -> str:
    dollars = micros / 1e6
    if dollars == 0:
        return "$0"
    if dollars >= 1000:
        return "$" + _compact(dollars)
    if dollars >= 1:
        return f"${dollars:,.2f}".rstrip("0").rstrip(".")
    return f"${dollars:.6f}".rstrip("0")


def link(path: str, key: str, view: View) -> Markup:
    return Markup(f'<a href="{esc(view.href(path, id=key, q=None, page=None))}">{esc(key)}</a>')


# ---------------------------------------------------------------- tables
@dataclass
class Col:
    header: str
    name: str  # data-col attribute: stable for tests and styling
    numeric: bool = True


def table(
    cols: Sequence[Col],
    rows: Iterable[tuple[str, Sequence[str], str]],
    *,
    cls: str = "",
    empty: str = "nothing in this range",
) -> Markup:
    """A data table: each row is (key, cells, row class); the first column is the key."""
    head = "".join(
        f'<th class="{"num" if c.numeric else "txt"}" data-col="{c.name}">{esc(c.header)}</th>'
        for c in cols
    )
    body = []
    for key, cells, row_cls in rows:
        tds = []
        for i, (c, v) in enumerate(zip(cols, cells, strict=True)):
            tag = "th" if i == 0 else "td"
            klass = ("num " if c.numeric else "") + c.name
            tds.append(f'<{tag} class="{klass}" data-col="{c.name}">{_cell(v)}</{tag}>')
        rc = f' class="{row_cls}"' if row_cls else ""
        body.append(f'<tr data-key="{esc(key)}"{rc}>{"".join(tds)}</tr>')
    if not body:
        return Markup(f'<p class="note empty">{esc(empty)}</p>')
    return Markup(
        f'<div class="scroll"><table class="data {cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _share(value: float, top: float) -> Markup:
    pct = 0.0 if top <= 0 else max(0.0, min(100.0, value / top * 100))
    return Markup(f'<span class="bar" style="width:{pct:.1f}%"></span>')


USAGE_COLS = (
    Col("tokens", "tokens"),
    Col("cost", "cost"),
    Col("LLM calls", "llm_calls"),
    Col("failed LLM", "failed_llm_calls"),
    Col("tool calls", "tool_calls"),
    Col("tool failures", "failed_tool_calls"),
)


def usage_cells(u: Usage) -> list[str]:
    return [
        fmt_tokens(u.total_tokens, u),
        fmt_cost(u),
        fmt_count(u.llm_calls),
        fmt_count(u.failed_llm_calls),
        fmt_count(u.tool_calls),
        fmt_count(u.failed_tool_calls),
    ]


def usage_table(
    key_header: str,
    key_col: str,
    usages: Mapping[str, Usage],
    view: View,
    *,
    page: str | None = None,
    extra: Callable[[str], list[str]] | None = None,
    extra_cols: Sequence[Col] = (),
    share: bool = False,
) -> Markup:
    """One row per key: tokens, cost, calls (the key links to its page when it has one).

    ``share=True`` is the overview's compact form: tokens, cost, LLM and tool calls,
    and a bar of the key's share of the tokens.
    """
    shown = [i for i, c in enumerate(USAGE_COLS) if not share or c.name in _COMPACT]
    cols = [Col(key_header, key_col, numeric=False), *(USAGE_COLS[i] for i in shown)]
    cols.extend(extra_cols)
    if share:
        cols.append(Col("share of tokens", "share", numeric=False))
    top = max((u.total_tokens for u in usages.values()), default=0)
    rows = []
    for k, u in usages.items():
        values = usage_cells(u)
        cells: list[str] = [link(page, k, view) if page else k, *(values[i] for i in shown)]
        if extra is not None:
            cells.extend(extra(k))
        if share:
            cells.append(_share(u.total_tokens, top))
        rows.append((k, cells, ""))
    return table(cols, rows)


_COMPACT = ("tokens", "cost", "llm_calls", "tool_calls")
_COMPACT_TOOLS = ("tool", "calls", "failed", "p95", "total_time", "cost")


# Most-read first, as in the notebooks' tables.
TOOL_COLS = (
    Col("tool", "tool", numeric=False),
    Col("calls", "calls"),
    Col("failed", "failed"),
    Col("success", "success"),
    Col("p50", "p50"),
    Col("p95", "p95"),
    Col("total time", "total_time"),
    Col("tokens", "tokens"),
    Col("cost", "cost"),
    Col("LLM calls", "llm_calls"),
    Col("ok", "ok"),
    Col("mean", "mean"),
    Col("max", "max"),
    Col("category", "category", numeric=False),
)


def failures_first(stats: Mapping[str, ToolStats]) -> list[tuple[str, ToolStats]]:
    """Failing tools first (most failures, then highest failure rate), then by calls."""
    return sorted(
        stats.items(),
        key=lambda kv: (
            -kv[1].failed,
            -(kv[1].failed / kv[1].calls if kv[1].calls else 0),
            -kv[1].calls,
            kv[0],
        ),
    )


def tools_table(
    items: Sequence[tuple[str, ToolStats]], *, empty: str = "no tool calls", compact: bool = False
) -> Markup:
    shown = [i for i, c in enumerate(TOOL_COLS) if not compact or c.name in _COMPACT_TOOLS]
    rows = []
    for name, t in items:
        cells = [
            name,
            fmt_count(t.calls),
            fmt_count(t.failed),
            fmt_pct(t.success_rate),
            fmt_ms(t.p50_ms),
            fmt_ms(t.p95_ms),
            fmt_ms(t.total_duration_ms if t.calls else None),
            fmt_count(t.total_tokens),
            tool_cost(t),
            fmt_count(t.llm_calls),
            fmt_count(t.ok),
            fmt_ms(t.mean_duration_ms),
            fmt_ms(t.max_duration_ms),
            t.category or DASH,
        ]
        rows.append((name, [cells[i] for i in shown], "failing" if t.failed else ""))
    return table([TOOL_COLS[i] for i in shown], rows, cls="tools", empty=empty)


def cards(items: Sequence[tuple[str, str, str, str]]) -> Markup:
    """Figure cards: (name for data-card, label, value, detail)."""
    out = []
    for name, label, value, detail in items:
        d = f'<div class="detail">{esc(detail)}</div>' if detail else ""
        out.append(
            f'<div class="card" data-card="{name}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(value)}</div>{d}</div>'
        )
    return Markup(f'<div class="cards">{"".join(out)}</div>')


def usage_cards(u: Usage) -> list[tuple[str, str, str, str]]:
    tok_detail = f"{fmt_count(u.input_tokens)} in · {fmt_count(u.output_tokens)} out"
    if u.embedding_tokens:
        tok_detail += f" · {fmt_count(u.embedding_tokens)} embedding"
    cost_detail = f"{u.unpriced_calls:,} unpriced calls not in it" if u.unpriced_calls else ""
    return [
        ("cost", "cost", fmt_cost(u), cost_detail),
        ("tokens", "tokens", fmt_tokens(u.total_tokens, u), tok_detail),
        ("llm_calls", "LLM calls", fmt_count(u.llm_calls), f"{u.failed_llm_calls:,} failed"),
        ("tool_calls", "tool calls", fmt_count(u.tool_calls), f"{u.failed_tool_calls:,} failed"),
    ]


# ---------------------------------------------------------------- time series
def choose_bucket(view: View, span: tuple[datetime | None, datetime | None]) -> str:
    """``hour`` or ``day``: the asked one, or by the length of the range."""
    lo = view.r.since or span[0]
    hi = view.r.until or (span[1] if view.r.since is None else view.now) or view.now
    length = (hi - lo) if lo is not None else timedelta(0)
    if view.bucket == "hour":
        if length > timedelta(hours=MAX_HOURS):
            view.notes.append(
                f"hourly buckets over {length.days} days would be {length // HOUR:,} bars: "
                "shown by day"
            )
            return "day"
        return "hour"
    if view.bucket == "day":
        return "day"
    return "hour" if length <= HOURLY_UP_TO else "day"


def series_auto(
    src: Source, view: View, by: str | None, **eq: str
) -> tuple[str, SeriesRows | None]:
    """(bucket, rows) of the range's time series. With ``auto`` and no start, the span
    of the data decides: read by day (a few rows) and, if its first and last days are
    at most HOURLY_UP_TO apart, again by hour -- cheaper than asking the raw events for the span."""
    if view.bucket != "auto" or view.r.since is not None:
        bucket = choose_bucket(view, (None, None))
        return bucket, src.series(bucket, by, view.r, **eq)
    rows = src.series("day", by, view.r, **eq)
    if rows:
        first, last = rows[0][0], rows[-1][0]
        if last - first <= HOURLY_UP_TO:  # at most 4 calendar days: 96 bars or fewer
            return "hour", src.series("hour", by, view.r, **eq)
    return "day", rows


@dataclass
class Chart:
    buckets: list[datetime]
    step: timedelta
    groups: dict[str | None, list[Usage | None]]


def gather(rows: SeriesRows, bucket: str, view: View) -> Chart | None:
    """The series on a contiguous axis (empty buckets filled), at most MAX_BARS bars."""
    if not rows:
        return None
    step = HOUR if bucket == "hour" else DAY
    starts = sorted({_floor(t, step) for t, _, _ in rows})
    lo = _floor(view.r.since, step) if view.r.since is not None else starts[0]
    hi = starts[-1]
    if view.r.since is not None:  # a preset or a custom range: draw the whole range
        end = min(view.r.until or view.now, view.now) - timedelta(microseconds=1)
        if end > hi:
            hi = _floor(end, step)
    lo = min(lo, starts[0])
    n = int((hi - lo) / step) + 1
    k = max(1, math.ceil(n / MAX_BARS))
    if k > 1:
        view.notes.append(f"each bar is {k} {bucket}s")
    nbars = math.ceil(n / k)
    buckets = [lo + step * k * i for i in range(nbars)]
    groups: dict[str | None, list[Usage | None]] = {}
    for t, key, u in rows:
        i = int((_floor(t, step) - lo) / step) // k
        slot = groups.setdefault(key, [None] * nbars)
        cur = slot[i]
        slot[i] = u if cur is None else cur + u
    return Chart(buckets, step * k, groups)


def stacked(
    chart: Chart, metric: Callable[[Usage], float], *, limit: int = 8
) -> Sequence[_svg.Series]:
    """(label, values) per group, largest first; beyond ``limit`` groups, one ``other``."""
    series = [
        (key, [0.0 if u is None else float(metric(u)) for u in values])
        for key, values in chart.groups.items()
    ]
    series = [s for s in series if sum(s[1]) > 0]
    series.sort(key=lambda s: (-sum(s[1]), s[0] or ""))
    named: list[_svg.Series] = [(NO_KEY if k is None else k, v) for k, v in series[:limit]]
    rest = series[limit:]
    if rest:
        named.append(("other", [sum(vals) for vals in zip(*(v for _, v in rest), strict=True)]))
    return named


def figure(
    title: str,
    name: str,
    chart: Chart,
    series: Sequence[_svg.Series],
    fmt: Callable[[float], str],
    axis_fmt: Callable[[float], str],
    *,
    width: int = 620,
    colours: Sequence[str] | None = None,
    integer: bool = False,
) -> Markup:
    if not series:
        body = '<p class="note empty">nothing to draw in this range</p>'
    else:
        svg = _svg.stacked_bars(
            chart.buckets,
            series,
            step=chart.step,
            fmt=fmt,
            axis_fmt=axis_fmt,
            label=title,
            width=width,
            colours=colours,
            integer=integer,
        )
        body = svg + _svg.legend(series, fmt, colours)
    return Markup(
        f'<figure class="chart" data-chart="{name}"><figcaption>{esc(title)}</figcaption>'
        f"{body}</figure>"
    )


# ---------------------------------------------------------------- the picker
def picker(view: View, *, stack: bool = False, hidden: Mapping[str, str] | None = None) -> Markup:
    opts = []
    for key in PRESETS:
        sel = " selected" if key == view.preset else ""
        opts.append(f'<option value="{key}"{sel}>{esc(PRESET_LABELS[key])}</option>')
    if view.preset == "custom":
        opts.append('<option value="" selected>custom dates</option>')
    buckets = "".join(
        f'<option value="{b}"{" selected" if b == view.bucket else ""}>{b}</option>'
        for b in ("auto", "hour", "day")
    )
    parts = [
        f'<form class="picker" method="get" action="{esc(view.path)}">',
        f'<label>range<select name="range">{"".join(opts)}</select></label>',
        f'<label>since (UTC)<input type="date" name="since" value="{esc(view.since_text[:10])}">'
        "</label>",
        f'<label>until (UTC, excl.)<input type="date" name="until" '
        f'value="{esc(view.until_text[:10])}"></label>',
        f'<label>bucket<select name="bucket">{buckets}</select></label>',
    ]
    if stack:
        stacks = "".join(
            f'<option value="{s}"{" selected" if s == view.stack else ""}>{s}</option>'
            for s in STACKS
        )
        parts.append(f'<label>stacked by<select name="by">{stacks}</select></label>')
    for k, v in (hidden or {}).items():
        parts.append(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">')
    parts.append('<button type="submit">apply</button></form>')
    return Markup("".join(parts))


def range_note(view: View, src: Source) -> str:
    if src.live:
        return (
            '<p class="note">A live tracker keeps totals, not timestamps: no time range or '
            "time series here (serve a database with <code>agentmeter serve --db</code> for "
            "them).</p>"
        )
    if view.preset == "custom":
        what = f"from {fmt_time(view.r.since)} to {fmt_time(view.r.until)}"
    else:
        what = PRESET_LABELS[view.preset]
        if view.r.since is not None:
            what += f" (since {fmt_time(view.r.since)})"
    return f'<p class="note range">Showing {esc(what)}.</p>'


def notes(view: View) -> str:
    return "".join(f'<p class="note">{esc(n)}</p>' for n in dict.fromkeys(view.notes))


# ---------------------------------------------------------------- parallel reads
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = Lock()


def run_all(src: Source, jobs: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run independent reads at once (a database answers them on several connections)."""
    global _POOL
    if src.live or len(jobs) < 2:  # one snapshot serves every read of a tracker
        return {k: fn() for k, fn in jobs.items()}
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agentmeter-dashboard")
    futures = {k: _POOL.submit(fn) for k, fn in jobs.items()}
    return {k: f.result() for k, f in futures.items()}


# ---------------------------------------------------------------- pages
Page = tuple[str, str]  # (heading, body HTML)


def overview_page(src: Source, view: View) -> Page:
    r = view.r
    jobs: dict[str, Callable[[], Any]] = {
        "n_sessions": lambda: src.count_keys("session", r),
        "n_customers": lambda: src.count_keys("customer", r),
        "customers": lambda: src.top("customer", r, TOP),
        "agents": lambda: src.top("agent", r, TOP),
        "models": lambda: src.top("model", r, TOP),
        "tools": lambda: src.tools(r),
        "series": lambda: series_auto(src, view, view.stack),
    }
    if src.live:
        jobs["totals"] = lambda: src.totals(r)
    got = run_all(src, jobs)
    bucket, rows = got["series"]
    # A database's series groups add up to its totals (events without the key are the
    # None group): one read less than asking for the totals apart.
    totals: Usage = got["totals"] if rows is None else sum((u for _, _, u in rows), Usage())
    out: list[str] = [] if src.live else [picker(view, stack=True)]
    out.append(range_note(view, src))
    out.append(
        cards(
            [
                *usage_cards(totals),
                ("sessions", "sessions", fmt_count(got["n_sessions"]), ""),
                ("customers", "customers", fmt_count(got["n_customers"]), ""),
            ]
        )
    )
    if rows is not None:
        chart = gather(rows, bucket, view)
        if chart is None:
            out.append('<p class="note empty">No usage in this range.</p>')
        else:
            by = view.stack
            tok_series = stacked(chart, lambda u: u.total_tokens)
            cost_series = stacked(chart, lambda u: u.cost_micros)
            known: dict[str, str] = {}  # one colour per group in both charts
            tok_colours = _svg.assign_colours([k for k, _ in tok_series], known)
            cost_colours = _svg.assign_colours([k for k, _ in cost_series], known)
            out.append('<div class="charts">')
            out.append(
                figure(
                    f"cost per {bucket}, by {by}",
                    "cost",
                    chart,
                    cost_series,
                    _usd_micros,
                    _compact_usd,
                    colours=cost_colours,
                )
            )
            out.append(
                figure(
                    f"tokens per {bucket}, by {by}",
                    "tokens",
                    chart,
                    tok_series,
                    lambda v: fmt_count(int(v)),
                    _compact,
                    colours=tok_colours,
                )
            )
            out.append("</div>")
            if totals.unpriced_calls:
                out.append(
                    f'<p class="note">{totals.unpriced_calls:,} unpriced calls are not in the '
                    "cost chart (no known price for their model).</p>"
                )
    out.append(notes(view))
    tools: dict[str, ToolStats] = got["tools"]
    top_tools = sorted(tools.items(), key=lambda kv: (-kv[1].total_duration_ms, kv[0]))[:TOP]
    sections = [
        (
            "top customers",
            "customers",
            usage_table(
                "customer", "customer", got["customers"], view, page="/customer", share=True
            ),
            view.href("/customers"),
        ),
        (
            "top agents",
            "agents",
            usage_table("agent", "agent", got["agents"], view, share=True),
            "",
        ),
        (
            "top models",
            "models",
            usage_table("model", "model", got["models"], view, share=True),
            "",
        ),
        (
            "top tools (by total time)",
            "tools",
            tools_table(top_tools, compact=True),
            view.href("/tools"),
        ),
    ]
    out.append('<div class="grid4">')
    for title, name, body, more in sections:
        more_link = f' <a class="more" href="{esc(more)}">all</a>' if more else ""
        out.append(
            f'<section data-section="{name}"><h2>{esc(title)}{more_link}</h2>{body}</section>'
        )
    out.append("</div>")
    return "Overview", "".join(out)


def _listing(src: Source, view: View, dimension: str, noun: str, page_path: str) -> Page:
    offset = (view.page - 1) * PAGE_SIZE
    total, page = src.listing(dimension, view.r, view.q, PAGE_SIZE, offset)
    out: list[str] = [
        f'<form class="search" method="get" action="{esc(view.path)}">'
        f'<label>search {esc(noun)} ids<input type="search" name="q" value="{esc(view.q)}" '
        f'placeholder="part of an id"></label>'
        + "".join(
            f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
            for k, v in view.keep().items()
        )
        + '<button type="submit">search</button></form>'
    ]
    if not src.live:
        out.append(picker(view, hidden={"q": view.q} if view.q else None))
    out.append(range_note(view, src))
    matching = f" matching {view.q!r}" if view.q else ""
    out.append(f'<p class="count" data-total="{total}">{total:,} {esc(noun)}s{esc(matching)}</p>')
    extra_cols: list[Col] = []
    extra: Callable[[str], list[str]] | None = None
    if dimension == "session" and not src.live:
        times = src.session_times(list(page))
        extra_cols = [Col("first seen", "first_seen", False), Col("last seen", "last_seen", False)]

        def extra(k: str) -> list[str]:
            lo, hi = times.get(k, (None, None))
            return [fmt_time(lo), fmt_time(hi)]

    out.append(
        usage_table(noun, noun, page, view, page=page_path, extra=extra, extra_cols=extra_cols)
    )
    pages = max(1, math.ceil(total / PAGE_SIZE))
    if pages > 1:
        prev = (
            f'<a rel="prev" href="{esc(view.href(view.path, q=view.q, page=view.page - 1))}">'
            "previous</a>"
            if view.page > 1
            else ""
        )
        nxt = (
            f'<a rel="next" href="{esc(view.href(view.path, q=view.q, page=view.page + 1))}">'
            "next</a>"
            if view.page < pages
            else ""
        )
        out.append(
            f'<div class="pager">{prev}<span>page {view.page:,} of {pages:,}</span>{nxt}</div>'
        )
    return f"{noun.capitalize()}s", "".join(out)


def sessions_page(src: Source, view: View) -> Page:
    return _listing(src, view, "session", "session", "/session")


def customers_page(src: Source, view: View) -> Page:
    return _listing(src, view, "customer", "customer", "/customer")


def _need_id(view: View, noun: str) -> str:
    if not view.ident:
        raise BadRequest(f"which {noun}? add ?id=<{noun} id>")
    return view.ident


def _calls_chart(src: Source, view: View, span: tuple[Any, Any], **eq: str) -> str:
    if src.live:
        return ""
    bucket = choose_bucket(view, span)
    rows = src.series(bucket, None, view.r, **eq)
    chart = gather(rows or [], bucket, view)
    if chart is None:
        return ""
    series = [
        ("LLM calls", [0.0 if u is None else u.llm_calls for u in chart.groups[None]]),
        (
            "tool calls, ok",
            [0.0 if u is None else u.tool_calls - u.failed_tool_calls for u in chart.groups[None]],
        ),
        (
            "tool calls, failed",
            [0.0 if u is None else u.failed_tool_calls for u in chart.groups[None]],
        ),
    ]
    return figure(
        f"calls per {bucket}",
        "calls",
        chart,
        series,
        lambda v: fmt_count(int(v)),
        _compact,
        width=1240,
        colours=(_svg.PALETTE[0], _svg.PALETTE[2], _svg.PALETTE[3]),
        integer=True,
    )


def _budget_section(src: Source, budget: BudgetStatus | None, noun: str) -> str:
    if not src.live:
        return (
            '<section data-section="budget"><h2>budget</h2><p class="note">Budgets live in the '
            "tracker that enforces them, not in the database: serve a live tracker "
            "(<code>create_app(tracker=...)</code>) to see them.</p></section>"
        )
    if budget is None:
        return (
            f'<section data-section="budget"><h2>budget</h2><p class="note">This {noun} has '
            "no budget.</p></section>"
        )
    return f'<section data-section="budget"><h2>budget</h2>{budget_table([budget])}</section>'


def session_page(src: Source, view: View) -> Page:
    sid = _need_id(view, "session")
    got = run_all(
        src,
        {"s": lambda: src.session(sid, view.r), "times": lambda: src.session_times([sid])},
    )
    s: SessionUsage = got["s"]
    lo, hi = got["times"].get(sid, (None, None))
    out: list[str] = [] if src.live else [picker(view, hidden={"id": sid})]
    out.append(range_note(view, src))
    items = usage_cards(s.usage)
    if lo is not None:
        items.append(("seen", "first seen", fmt_time(lo), f"last seen {fmt_time(hi)}"))
    out.append(cards(items))
    out.append(_calls_chart(src, view, (lo, hi), session=sid))
    out.append(notes(view))
    out.append(
        '<section data-section="tools"><h2>tools (failures first)</h2>'
        f"{tools_table(failures_first(s.tools))}</section>"
    )
    out.append(
        '<div class="stack">'
        f'<section data-section="models"><h2>by model</h2>'
        f"{usage_table('model', 'model', s.by_model, view)}</section>"
        f'<section data-section="agents"><h2>by agent</h2>'
        f"{usage_table('agent', 'agent', s.by_agent, view)}</section></div>"
    )
    out.append(_budget_section(src, s.budget, "session"))
    return f"Session {sid}", "".join(out)


def customer_page(src: Source, view: View) -> Page:
    cid = _need_id(view, "customer")
    c = src.customer(cid, view.r)
    out: list[str] = [] if src.live else [picker(view, hidden={"id": cid})]
    out.append(range_note(view, src))
    out.append(
        cards([*usage_cards(c.usage), ("sessions", "sessions", fmt_count(len(c.by_session)), "")])
    )
    if not src.live:
        bucket, rows = series_auto(src, view, "model", customer=cid)
        chart = gather(rows or [], bucket, view)
        if chart is not None:
            out.append(
                figure(
                    f"cost per {bucket}, by model",
                    "cost",
                    chart,
                    stacked(chart, lambda u: u.cost_micros),
                    _usd_micros,
                    _compact_usd,
                    width=1240,
                )
            )
    out.append(notes(view))
    ranked = sorted(c.by_session.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))
    shown = dict(ranked[:PAGE_SIZE])
    more = (
        f'<p class="note">The {PAGE_SIZE} largest of {len(ranked):,} sessions.</p>'
        if len(ranked) > PAGE_SIZE
        else ""
    )
    out.append(
        '<section data-section="sessions"><h2>sessions (largest first)</h2>'
        f"{usage_table('session', 'session', shown, view, page='/session')}{more}</section>"
    )
    out.append(
        '<section data-section="tools"><h2>tools (failures first)</h2>'
        f"{tools_table(failures_first(c.tools))}</section>"
    )
    out.append(
        '<div class="stack">'
        f'<section data-section="models"><h2>by model</h2>'
        f"{usage_table('model', 'model', c.by_model, view)}</section>"
        f'<section data-section="agents"><h2>by agent</h2>'
        f"{usage_table('agent', 'agent', c.by_agent, view)}</section></div>"
    )
    out.append(_budget_section(src, c.budget, "customer"))
    return f"Customer {cid}", "".join(out)


def tools_page(src: Source, view: View) -> Page:
    stats = src.tools(view.r)
    out: list[str] = [] if src.live else [picker(view)]
    out.append(range_note(view, src))
    calls = sum(t.calls for t in stats.values())
    failed = sum(t.failed for t in stats.values())
    out.append(
        cards(
            [
                ("tools", "tools", fmt_count(len(stats)), ""),
                ("calls", "tool calls", fmt_count(calls), f"{failed:,} failed"),
            ]
        )
    )
    out.append(
        '<section data-section="tools"><h2>per tool, across sessions (failures first)</h2>'
        f"{tools_table(failures_first(stats))}"
        '<p class="note">p50 / p95 come from a log-scale histogram (within ~2%); tokens and '
        "cost are those of the model calls made inside each tool.</p></section>"
    )
    return "Tools", "".join(out)


_LIMIT_LABELS = {
    "max_tokens": "tokens",
    "max_input_tokens": "input tokens",
    "max_output_tokens": "output tokens",
    "max_cost_usd": "cost",
    "max_llm_calls": "LLM calls",
    "max_tool_calls": "tool calls",
}
WARN_AT = 0.8


def _amount(name: str, value: int | Decimal) -> str:
    return fmt_usd(Decimal(value)) if "cost" in name else fmt_count(value)


def budget_state(b: BudgetStatus) -> tuple[str, str]:
    """(css class, text): exhausted, over 80% of a limit, or within limits."""
    if b.exhausted:
        return "bad", "exhausted"
    for name, limit in b.limits.items():
        if limit and float(b.used.get(name, 0) + b.reserved.get(name, 0)) / float(limit) >= WARN_AT:
            return "warn", f"over {WARN_AT:.0%} of {_LIMIT_LABELS.get(name, name)}"
    return "ok", "within limits"


BUDGET_COLS = (
    Col("owner", "owner", numeric=False),
    Col("period", "period", numeric=False),
    Col("alert", "alert", numeric=False),
    Col("limit", "limit", numeric=False),
    Col("max", "max"),
    Col("used", "used"),
    Col("reserved", "reserved"),
    Col("remaining", "remaining"),
    Col("% of max", "pct"),
    Col("", "meter", numeric=False),
)


def budget_table(budgets: Sequence[BudgetStatus]) -> Markup:
    rows = []
    for b in budgets:
        cls, state = budget_state(b)
        period = "the session" if b.owner.startswith("session") else DASH
        for name, limit in b.limits.items():
            used = b.used.get(name, 0)
            reserved = b.reserved.get(name, 0)
            share = float(used + reserved) / float(limit) if limit else 1.0
            mcls = "bad" if share >= 1 else "warn" if share >= WARN_AT else ""
            meter = Markup(
                f'<span class="meter {mcls}"><span style="width:{min(share, 1.0) * 100:.1f}%">'
                "</span></span>"
            )
            cells = [
                b.owner,
                period,
                Markup(f'<span class="badge {cls}">{esc(state)}</span>'),
                _LIMIT_LABELS.get(name, name),
                _amount(name, limit),
                _amount(name, used),
                _amount(name, reserved),
                _amount(name, b.remaining.get(name, 0)),
                fmt_pct(share),
                meter,
            ]
            rows.append((f"{b.owner}::{name}", cells, cls))
    return table(BUDGET_COLS, rows, cls="budgets", empty="no budget set")


def budgets_page(src: Source, view: View) -> Page:
    budgets = src.budgets()
    if budgets is None:
        body = (
            '<p class="note">Budgets live in the tracker that enforces them (in memory or in '
            "Redis), not in the database this server reads. Serve the live tracker "
            "(<code>create_app(tracker=...)</code>) to see every budget here with what is used, "
            "reserved and remaining.</p>"
        )
        return "Budgets", body
    order = sorted(
        budgets, key=lambda b: ({"bad": 0, "warn": 1, "ok": 2}[budget_state(b)[0]], b.owner)
    )
    exhausted = sum(1 for b in budgets if b.exhausted)
    out: list[str] = [
        cards(
            [
                ("budgets", "budgets", fmt_count(len(budgets)), ""),
                ("exhausted", "exhausted", fmt_count(exhausted), ""),
            ]
        ),
        budget_table(order),
        f'<p class="note">Alerts: a limit at {WARN_AT:.0%} or more of its maximum (used + '
        "reserved) is flagged; an exhausted budget refuses further calls.</p>",
    ]
    return "Budgets", "".join(out)


PAGES: dict[str, tuple[str, Callable[[Source, View], Page]]] = {
    "/": ("overview", overview_page),
    "/sessions": ("sessions", sessions_page),
    "/session": ("sessions", session_page),
    "/customers": ("customers", customers_page),
    "/customer": ("customers", customer_page),
    "/tools": ("tools", tools_page),
    "/budgets": ("budgets", budgets_page),
}
