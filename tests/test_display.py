"""HTML and text rendering (agentmeter._display), tested through its functions."""

from __future__ import annotations

import sys
import warnings
from decimal import Decimal

import html5lib
import pytest
from bs4 import BeautifulSoup

import agentmeter
from agentmeter import Budget, Tracker, _display
from agentmeter._display import (
    ToolTable,
    budget_html,
    fmt_count,
    fmt_ms,
    fmt_usd,
    scope_html,
    scope_text,
    session_html,
    session_repr,
    session_text,
    snapshot_html,
    snapshot_repr,
    snapshot_text,
    tool_stats_html,
    tool_stats_text,
    tool_table,
    usage_html,
    usage_repr,
    usage_text,
)


def strict_parse(fragment: str) -> BeautifulSoup:
    """Parse with html5lib in strict mode (any parse error raises), then with bs4."""
    html5lib.HTMLParser(strict=True).parseFragment(fragment)
    return BeautifulSoup(fragment, "html5lib")


def table_rows(soup: BeautifulSoup, caption_or_heading: str | None = None) -> list[list[str]]:
    """The rows (header included) of the first table, or of the one after a heading."""
    if caption_or_heading is None:
        table = soup.find("table")
    else:
        heading = soup.find(
            lambda t: t.name in ("h4", "summary") and t.get_text().startswith(caption_or_heading)
        )
        assert heading is not None, caption_or_heading
        table = heading.find_next("table")
    return [[c.get_text() for c in tr.find_all(["th", "td"])] for tr in table.find_all("tr")]


def column(rows: list[list[str]], header: str) -> dict[str, str]:
    i = rows[0].index(header)
    return {r[0]: r[i] for r in rows[1:]}


@pytest.fixture
def busy() -> Tracker:
    """Two sessions, priced / unpriced / estimated calls, tools that fail, a budget."""
    t = Tracker()
    t.set_price("acme-embed", input_per_mtok=0.02, output_per_mtok=0.0)
    t.set_budget("s2", Budget(max_tokens=3_000, max_cost_usd=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sid in ("s1", "s2"):
            with t.meter("turn", session_id=sid, agent_id="planner"):
                t.record_llm(
                    model="gpt-4o-mini",
                    input_tokens=12_000,
                    output_tokens=800,
                    cache_read_tokens=1_024,
                )
                t.record_llm(model="local-llama", input_tokens=300, output_tokens=50)
                t.record_embedding(model="acme-embed", input_tokens=4_000)
                for i in range(10):
                    t.record_tool_call(
                        tool="web_search", ok=i != 3, duration_ms=10.0 + i, category="search"
                    )
                    t.record_tool_call(tool="calc<&>", ok=True, duration_ms=0.5)
        t.record_llm(
            model="gpt-4o-mini", input_tokens=100, output_tokens=10, estimated=True, session_id="s3"
        )
    return t


# ------------------------------------------------------------------ formatting
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "unpriced"),
        (Decimal(0), "$0.00"),
        (Decimal("0.000240"), "$0.00024"),
        (Decimal("0.012300"), "$0.0123"),
        (Decimal("0.5"), "$0.50"),
        (Decimal("1234.5678"), "$1,234.57"),
    ],
)
def test_fmt_usd(value: Decimal | None, text: str) -> None:
    assert fmt_usd(value) == text


def test_fmt_usd_partly_unpriced_and_counts_and_ms() -> None:
    assert fmt_usd(Decimal("0.01"), unpriced_calls=2) == "$0.01 +2 unpriced"
    assert fmt_count(1_234_567) == "1,234,567"
    assert fmt_count(Decimal(5)) == "5"
    assert [fmt_ms(None), fmt_ms(0.4219), fmt_ms(12.34), fmt_ms(2_345.0)] == [
        "—",
        "0.42 ms",
        "12.3 ms",
        "2.35 s",
    ]


# ------------------------------------------------------------------ snapshots
def test_snapshot_html_is_valid_and_holds_the_numbers(busy: Tracker) -> None:
    snap = busy.snapshot()
    soup = strict_parse(snapshot_html(snap))
    text = soup.get_text(" ")
    assert "agentmeter snapshot" in text
    totals = table_rows(soup)
    assert column(totals, "LLM calls")["total"] == f"{snap.totals.llm_calls:,}"
    # the estimated call in s3 marks the totals' token counts
    assert column(totals, "total tokens")["total"] == f"~{snap.totals.total_tokens:,}"
    assert column(totals, "cost")["total"] == (
        f"{fmt_usd(snap.totals.cost_usd)} +{snap.totals.unpriced_calls} unpriced"
    )
    by_model = table_rows(soup, "by model")
    cost = column(by_model, "cost")
    assert cost["local-llama"] == "unpriced"  # never $0
    assert cost["gpt-4o-mini"].startswith("$0.00") and cost["gpt-4o-mini"] != "$0.00"
    assert column(by_model, "input")["gpt-4o-mini"].startswith("~")  # s3's estimate
    assert column(by_model, "input")["local-llama"] == "600"
    by_session = table_rows(soup, "by session")
    assert column(by_session, "input")["s1"] == "12,300"
    assert column(by_session, "tool calls")["s2"] == "20"
    tools = table_rows(soup, "by tool")
    calls = column(tools, "calls")
    assert calls == {"calc<&>": "20", "web_search": "20"}  # escaped, shown verbatim
    assert column(tools, "failed")["web_search"] == "2"
    assert column(tools, "success")["web_search"] == "90.0%"
    assert column(tools, "cost")["calc<&>"] == "—"  # no model call inside: no cost, not $0
    assert column(tools, "p50")["web_search"].endswith(" ms")
    assert soup.find("summary", string=lambda s: s and s.startswith("tools per session"))
    assert "estimated" in text and "unpriced" in text


def test_snapshot_html_escapes_names() -> None:
    t = Tracker()
    t.record_tool_call(
        tool="<script>alert(1)</script>", ok=True, duration_ms=1.0, session_id="<b>s</b>"
    )
    html = snapshot_html(t.snapshot())
    assert "<script>" not in html and "&lt;script&gt;" in html
    strict_parse(html)


def test_empty_snapshot_session_and_tools() -> None:
    t = Tracker()
    snap = t.snapshot()
    assert "nothing recorded" in strict_parse(snapshot_html(snap)).get_text()
    assert "nothing recorded" in snapshot_text(snap)
    assert "0 LLM calls" in snapshot_repr(snap)
    assert "no tool calls" in strict_parse(tool_stats_html({})).get_text()
    assert tool_stats_text({}) == "tool stats: no tool calls"
    assert usage_repr(snap.totals) == "Usage()"
    assert "nothing recorded" in usage_text(snap.totals)
    strict_parse(usage_html(snap.totals))


def test_snapshot_text_and_repr(busy: Tracker) -> None:
    snap = busy.snapshot()
    text = snapshot_text(snap)
    for part in ("by session", "by model", "by tool", "web_search", "unpriced", "12,300"):
        assert part in text
    # columns line up: every row of the tool table is as wide as its header
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("tool "))
    assert lines[head + 1].startswith("-----")
    r = snapshot_repr(snap)
    assert r.startswith("<Snapshot ") and "3 sessions" in r and "2 tools" in r
    assert "\n" not in r


# ------------------------------------------------------------------ sessions
def test_session_html_text_repr(busy: Tracker) -> None:
    s = busy.session("s2")
    soup = strict_parse(session_html(s))
    text = soup.get_text(" ")
    assert "session s2" in text
    tools = table_rows(soup, "tools")
    assert column(tools, "calls") == {"calc<&>": "10", "web_search": "10"}
    assert column(tools, "ok")["web_search"] == "9"
    budget = soup.find("caption", string=lambda c: c and "budget of session 's2'" in c)
    assert budget is not None and "exhausted" in budget.get_text()  # 17,150 tokens > 3,000
    rows = [
        [c.get_text() for c in tr.find_all(["th", "td"])]
        for tr in budget.find_parent("table").find_all("tr")
    ]
    assert column(rows, "max") == {"tokens": "3,000", "cost": "$0.50"}
    assert column(rows, "used")["tokens"] == f"{s.usage.total_tokens:,}"
    assert "session s2" in session_text(s) and "budget of session 's2'" in session_text(s)
    r = session_repr(s)
    assert r.startswith("<SessionUsage 's2'") and "budget exhausted" in r


# ------------------------------------------------------------------ tools
def test_tool_table_wrapper(busy: Tracker) -> None:
    stats = busy.tool_stats()
    table = tool_table(stats)
    assert isinstance(table, ToolTable) and isinstance(table, dict)
    assert table == stats and tool_table(table) is table
    soup = strict_parse(table._repr_html_())
    assert column(table_rows(soup), "calls")["web_search"] == "20"
    assert str(table).startswith("tool stats\ntool ")
    assert "web_search" in repr(table)  # still a dict's repr


def test_tool_stats_show_tokens_and_cost_spent_inside() -> None:
    t = Tracker()

    @t.metered_tool(category="search")
    def search() -> None:
        t.record_llm(model="gpt-4o-mini", input_tokens=2_000, output_tokens=100)

    search()
    stats = t.tool_stats()
    rows = table_rows(strict_parse(tool_stats_html(stats)))
    assert column(rows, "tokens")["search"] == "2,100"
    assert column(rows, "cost")["search"] == fmt_usd(stats["search"].cost_usd)
    assert column(rows, "category")["search"] == "search"
    assert "search" in tool_stats_text(stats)


def test_budget_html() -> None:
    t = Tracker()
    t.set_budget("b", Budget(max_llm_calls=2, max_cost_usd=1))
    t.record_llm(model="gpt-4o-mini", input_tokens=10, output_tokens=1, session_id="b")
    status = t.budget_status("b")
    assert status is not None
    rows = table_rows(strict_parse(budget_html(status)))
    assert column(rows, "used")["llm calls"] == "1"
    assert column(rows, "% of max")["llm calls"] == "50.0%"
    assert column(rows, "max")["cost"] == "$1.00"


# ------------------------------------------------------------------ scopes
def test_scope_html_and_text() -> None:
    t = Tracker()
    with t.meter("turn", session_id="s1", agent_id="a", budget=Budget(max_tokens=100)) as outer:
        with t.meter("step") as inner:
            t.record_llm(model="gpt-4o-mini", input_tokens=40, output_tokens=5)
        open_html = scope_html(outer)
    assert "open" in strict_parse(open_html).get_text()
    soup = strict_parse(scope_html(inner))
    assert "scope turn/step" in soup.get_text()
    assert column(table_rows(soup), "total tokens")["total"] == "45"
    text = scope_text(outer)
    assert "scope turn (session s1, agent a, closed after" in text
    assert "budget of scope 'turn'" in text


def test_import_agentmeter_stays_light() -> None:
    """The display layer is standard library only; pandas / matplotlib are never imported."""
    import subprocess

    code = (
        "import sys, agentmeter, agentmeter._display, agentmeter.frames, agentmeter.plots;"
        "bad = {'pandas', 'matplotlib'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert agentmeter.__name__ == "agentmeter" and _display.__name__ == "agentmeter._display"


# ------------------------------------------------------------------ fitting a notebook page
MOST_READ_USAGE = [
    "total tokens",
    "cost",
    "LLM calls",
    "LLM failures",
    "tool calls",
    "tool failures",
]
MOST_READ_TOOLS = ["calls", "failed", "success", "p50", "p95", "cost"]


def _leads_with(headers: list[str], most_read: list[str]) -> bool:
    """The most-read columns shown (optional ones are left out when zero) come first, in order."""
    shown = [h for h in most_read if h in headers]
    return len(shown) >= 3 and headers[1 : 1 + len(shown)] == shown


def _tables(fragment: str) -> list[tuple[list[str], object]]:
    soup = strict_parse(fragment)
    return [
        ([th.get_text() for th in t.find("thead").find_all("th")], t)
        for t in soup.find_all("table", class_="agentmeter-table")
    ]


def test_most_read_columns_come_first(busy: Tracker) -> None:
    snap = busy.snapshot()
    tables = _tables(snapshot_html(snap))
    usage = [h for h, _ in tables if "total tokens" in h]
    tools = [h for h, _ in tables if "p95" in h]
    assert len(usage) >= 4 and len(tools) >= 2
    for headers in usage:  # the totals, by session / model / agent / provider tables
        assert _leads_with(headers, MOST_READ_USAGE), headers
    for headers in tools:  # by tool, tools per session, by category
        assert headers[1:7] == MOST_READ_TOOLS, headers
    assert "tool failures" in usage[0] and "LLM failures" not in usage[0]  # none failed
    # by tool category: the key is the category, no category column again
    by_cat = next(h for h, _ in tables if h[0] == "category")
    assert "category" not in by_cat[1:]
    by_tool = next(h for h, _ in tables if h[0] == "tool")
    assert by_tool[-1] == "category"
    session_tables = _tables(session_html(busy.session("s2")))
    assert _leads_with(session_tables[0][0], MOST_READ_USAGE)
    assert next(h for h, _ in session_tables if h[0] == "tool")[1:7] == MOST_READ_TOOLS
    # text tables use the same order
    line = next(x for x in snapshot_text(snap).splitlines() if x.startswith("tool "))
    assert line.split()[1:4] == ["calls", "failed", "success"]


def test_every_table_scrolls_inside_its_own_box(busy: Tracker) -> None:
    for fragment in (
        snapshot_html(busy.snapshot()),
        session_html(busy.session("s1")),
        tool_stats_html(busy.tool_stats()),
    ):
        soup = strict_parse(fragment)
        tables = soup.find_all("table", class_="agentmeter-table")
        assert tables
        for t in tables:
            box = t.parent
            assert box.name == "div" and "agentmeter-scroll" in box["class"]
            style = box["style"].replace(" ", "")
            assert "overflow-x:auto" in style and "max-width:100%" in style


# A Jupyter cell on a 1280 px page: JupyterLab's output area is ~1,100 px wide and
# clips what does not fit (that is how the failures column got cut off).
_FIT_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body{margin:0;font-family:sans-serif} .cell{width:1100px;margin-left:90px;overflow:hidden}
</style></head><body><div class="cell" id="cell">%s</div><script>
const cell = document.getElementById("cell").getBoundingClientRect();
const out = [];
document.querySelectorAll("table.agentmeter-table").forEach(function (t, i) {
  const box = t.closest(".agentmeter-scroll");
  const b = (box || t).getBoundingClientRect();
  const heads = Array.from(t.querySelectorAll("thead th")).slice(0, 7);
  const visible = heads.filter(function (h) {
    const r = h.getBoundingClientRect(); return r.right <= Math.min(b.right, cell.right) + 0.5;
  }).length;
  out.push([i, box ? 1 : 0, Math.round(b.right - cell.right), visible, heads.length,
            box ? box.scrollWidth - box.clientWidth : 0, t.offsetWidth]);
});
document.body.setAttribute("data-fit", JSON.stringify(out));
document.body.setAttribute("data-page-overflow",
  String(document.documentElement.scrollWidth - window.innerWidth));
</script></body></html>"""


def test_tables_fit_a_1280px_notebook_page_in_chromium(busy: Tracker, tmp_path) -> None:
    """Laid out by a real browser: each table's box stays inside the cell, its first
    columns are visible without scrolling, and the wider ones scroll inside their box."""
    import json
    import re
    import shutil
    import subprocess

    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
            if shutil.which(b)
        ),
        None,
    )
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    # a wide snapshot: every optional column is shown
    t = busy
    t.record_llm(
        model="gpt-4o-mini",
        input_tokens=5_000,
        output_tokens=900,
        cache_read_tokens=100,
        cache_write_tokens=50,
        reasoning_tokens=300,
        session_id="a-rather-long-session-identifier-0001",
        agent_id="researcher",
    )
    t.record_cache_hit(tokens_saved=200, session_id="s1")
    t.record_cache_miss(session_id="s1")
    fragment = snapshot_html(t.snapshot()) + session_html(t.session("s2"))
    page = tmp_path / "fit.html"
    page.write_text(_FIT_PAGE % fragment, encoding="utf-8")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,4000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    fit = json.loads(html_unescape(re.search(r'data-fit="([^"]*)"', dom).group(1)))
    overflow = int(re.search(r'data-page-overflow="(-?\d+)"', dom).group(1))
    assert overflow <= 0, "the page itself scrolls sideways"
    assert len(fit) >= 8
    widest = max(row[6] for row in fit)
    assert widest > 1100, "the test needs a table wider than the cell"
    for _i, boxed, past_cell, visible, heads, _scroll, _width in fit:
        assert boxed == 1
        assert past_cell <= 0, "a table box sticks out of the cell (clipped there)"
        assert visible == heads, "a most-read column is not in view without scrolling"
    assert any(row[5] > 0 for row in fit), "the wide table should scroll inside its box"


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
