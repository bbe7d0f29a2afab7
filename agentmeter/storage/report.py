"""Usage reports of a stored database: text tables, JSON or CSV -- one set of numbers.

``render("agentmeter.db")`` is what ``agentmeter report`` prints (and what the
demo ends with): the totals, then one breakdown per section. Sections
(``--by``): ``customer``, ``session``, ``agent``, ``model``, ``tool``, ``day``,
``hour`` and ``tag:KEY``; filters: ``customer``, ``session``, ``tags``
(``{key: value}``, all must match), ``since`` / ``until``.

Columns
-------
Every format carries the same figures under the same names -- the fields of
:class:`~agentmeter.Usage`, which are also the REST API's and ``UsageStore``'s:

========================  ==============  ================================================
JSON / CSV / REST name    table heading   meaning
========================  ==============  ================================================
``llm_calls``             llm calls       chat / completion calls (never embeddings)
``failed_llm_calls``      failed llm      LLM calls that raised
``input_tokens``          input           LLM prompt tokens, cached ones included
``output_tokens``         output          LLM completion tokens, reasoning included
``cache_read_tokens``     cache read      prompt tokens read from the provider's cache
``cache_write_tokens``    cache write     prompt tokens written to the provider's cache
``reasoning_tokens``      reasoning       reasoning tokens (part of ``output_tokens``)
``embedding_calls``       emb calls       embedding calls (not in ``llm_calls``)
``embedding_tokens``      emb tokens      embedding input tokens (not in ``input_tokens``)
``total_tokens``          total tokens    ``input + output + embedding`` tokens
``cost_usd``              cost usd        dollars of the priced calls (see below)
``cost_micros``           --              the same cost in integer micro-USD
``unpriced_calls``        unpriced        LLM / embedding calls whose model had no price
``estimated_calls``       estimated       LLM / embedding calls with estimated counts
``tool_calls``            tool calls      tool calls
``failed_tool_calls``     failed tools    tool calls that failed
``tool_duration_ms``      --              summed tool-call duration, ms
``llm_latency_ms``        --              summed LLM-call latency, ms
``cache_hits``            --              semantic-cache hits recorded
``cache_misses``          --              semantic-cache misses recorded
``tokens_saved``          --              tokens the cache hits saved
========================  ==============  ================================================

``tool`` rows also carry ``category``, ``p50_ms`` and ``p95_ms`` (tool-call
duration percentiles; JSON: ``tool_stats``, the full :class:`~agentmeter.ToolStats`).

**Cost** is always a decimal string with exactly six places (``"0.000000"``,
``"1.234500"``; the table prints the same digits): cost is counted in integer
micro-USD, so the string is exact. It is empty in CSV, ``null`` in JSON and
``-`` in the table only when calls were made and none of them had a price
(``unpriced_calls`` says how many calls a partial cost misses).

**Rows add up.** Each section's rows sum to the totals: besides one row per key
it has a ``none`` row (usage recorded without that key: no session, outside any
tool, no such tag) and, with ``limit``, an ``other`` row (the keys past the
limit). CSV marks them in its ``row`` column (``total``, ``key``, ``none``,
``other``), JSON lists them under ``unattributed`` and ``others`` (and how many
keys ``others`` sums under ``other_keys``), the table prints them as ``(none)``
and ``(N more)`` with a line saying how to list them (zero rows are not
printed). Duration columns (floats) add up to rounding.

**Sessions are capped.** Without ``limit``, the session section lists the
:data:`SESSION_ROWS` largest sessions and sums the others in its ``other`` row
(``--limit N`` lists more, ``--session ID`` reports one): a report reads one
page of sessions, however many the history holds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import _fields
from ..models import ToolStats, Usage

if TYPE_CHECKING:
    from .query import UsageStore

__all__ = [
    "COLUMNS",
    "DEFAULT_SECTIONS",
    "FORMATS",
    "SECTIONS",
    "SESSION_ROWS",
    "TABLE_COLUMNS",
    "Report",
    "collect",
    "format_usd",
    "parse_section",
    "render",
]

FORMATS = ("table", "json", "csv")
SECTIONS = ("customer", "session", "agent", "model", "tool", "day", "hour", "tag:KEY")
DEFAULT_SECTIONS = ("session", "model", "agent", "tool")
# Sessions grow with history: without a limit, the session section lists the largest
# SESSION_ROWS and sums the rest in one row (so that a report reads a page, whatever
# the number of sessions). Other sections list every key unless a limit is given.
SESSION_ROWS = 20
_KEYED = ("customer", "session", "agent", "model", "tool")
Progress = Callable[[str], None]
_TAG_KEY = re.compile(r"^tag:(.{1,64})$", re.DOTALL)

# The documented names (see the module docstring), in CSV order, and their meaning.
COLUMNS: dict[str, str] = {
    "llm_calls": "Chat / completion calls (embedding calls are never counted here)",
    "failed_llm_calls": "LLM calls that raised",
    "input_tokens": "LLM prompt tokens, cached ones included (embedding tokens never)",
    "output_tokens": "LLM completion tokens, reasoning tokens included",
    "cache_read_tokens": "Prompt tokens read from the provider's cache (part of input_tokens)",
    "cache_write_tokens": "Prompt tokens written to the provider's cache (part of input_tokens)",
    "reasoning_tokens": "Reasoning tokens (part of output_tokens)",
    "embedding_calls": "Embedding calls (not in llm_calls)",
    "embedding_tokens": "Embedding input tokens (not in input_tokens)",
    "total_tokens": "input_tokens + output_tokens + embedding_tokens",
    "cost_usd": "Dollars of the priced calls, a decimal string with six places "
    "('0.000000'); null when calls were made and none was priced",
    "cost_micros": "The same cost in integer micro-USD",
    "unpriced_calls": "LLM and embedding calls whose model had no known price",
    "estimated_calls": "LLM and embedding calls whose token counts were estimated",
    "tool_calls": "Tool calls",
    "failed_tool_calls": "Tool calls that failed",
    "tool_duration_ms": "Summed duration of the tool calls, milliseconds",
    "llm_latency_ms": "Summed latency of the LLM calls, milliseconds",
    "cache_hits": "Semantic-cache hits recorded",
    "cache_misses": "Semantic-cache misses recorded",
    "tokens_saved": "Tokens the semantic-cache hits saved",
}
assert set(COLUMNS) == {*_fields.FIELDS, "total_tokens", "cost_usd"}
# The table's columns: (name, heading).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("llm_calls", "llm calls"),
    ("failed_llm_calls", "failed llm"),
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache read"),
    ("cache_write_tokens", "cache write"),
    ("reasoning_tokens", "reasoning"),
    ("embedding_calls", "emb calls"),
    ("embedding_tokens", "emb tokens"),
    ("total_tokens", "total tokens"),
    ("cost_usd", "cost usd"),
    ("unpriced_calls", "unpriced"),
    ("estimated_calls", "estimated"),
    ("tool_calls", "tool calls"),
    ("failed_tool_calls", "failed tools"),
)
TOOL_EXTRAS: tuple[tuple[str, str], ...] = (
    ("category", "category"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
)
_INT_FIELDS = [f for f in _fields.FIELDS if f not in _fields.FLOAT_FIELDS]


def format_usd(value: Decimal | None) -> str:
    """A cost as every surface writes it: six decimal places, ``""`` when unpriced."""
    return "" if value is None else f"{value:.6f}"


def parse_section(text: str) -> str:
    """Validate one section name (``customer`` ... ``hour`` or ``tag:KEY``).

    Raises:
        ValueError: naming the accepted sections.
    """
    value = text.strip()
    if value in SECTIONS[:-1] or _TAG_KEY.match(value):
        return value
    raise ValueError(f"unknown section {text!r}: choose from {', '.join(SECTIONS[:-1])} or tag:KEY")


def _label(section: str) -> str:
    return f"tag {section[4:]}" if section.startswith("tag:") else section


def _usage_sum(rows: Sequence[Usage]) -> list[Any]:
    acc: list[Any] = _fields.zeros()
    for u in rows:
        acc = [a + b for a, b in zip(acc, u.to_row(), strict=True)]
    return acc


def _minus(total: Usage, parts: list[Any]) -> Usage:
    out: list[Any] = []
    for name, a, b in zip(_fields.FIELDS, total.to_row(), parts, strict=True):
        out.append(round(a - b, 6) if name in _fields.FLOAT_FIELDS else a - b)
    return Usage.from_row(out)


def _is_zero(u: Usage) -> bool:
    return not any(getattr(u, f) for f in _INT_FIELDS)


@dataclass
class Section:
    """One breakdown: its rows (largest first, or by time), and what completes the sum."""

    name: str
    rows: dict[str, Usage]
    none: Usage = field(default_factory=Usage)
    others: Usage = field(default_factory=Usage)
    other_keys: int = 0


@dataclass
class Report:
    """The figures of one report (what every format writes)."""

    database: str
    since: datetime | None
    until: datetime | None
    filters: dict[str, Any]
    events: int
    totals: Usage
    sections: list[Section]
    tool_stats: dict[str, ToolStats] = field(default_factory=dict)


def _bucket_key(start: datetime, bucket: str) -> str:
    return start.strftime("%Y-%m-%d") if bucket == "day" else start.strftime("%Y-%m-%dT%H:%MZ")


def collect(
    db: str | os.PathLike[str] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    customer: str | None = None,
    session: str | None = None,
    tags: Mapping[str, str] | None = None,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    limit: int | None = None,
    progress: Progress | None = None,
    store: UsageStore | None = None,
) -> Report:
    """The report's figures, read from the store's rollups."""
    sections = [parse_section(s) for s in sections]
    sections = list(dict.fromkeys(sections))  # each once, in the order asked
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    say = progress or (lambda _msg: None)
    own = store is None
    if store is None:
        from .query import UsageStore

        store = UsageStore(db)
    st = store
    f: dict[str, Any] = {"since": since, "until": until, "customer": customer, "session": session}
    if tags:
        f["tags"] = dict(tags)
    try:
        from .engine import redact

        say("counting events")
        events = st.count(**f)
        say(f"aggregating {events:,} events")
        totals = st.totals(**f)
        out: list[Section] = []
        tool_stats: dict[str, ToolStats] = {}
        for name in sections:
            say(f"grouping by {name}")
            cap = limit if limit is not None else SESSION_ROWS if name == "session" else None
            if cap is not None and name in _KEYED:
                # One page, largest first; the rest from two indexed reads (how many
                # keys, the usage without a key): no listing of every session.
                page = st.by(name, **f, limit=cap)
                none = st.unkeyed(name, **f)
                n_keys = len(page) if len(page) < cap else st.count_keys(name, **f)
                section = Section(
                    name=name,
                    rows=page,
                    none=none,
                    others=_minus(_minus(totals, _usage_sum(list(page.values()))), none.to_row()),
                    other_keys=n_keys - len(page),
                )
            else:
                if name in ("day", "hour"):
                    series = st.timeseries(bucket=name, **f)
                    rows = {_bucket_key(start, name): u for start, _key, u in series}
                else:
                    rows = st.by(name, **f)
                keys = list(rows)
                shown = keys[:cap] if cap else keys
                rest = [rows[k] for k in keys[len(shown) :]]
                section = Section(
                    name=name,
                    rows={k: rows[k] for k in shown},
                    none=_minus(totals, _usage_sum(list(rows.values()))),
                    others=Usage.from_row(_usage_sum(rest)),
                    other_keys=len(rest),
                )
            out.append(section)
            if name == "tool":
                tf = {k: v for k, v in f.items() if k != "session"}
                stats = st.tool_stats(session, **tf)
                tool_stats = {k: stats[k] for k in section.rows if k in stats}
        filters: dict[str, Any] = {
            "customer": customer,
            "session": session,
            "tags": dict(tags) if tags else {},
        }
        return Report(
            database=redact(st.url),
            since=since,
            until=until,
            filters=filters,
            events=events,
            totals=totals,
            sections=out,
            tool_stats=tool_stats,
        )
    finally:
        if own:
            st.close()


# ------------------------------------------------------------------ formats
def _cell(u: Usage, name: str) -> str:
    if name == "cost_usd":
        return format_usd(u.cost_usd) or "-"
    value = getattr(u, name)
    return f"{value:,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


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


def _describe(r: Report) -> str:
    parts = []
    if r.since or r.until:
        start = r.since.isoformat() if r.since else "the start"
        end = r.until.isoformat() if r.until else "now"
        parts.append(f"from {start} until {end}")
    if r.filters["customer"] is not None:
        parts.append(f"customer {r.filters['customer']!r}")
    if r.filters["session"] is not None:
        parts.append(f"session {r.filters['session']!r}")
    for k, v in r.filters["tags"].items():
        parts.append(f"tag {k}={v}")
    return (", " + ", ".join(parts)) if parts else ""


def _summary(t: Usage) -> list[str]:
    cost = format_usd(t.cost_usd) or "-"
    return [
        f"total: {t.total_tokens:,} tokens, cost {cost} USD",
        f"  llm: {t.llm_calls:,} calls ({t.failed_llm_calls:,} failed), "
        f"{t.input_tokens:,} input ({t.cache_read_tokens:,} cache read, "
        f"{t.cache_write_tokens:,} cache write), "
        f"{t.output_tokens:,} output ({t.reasoning_tokens:,} reasoning)",
        f"  embedding: {t.embedding_calls:,} calls, {t.embedding_tokens:,} tokens",
        f"  tools: {t.tool_calls:,} calls ({t.failed_tool_calls:,} failed)",
        f"  unpriced calls: {t.unpriced_calls:,}, estimated calls: {t.estimated_calls:,}",
    ]


def _as_table(r: Report) -> str:
    heads = [h for _, h in TABLE_COLUMNS]
    names = [n for n, _ in TABLE_COLUMNS]
    out = [f"agentmeter report: {r.events:,} events{_describe(r)}", *_summary(r.totals)]
    for s in r.sections:
        is_tool = s.name == "tool"
        out.append("")
        out.append(f"by {_label(s.name)}:")
        if not s.rows and _is_zero(s.none):
            out.append(f"  (no {_label(s.name)} recorded)")
            continue
        table = [[_label(s.name), *heads, *([h for _, h in TOOL_EXTRAS] if is_tool else [])]]
        for key, u in s.rows.items():
            row = [key, *(_cell(u, n) for n in names)]
            if is_tool:
                t = r.tool_stats.get(key)
                row += [
                    (t.category if t else "") or "-",
                    _ms(t.p50_ms if t else None),
                    _ms(t.p95_ms if t else None),
                ]
            table.append(row)
        extras = ["", "", ""] if is_tool else []
        if s.other_keys:
            table.append([f"({s.other_keys:,} more)", *(_cell(s.others, n) for n in names)])
            table[-1] += extras
        if not _is_zero(s.none):
            table.append(["(none)", *(_cell(s.none, n) for n in names), *extras])
        out.append(_format_table(table))
        if s.other_keys:
            what = f"{s.name}s" if s.name in _KEYED else f"{_label(s.name)} rows"
            one = f"--{s.name} ID shows one, " if s.name in ("customer", "session") else ""
            out.append(
                f"  {s.other_keys:,} more {what} in the ({s.other_keys:,} more) row: "
                f"{one}--limit N lists more"
            )
    return "\n".join(out) + "\n"


def _usage_json(u: Usage) -> dict[str, Any]:
    return u.model_dump(mode="json")


def _as_json(r: Report) -> str:
    data: dict[str, Any] = {
        "database": r.database,
        "since": r.since.isoformat() if r.since else None,
        "until": r.until.isoformat() if r.until else None,
        "filters": r.filters,
        "events": r.events,
        "sections": [s.name for s in r.sections],
        "totals": _usage_json(r.totals),
    }
    for s in r.sections:
        data[f"by_{s.name}"] = {k: _usage_json(u) for k, u in s.rows.items()}
    data["unattributed"] = {s.name: _usage_json(s.none) for s in r.sections}
    data["others"] = {s.name: _usage_json(s.others) for s in r.sections}
    data["other_keys"] = {s.name: s.other_keys for s in r.sections}
    if any(s.name == "tool" for s in r.sections):
        data["tool_stats"] = {
            k: t.model_dump(mode="json", exclude={"duration_histogram"})
            for k, t in r.tool_stats.items()
        }
    return json.dumps(data, indent=2) + "\n"


CSV_COLUMNS: tuple[str, ...] = ("section", "row", "name", *COLUMNS, "category", "p50_ms", "p95_ms")


def _as_csv(r: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def usage_cells(u: Usage) -> list[Any]:
        return [format_usd(u.cost_usd) if n == "cost_usd" else getattr(u, n) for n in COLUMNS]

    w.writerow(["total", "total", "", *usage_cells(r.totals), "", "", ""])
    for s in r.sections:
        for key, u in s.rows.items():
            extras: list[Any] = ["", "", ""]
            t = r.tool_stats.get(key) if s.name == "tool" else None
            if t is not None:
                extras = [
                    t.category,
                    "" if t.p50_ms is None else f"{t.p50_ms:.3f}",
                    "" if t.p95_ms is None else f"{t.p95_ms:.3f}",
                ]
            w.writerow([s.name, "key", key, *usage_cells(u), *extras])
        if s.other_keys:
            w.writerow([s.name, "other", "", *usage_cells(s.others), "", "", ""])
        if not _is_zero(s.none):
            w.writerow([s.name, "none", "", *usage_cells(s.none), "", "", ""])
    return buf.getvalue()


def render(
    db_url: str | os.PathLike[str] | None = None,
    fmt: str = "table",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    customer: str | None = None,
    session: str | None = None,
    tags: Mapping[str, str] | None = None,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    limit: int | None = None,
    progress: Progress | None = None,
    store: UsageStore | None = None,
) -> str:
    """The report of a stored database as text.

    Args:
        db_url: A path (SQLite) or SQLAlchemy URL; default ``$AGENTMETER_DB`` or
            ``./agentmeter.db``.
        fmt: ``"table"`` (aligned text), ``"json"`` or ``"csv"``.
        since: Only events at or after this time (naive datetimes are UTC).
        until: Only events before this time.
        customer: Only this customer's events.
        session: Only this session's events.
        tags: Only events carrying every one of these tags.
        sections: Which breakdowns: ``"customer"``, ``"session"``, ``"agent"``,
            ``"model"``, ``"tool"``, ``"day"``, ``"hour"``, ``"tag:KEY"``.
        limit: At most this many rows per breakdown (largest first; the rest
            summed in one ``other`` row). ``None``: every key, but the session
            section's :data:`SESSION_ROWS` largest.
        progress: Called with a short message before each step (e.g. print to stderr).
        store: Read this open store instead of opening ``db_url``.

    Raises:
        agentmeter.storage.DatabaseError: the database is missing, corrupt or not agentmeter's.
        ValueError: unknown format or section.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {list(FORMATS)}, got {fmt!r}")
    report = collect(
        db_url,
        since=since,
        until=until,
        customer=customer,
        session=session,
        tags=tags,
        sections=sections,
        limit=limit,
        progress=progress,
        store=store,
    )
    if fmt == "json":
        return _as_json(report)
    if fmt == "csv":
        return _as_csv(report)
    return _as_table(report)
