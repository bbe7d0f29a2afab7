"""The dashboard (agentmeter.server.dashboard): every page, its auth, and its figures
checked against the REST API's JSON for the same database (or live tracker)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from storage_util import raw_event

pytest.importorskip("fastapi", reason="the dashboard needs: pip install 'agentmeter-core[server]'")
pytest.importorskip("httpx")
html5lib = pytest.importorskip("html5lib")
bs4 = pytest.importorskip("bs4")
from fastapi.testclient import TestClient  # noqa: E402

from agentmeter import Budget, Tracker  # noqa: E402
from agentmeter._display import DASH, fmt_count, fmt_ms, fmt_pct, fmt_usd  # noqa: E402
from agentmeter.server import create_app  # noqa: E402
from agentmeter.server.dashboard import _pages  # noqa: E402
from agentmeter.storage import SQLSink  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
API = "/api/v1/usage"
TOKEN = "dash-t0ken+/="
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIL_SESSION = "<script>alert(1)</script>"
EVIL_CUSTOMER = '<b>"evil" & co\'s</b>'
ODD_SESSIONS = ("chat/7", "..", "a b#c?d%&e=f", EVIL_SESSION, "ünï/çødé")
CUSTOMERS = ("acme", "globex/eu", EVIL_CUSTOMER)
MODELS = ("m1", "openai/gpt-x", "unpriced-llm")
TOOLS = ("search", "calc", "fetch/<x>")
BULK = 61  # sessions "bulk-000".. : more than one page of the sessions table
PAGES = (
    "/",
    "/sessions",
    "/session?id=s1",
    "/customers",
    "/customer?id=acme",
    "/tools",
    "/budgets",
)
NOW = datetime.now(UTC)


# ---------------------------------------------------------------- the database
def _history(sink: SQLSink) -> None:
    """70 hours of usage ending now: customers, sessions (odd ids too), models, tools."""
    start = NOW.timestamp() - 70 * 3600
    n = 0
    sessions = ("s1", "s2", *ODD_SESSIONS)
    for i in range(420):
        ts = start + i * 600 + 17
        session = sessions[i % len(sessions)]
        customer = CUSTOMERS[i % len(CUSTOMERS)] if i % 11 else None
        agent = ("planner", "team/coder")[i % 2]
        tool = TOOLS[i % 3] if i % 4 == 0 else None
        model = MODELS[i % 3]
        inp, out = 100 + (i * 37) % 900, 10 + (i * 13) % 200
        cost = None if model == "unpriced-llm" else inp * 2 + out * 8
        n += 1
        sink.submit(
            raw_event(
                f"llm{n}", ts, model=model, provider="p", input_tokens=inp, output_tokens=out,
                cost_micros=cost, latency_ms=50.0 + i % 40, session_id=session,
                agent_id=agent, customer_id=customer, tool=tool,
                status="error" if i % 29 == 0 else "ok",
            )
        )  # fmt: skip
        if i % 3 == 0:
            t = TOOLS[(i // 3) % 3]
            failed = (t == "fetch/<x>" and i % 2 == 0) or (t == "calc" and i % 7 == 0)
            n += 1
            sink.submit(
                raw_event(
                    f"tool{n}", ts + 1, kind="tool", tool=t, category="web" if t != "calc" else "",
                    latency_ms=5.0 + (i * 7) % 300, session_id=session, agent_id=agent,
                    customer_id=customer, status="error" if failed else "ok",
                    error="Boom" if failed else None,
                )
            )  # fmt: skip
    for b in range(BULK):
        n += 1
        sink.submit(
            raw_event(
                f"bulk{n}", NOW.timestamp() - 3 * 3600 + b, model="m1", input_tokens=1 + b,
                output_tokens=1, cost_micros=3 * (1 + b), session_id=f"bulk-{b:03d}",
                customer_id="acme",
            )
        )  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dashboard") / "dash.db"
    sink = SQLSink(str(path))
    _history(sink)
    sink.close()
    return str(path)


@pytest.fixture(scope="module")
def client(db: str) -> Iterator[TestClient]:
    with TestClient(create_app(db_url=db, token=TOKEN), headers=AUTH) as c:
        yield c


@pytest.fixture
def anon(db: str) -> Iterator[TestClient]:
    with TestClient(create_app(db_url=db, token=TOKEN), follow_redirects=False) as c:
        yield c


# ---------------------------------------------------------------- helpers
def soup_of(text: str) -> Any:
    html5lib.HTMLParser(strict=True).parse(text)  # any parse error raises
    return bs4.BeautifulSoup(text, "html5lib")


def page(c: TestClient, path: str, status: int = 200) -> Any:
    r = c.get(path)
    assert r.status_code == status, (path, r.status_code, r.text[-800:])
    assert r.headers["content-type"].startswith("text/html")
    return soup_of(r.text)


def api(c: TestClient, path: str, **params: Any) -> Any:
    r = c.get(API + path, params=params)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def seg(key: str) -> str:
    """A REST path segment for an id (``..`` too)."""
    return quote(key, safe="").replace(".", "%2E")


def cost_text(usage: dict[str, Any]) -> str:
    cost = usage["cost_usd"]
    return fmt_usd(None if cost is None else Decimal(cost), usage["unpriced_calls"])


def tokens_text(usage: dict[str, Any]) -> str:
    text = fmt_count(usage["total_tokens"])
    return f"~{text}" if usage["estimated_calls"] and usage["total_tokens"] else text


def card(soup: Any, name: str) -> str:
    el = soup.select_one(f'[data-card="{name}"] .value')
    assert el is not None, name
    return str(el.get_text())


def rows(scope: Any) -> dict[str, dict[str, str]]:
    """``{data-key: {data-col: text}}`` of the first data table in ``scope``."""
    table = scope.select_one("table.data")
    assert table is not None
    return {
        tr["data-key"]: {c["data-col"]: c.get_text() for c in tr.find_all(["th", "td"])}
        for tr in table.select("tbody tr")
    }


def section(soup: Any, name: str) -> Any:
    el = soup.select_one(f'[data-section="{name}"]')
    assert el is not None, name
    return el


def check_usage_row(row: dict[str, str], usage: dict[str, Any]) -> None:
    assert row["tokens"] == tokens_text(usage)
    assert row["cost"] == cost_text(usage)
    assert row["llm_calls"] == fmt_count(usage["llm_calls"])
    assert row["tool_calls"] == fmt_count(usage["tool_calls"])
    if "failed_tool_calls" in row:
        assert row["failed_tool_calls"] == fmt_count(usage["failed_tool_calls"])
        assert row["failed_llm_calls"] == fmt_count(usage["failed_llm_calls"])


def check_cards(soup: Any, usage: dict[str, Any]) -> None:
    assert card(soup, "cost") == cost_text(usage)
    assert card(soup, "tokens") == tokens_text(usage)
    assert card(soup, "llm_calls") == fmt_count(usage["llm_calls"])
    assert card(soup, "tool_calls") == fmt_count(usage["tool_calls"])


def ms(value: float | None) -> str:
    return fmt_ms(value)


def check_tool_row(row: dict[str, str], t: dict[str, Any]) -> None:
    assert row["calls"] == fmt_count(t["calls"])
    assert row["ok"] == fmt_count(t["ok"])
    assert row["failed"] == fmt_count(t["failed"])
    assert row["success"] == fmt_pct(t["success_rate"])
    assert row["p50"] == ms(t["p50_ms"]) and row["p95"] == ms(t["p95_ms"])
    assert row["mean"] == ms(t["mean_duration_ms"]) and row["max"] == ms(t["max_duration_ms"])
    assert row["tokens"] == fmt_count(t["total_tokens"])
    assert row["llm_calls"] == fmt_count(t["llm_calls"])
    if not t["llm_calls"] and not t["embedding_tokens"] and not t["cost_micros"]:
        assert row["cost"] == DASH
    else:
        cost = t["cost_usd"]
        assert row["cost"] == fmt_usd(None if cost is None else Decimal(cost), t["unpriced_calls"])
    assert row["category"] == (t["category"] or DASH)


def failures_first(tools: dict[str, dict[str, Any]]) -> list[str]:
    return [
        k
        for k, t in sorted(
            tools.items(),
            key=lambda kv: (
                -kv[1]["failed"],
                -(kv[1]["failed"] / kv[1]["calls"] if kv[1]["calls"] else 0),
                -kv[1]["calls"],
                kv[0],
            ),
        )
    ]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


# ---------------------------------------------------------------- auth
def test_no_page_and_no_data_endpoint_answers_without_the_token(anon: TestClient) -> None:
    for path in (*PAGES, "/session?id=chat%2F7"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "agentmeter_token=x"}):
            r = anon.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            # the refusal page: a login form (back to the page asked), and none of the data
            assert 'action="/login"' in r.text
            text = re.sub(r'name="next" value="[^"]*"', "", r.text)
            for secret in ("acme", "globex", "bulk-0", "search", "m1", "$0."):
                assert secret not in text, (path, secret)
    for path in ("", "/sessions", "/customers", "/tools", "/timeseries", "/sessions/s1"):
        assert anon.get(API + path).status_code == 401
    # the package's stylesheet and script hold no data: served to the login page too
    css = anon.get("/dashboard-static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert anon.get("/dashboard-static/dashboard.js").status_code == 200
    assert anon.get("/dashboard-static/missing.css").status_code == 404
    assert anon.get("/dashboard-static/..%2F__init__.py").status_code == 404


def test_token_in_the_url_sets_the_cookie_and_redirects_to_the_clean_url(
    anon: TestClient,
) -> None:
    r = anon.get("/sessions", params={"q": "bulk", "token": TOKEN, "range": "7d"})
    assert r.status_code == 303
    target = r.headers["location"]
    assert TOKEN not in target and "token" not in target
    assert urlsplit(target).path == "/sessions"
    assert parse_qs(urlsplit(target).query) == {"q": ["bulk"], "range": ["7d"]}
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("agentmeter_token=")
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "path=/" in low
    assert "secure" not in low  # plain http on 127.0.0.1; https would add it
    # the browser comes back with the cookie: the page answers
    ok = anon.get(target)
    assert ok.status_code == 200 and "bulk-060" in ok.text
    assert anon.get("/").status_code == 200
    # log out: the cookie is cleared, the pages refuse again
    out = anon.get("/logout")
    assert out.status_code == 303 and 'agentmeter_token=""' in out.headers["set-cookie"]
    anon.cookies.clear()
    assert anon.get("/").status_code == 401


def test_a_wrong_token_in_the_url_sets_nothing(anon: TestClient) -> None:
    r = anon.get("/?token=nope")
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "not the one" in r.text and "nope" not in r.text


def test_login_form_posts_the_token_and_never_redirects_off_site(anon: TestClient) -> None:
    refused = anon.get("/tools?range=24h")
    form = soup_of(refused.text).select_one('form[action="/login"]')
    assert form.select_one('input[name="next"]')["value"] == "/tools?range=24h"
    r = anon.post("/login", data={"token": TOKEN, "next": "/tools?range=24h"})
    assert r.status_code == 303 and r.headers["location"] == "/tools?range=24h"
    assert anon.get("/tools").status_code == 200
    for evil in ("//evil.example/x", "https://evil.example/", "\\\\evil", "tools"):
        r = anon.post("/login", data={"token": TOKEN, "next": evil})
        assert r.status_code == 303 and r.headers["location"] == "/", evil
    assert anon.post("/login", data={"token": "bad", "next": "/"}).status_code == 401


def test_without_a_token_the_pages_are_open(db: str) -> None:
    with TestClient(create_app(db_url=db), follow_redirects=False) as c:
        assert c.get("/").status_code == 200
        r = c.get("/sessions?token=whatever&q=s1")
        assert r.status_code == 303 and r.headers["location"] == "/sessions?q=s1"
        assert "set-cookie" not in r.headers


def test_security_headers(client: TestClient) -> None:
    r = client.get("/")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------- overview
def test_overview_figures_equal_the_api(client: TestClient) -> None:
    soup = page(client, "/")
    ov = api(client, "")
    check_cards(soup, ov["totals"])
    assert card(soup, "sessions") == fmt_count(api(client, "/sessions", limit=1)["total"])
    assert card(soup, "customers") == fmt_count(api(client, "/customers", limit=1)["total"])
    customers = api(client, "/customers", limit=10)["customers"]
    top = rows(section(soup, "customers"))
    assert list(top) == [c["customer_id"] for c in customers]
    for c in customers:
        check_usage_row(top[c["customer_id"]], c["usage"])
    for name, listing in (("agents", "/agents"), ("models", "/models")):
        got = rows(section(soup, name))
        want = api(client, listing, limit=10)[name]
        key = "agent_id" if name == "agents" else "model"
        assert list(got) == [w[key] for w in want]
        for w in want:
            check_usage_row(got[w[key]], w["usage"])
    tools = api(client, "/tools")["tools"]
    top_tools = rows(section(soup, "tools"))
    by_time = sorted(tools, key=lambda k: (-tools[k]["total_duration_ms"], k))
    assert list(top_tools) == by_time[:10]
    for name, row in top_tools.items():
        assert row["calls"] == fmt_count(tools[name]["calls"])
        assert row["failed"] == fmt_count(tools[name]["failed"])
        assert row["p95"] == ms(tools[name]["p95_ms"])


def _legend(fig: Any) -> dict[str, str]:
    return {
        li.select_one(".legend-key").get_text(): li.select_one(".legend-value").get_text()
        for li in fig.select("ul.legend li")
    }


def test_overview_charts_equal_the_api_timeseries(client: TestClient) -> None:
    for by in ("model", "customer", "agent"):
        soup = page(client, f"/?by={by}&bucket=hour")
        points = api(client, "/timeseries", bucket="hour", by=by)["points"]
        cost: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for p in points:
            key = p["key"] if p["key"] is not None else _pages.NO_KEY
            cost[key] = cost.get(key, 0) + p["usage"]["cost_micros"]
            tokens[key] = tokens.get(key, 0) + p["usage"]["total_tokens"]
        cost_fig = soup.select_one('[data-chart="cost"]')
        tok_fig = soup.select_one('[data-chart="tokens"]')
        assert f"by {by}" in cost_fig.figcaption.get_text()
        assert _legend(cost_fig) == {
            k: fmt_usd(Decimal(v).scaleb(-6)) for k, v in cost.items() if v
        }
        assert _legend(tok_fig) == {k: fmt_count(v) for k, v in tokens.items() if v}
        # one bar per hour over the 70 hours of history (gaps included)
        hours = {p["start"] for p in points}
        starts = sorted(datetime.fromisoformat(h) for h in hours)
        span = int((starts[-1] - starts[0]) / timedelta(hours=1)) + 1
        ticks = tok_fig.select("svg text.tick")
        assert ticks, "no axis labels"
        titles = [t.get_text() for t in tok_fig.select("svg rect title")]
        assert len({t.split(" · ")[0] for t in titles}) == len(hours) <= span
        # each bar segment's tooltip is the api's figure for that hour and group
        want = {
            (
                datetime.fromisoformat(p["start"]).strftime("%m-%d %H:00"),
                p["key"] if p["key"] is not None else _pages.NO_KEY,
            ): fmt_count(p["usage"]["total_tokens"])
            for p in points
            if p["usage"]["total_tokens"]
        }
        if len(tokens) <= 8:  # no "other" group: every segment is one api point
            got = {}
            for t in titles:
                when, rest = t.split(" · ", 1)
                key, value = rest.rsplit(": ", 1)
                got[(when, key)] = value
            assert got == want


def test_overview_time_range_picker(client: TestClient) -> None:
    since = (NOW - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    soup = page(client, "/?range=24h")
    check_cards(soup, api(client, "", since=iso(since))["totals"])
    assert soup.select_one('select[name="range"] option[selected]')["value"] == "24h"
    # explicit dates (UTC), until exclusive, exactly as the api reads them
    lo, hi = (NOW - timedelta(days=2)).date(), NOW.date()
    soup = page(client, f"/?since={lo}&until={hi}")
    ov = api(client, "", since=str(lo), until=str(hi))
    check_cards(soup, ov["totals"])
    assert soup.select_one('input[name="since"]')["value"] == str(lo)
    # a day bucket over the same range: bars are days
    soup = page(client, f"/?since={lo}&until={hi}&bucket=day")
    days = {t.get_text().split(" · ")[0] for t in soup.select('[data-chart="cost"] rect title')}
    assert days <= {str(lo), str(lo + timedelta(days=1))}
    # links keep the range
    nav = {a.get_text(): a["href"] for a in soup.select("header nav a")}
    assert nav["Sessions"] == f"/sessions?since={lo}&until={hi}&bucket=day"
    # a range with nothing in it
    soup = page(client, "/?since=2001-01-01&until=2001-01-02")
    assert card(soup, "tokens") == "0"
    assert "No usage in this range" in soup.get_text()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("range=1y", "range must be one of"),
        ("since=yesterday", "since must be an ISO 8601 date"),
        ("since=2025-02-01&until=2025-01-01", "since must be before until"),
        ("bucket=week", "bucket must be auto, hour or day"),
        ("by=tool", "by must be one of"),
        ("page=x", "page must be a number"),
    ],
)
def test_bad_parameters_answer_400_with_a_message(
    client: TestClient, query: str, message: str
) -> None:
    r = client.get(f"/?{query}")
    assert r.status_code == 400 and message in soup_of(r.text).get_text()


def test_auto_bucket_follows_the_range(client: TestClient) -> None:
    assert "per hour" in page(client, "/?range=24h").select_one("figcaption").get_text()
    assert "per day" in page(client, "/?range=30d").select_one("figcaption").get_text()
    assert "per hour" in page(client, "/").select_one("figcaption").get_text()  # 70 h of data
    soup = page(client, "/?range=90d&bucket=hour")  # too many hours: days, and it says so
    assert "per day" in soup.select_one("figcaption").get_text()
    assert "shown by day" in soup.get_text()


# ---------------------------------------------------------------- sessions
def test_sessions_table_equals_the_api_page_by_page(client: TestClient) -> None:
    want = api(client, "/sessions", limit=50)
    soup = page(client, "/sessions")
    got = rows(soup)
    assert list(got) == [s["session_id"] for s in want["sessions"]]
    assert soup.select_one("[data-total]")["data-total"] == str(want["total"])
    for s in want["sessions"]:
        check_usage_row(got[s["session_id"]], s["usage"])
        first = datetime.fromisoformat(s["first_seen"])
        assert got[s["session_id"]]["first_seen"] == _pages.fmt_time(first)
    second = api(client, "/sessions", limit=50, offset=50)
    soup2 = page(client, "/sessions?page=2")
    assert list(rows(soup2)) == [s["session_id"] for s in second["sessions"]]
    assert soup.select_one('a[rel="next"]')["href"] == "/sessions?page=2"
    assert soup2.select_one('a[rel="prev"]')["href"] == "/sessions?page=1"


def test_session_search_filters_on_the_server(client: TestClient) -> None:
    soup = page(client, "/sessions?q=BULK-00")
    got = rows(soup)
    assert sorted(got) == [f"bulk-00{i}" for i in range(10)]
    assert soup.select_one("[data-total]")["data-total"] == "10"
    assert soup.select_one('input[name="q"]')["value"] == "BULK-00"
    all_sessions = {s["session_id"]: s for s in api(client, "/sessions", limit=1000)["sessions"]}
    for sid in got:
        check_usage_row(got[sid], all_sessions[sid]["usage"])
    # the search keeps the time range, and its pages keep the search
    soup = page(client, "/sessions?q=bulk&range=7d")
    assert soup.select_one("[data-total]")["data-total"] == str(BULK)
    assert soup.select_one('a[rel="next"]')["href"] == "/sessions?range=7d&q=bulk&page=2"
    assert len(rows(page(client, "/sessions?q=bulk&range=7d&page=2"))) == BULK - 50
    assert "nothing in this range" in page(client, "/sessions?q=zzz-none").get_text()


def test_every_session_link_opens_its_page_with_the_api_figures(client: TestClient) -> None:
    soup = page(client, "/sessions?q=" + quote(""))
    links = {a.get_text(): a["href"] for a in soup.select("table.data tbody th a")}
    for sid in ("s1", *ODD_SESSIONS):
        href = links[sid]
        assert href.startswith("/session?id=")
        assert parse_qs(urlsplit(href).query)["id"] == [sid]
        sp = page(client, href)
        assert sp.select_one("h1").get_text() == f"Session {sid}"
        want = api(client, f"/sessions/{seg(sid)}")
        check_cards(sp, want["usage"])
        tools = rows(section(sp, "tools"))
        assert list(tools) == failures_first(want["tools"])
        for name, t in want["tools"].items():
            check_tool_row(tools[name], t)
        for name, view in (("models", "by_model"), ("agents", "by_agent")):
            got = rows(section(sp, name))
            assert list(got) == list(want[view])
            for k, u in want[view].items():
                check_usage_row(got[k], u)
        assert "Budgets live in the tracker" in section(sp, "budget").get_text()
        # calls over time: the chart's totals are the session's calls
        legend = _legend(sp.select_one('[data-chart="calls"]'))
        u = want["usage"]
        assert legend["LLM calls"] == fmt_count(u["llm_calls"])
        assert legend.get("tool calls, failed", "0") == fmt_count(u["failed_tool_calls"])


def test_session_page_with_a_range_and_errors(client: TestClient) -> None:
    since = (NOW - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    sp = page(client, "/session?id=s1&range=24h")
    check_cards(sp, api(client, "/sessions/s1", since=iso(since))["usage"])
    assert sp.select_one('form.picker input[name="id"]')["value"] == "s1"
    missing = page(client, "/session?id=" + quote(EVIL_SESSION + "x"), status=404)
    assert f"unknown session {EVIL_SESSION + 'x'!r}" in missing.get_text()
    assert "which session" in page(client, "/session", status=400).get_text()


# ---------------------------------------------------------------- customers
def test_customers_table_and_pages_equal_the_api(client: TestClient) -> None:
    want = api(client, "/customers", limit=50)["customers"]
    soup = page(client, "/customers")
    got = rows(soup)
    assert list(got) == [c["customer_id"] for c in want]
    links = {a.get_text(): a["href"] for a in soup.select("table.data tbody th a")}
    for c in want:
        cid = c["customer_id"]
        check_usage_row(got[cid], c["usage"])
        cp = page(client, links[cid])
        assert cp.select_one("h1").get_text() == f"Customer {cid}"
        full = api(client, f"/customers/{seg(cid)}")
        check_cards(cp, full["usage"])
        assert card(cp, "sessions") == fmt_count(len(full["by_session"]))
        sessions = rows(section(cp, "sessions"))
        ranked = sorted(full["by_session"].items(), key=lambda kv: (-kv[1]["total_tokens"], kv[0]))
        assert list(sessions) == [sid for sid, _ in ranked[:50]]
        for sid, u in ranked[:50]:
            check_usage_row(sessions[sid], u)
        if len(ranked) > 50:
            assert f"The 50 largest of {len(ranked):,} sessions" in section(cp, "sessions").text
        tools = rows(section(cp, "tools"))
        assert list(tools) == failures_first(full["tools"])
        for name, t in full["tools"].items():
            check_tool_row(tools[name], t)
        legend = _legend(cp.select_one('[data-chart="cost"]'))
        by_model = {
            k: fmt_usd(Decimal(u["cost_micros"]).scaleb(-6))
            for k, u in full["by_model"].items()
            if u["cost_micros"]
        }
        assert legend == by_model
    assert rows(page(client, "/customers?q=GLOBEX")).keys() == {"globex/eu"}
    assert "unknown customer" in page(client, "/customer?id=nobody", status=404).get_text()


# ---------------------------------------------------------------- tools, budgets
def test_tools_page_lists_failures_first_with_the_api_figures(client: TestClient) -> None:
    soup = page(client, "/tools")
    want = api(client, "/tools")["tools"]
    got = rows(soup)
    assert list(got) == failures_first(want)
    assert want[next(iter(got))]["failed"] > 0
    for name, t in want.items():
        check_tool_row(got[name], t)
    failing = soup.select("table.data tbody tr.failing")
    assert {tr["data-key"] for tr in failing} == {k for k, t in want.items() if t["failed"]}
    assert card(soup, "calls") == fmt_count(sum(t["calls"] for t in want.values()))
    since = (NOW - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    day = rows(page(client, "/tools?range=24h"))
    for name, t in api(client, "/tools", since=iso(since))["tools"].items():
        check_tool_row(day[name], t)


def test_budgets_page_over_a_database_says_where_budgets_live(client: TestClient) -> None:
    text = page(client, "/budgets").get_text()
    assert "Budgets live in the tracker" in text


# ---------------------------------------------------------------- escaping
def test_ids_are_escaped_everywhere(client: TestClient) -> None:
    for path in (
        "/",
        "/sessions",
        "/customers",
        "/session?id=" + quote(EVIL_SESSION),
        "/customer?id=" + quote(EVIL_CUSTOMER),
        "/tools?range=7d",
    ):
        r = client.get(path)
        assert r.status_code == 200
        assert "<script>alert" not in r.text and '<b>"evil"' not in r.text
        soup_of(r.text)  # strict HTML5, SVG included
    text = client.get("/session?id=" + quote(EVIL_SESSION)).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/sessions").text
    assert "fetch/&lt;x&gt;" in client.get("/tools").text
    # attribute values stay inside their quotes
    soup = page(client, "/customers")
    keys = [tr["data-key"] for tr in soup.select("table.data tbody tr")]
    assert EVIL_CUSTOMER in keys
    soup = page(client, "/customer?id=" + quote(EVIL_CUSTOMER))
    assert soup.select_one('form.picker input[name="id"]')["value"] == EVIL_CUSTOMER


# ---------------------------------------------------------------- a live tracker
@pytest.fixture
def live() -> Iterator[tuple[Tracker, TestClient]]:
    t = Tracker()
    t.set_price("m1", input_per_mtok=1, output_per_mtok=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.set_budget("over", Budget(max_llm_calls=2))
        t.set_budget("near", Budget(max_tokens=1_000, max_cost_usd=1))
        t.set_budget("fine/1", Budget(max_tool_calls=100))
        for _ in range(2):
            t.record_llm(
                model="m1", input_tokens=10, output_tokens=5, session_id="over", customer_id="acme"
            )
        t.record_llm(
            model="m1", input_tokens=800, output_tokens=50, session_id="near", customer_id="globex"
        )
        t.record_tool_call(tool="search", ok=False, duration_ms=3.0, session_id="fine/1")
        t.record_tool_call(tool="search", ok=True, duration_ms=5.0, session_id="fine/1")
        t.record_llm(model="other", input_tokens=7, output_tokens=1, session_id="free")
    with TestClient(create_app(tracker=t, token=TOKEN), headers=AUTH) as c:
        yield t, c


def test_live_tracker_budgets_page(live: tuple[Tracker, TestClient]) -> None:
    t, c = live
    soup = page(c, "/budgets")
    got = rows(soup)
    owners = []
    for sid in ("over", "near", "fine/1"):
        b = api(c, f"/sessions/{seg(sid)}")["budget"]
        assert b is not None
        owners.append(b["owner"])
        for name, limit in b["limits"].items():
            row = got[f"{b['owner']}::{name}"]
            money = "cost" in name

            def amount(v: Any, money: bool = money) -> str:
                return fmt_usd(Decimal(str(v))) if money else fmt_count(int(v))

            assert row["max"] == amount(limit)
            assert row["used"] == amount(b["used"][name])
            assert row["reserved"] == amount(b["reserved"][name])
            assert row["remaining"] == amount(b["remaining"][name])
            assert row["period"] == "the session"
    alerts = {k.split("::")[0]: r["alert"] for k, r in got.items()}
    assert alerts[owners[0]] == "exhausted"
    assert alerts[owners[1]].startswith("over 80% of tokens")  # 850 of 1,000
    assert alerts[owners[2]] == "within limits"
    # worst first
    order = list(dict.fromkeys(k.split("::")[0] for k in got))
    assert order == owners
    assert card(soup, "exhausted") == "1" and card(soup, "budgets") == "3"


def test_live_tracker_pages_equal_the_api(live: tuple[Tracker, TestClient]) -> None:
    _t, c = live
    soup = page(c, "/")
    ov = api(c, "")
    check_cards(soup, ov["totals"])
    assert "keeps totals, not timestamps" in soup.get_text()
    assert soup.select_one("form.picker") is None and soup.select_one("svg") is None
    sessions = rows(page(c, "/sessions"))
    want = api(c, "/sessions")["sessions"]
    assert list(sessions) == [s["session_id"] for s in want]
    for s in want:
        check_usage_row(sessions[s["session_id"]], s["usage"])
    sp = page(c, "/session?id=near")
    budget = rows(section(sp, "budget"))
    assert budget and all(r["alert"].startswith("over 80%") for r in budget.values())
    assert "no budget" in page(c, "/session?id=free").select_one('[data-section="budget"]').text
    cp = page(c, "/customer?id=acme")
    check_cards(cp, api(c, "/customers/acme")["usage"])
    tools = rows(page(c, "/tools"))
    for name, t in api(c, "/tools")["tools"].items():
        check_tool_row(tools[name], t)


# ---------------------------------------------------------------- packaging
def test_templates_and_assets_ship_inside_the_package() -> None:
    import tomllib
    from importlib import resources

    root = resources.files("agentmeter.server.dashboard")
    for rel in (
        "templates/base.html",
        "templates/refused.html",
        "static/dashboard.css",
        "static/dashboard.js",
    ):
        assert root.joinpath(rel).is_file(), rel
    # the wheel takes the whole package folder, data files included (hatch's default)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["agentmeter"] and not wheel.get("exclude")
    js = root.joinpath("static/dashboard.js").read_text()
    css = root.joinpath("static/dashboard.css").read_text()
    assert not re.search(r"https?://", js + css), "no external asset"


def test_readme_screenshot_is_committed() -> None:
    """docs/dashboard.png: the overview of the demo's database in headless Chromium at
    1280 px (made by tests/test_dashboard_browser.py with AGENTMETER_SCREENSHOTS=docs)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(Path(__file__).parents[1] / "docs" / "dashboard.png")
    assert pixels.shape[1] == 1280 and pixels.shape[0] >= 700
    colored = (pixels[..., :3].max(axis=2) - pixels[..., :3].min(axis=2) > 0.25).mean()
    assert colored > 0.003, "the committed dashboard screenshot shows no chart"
