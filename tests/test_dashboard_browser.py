"""The dashboard in a real browser: ``agentmeter demo`` writes its database,
``agentmeter serve`` runs as a subprocess on 127.0.0.1 with a token, and headless
Chromium loads every page (through the ``/?token=`` cookie redirect), whose figures
must equal the REST API's JSON; a page without the token is refused.

Screenshots land in the test's temporary folder; with ``AGENTMETER_SCREENSHOTS=DIR``
they are also copied there (the README's ``docs/dashboard.png`` is the overview).
Skipped only when no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="the dashboard needs: pip install 'agentmeter-core[server]'")
httpx = pytest.importorskip("httpx")
bs4 = pytest.importorskip("bs4")

from test_dashboard import (  # noqa: E402
    card,
    check_cards,
    check_tool_row,
    check_usage_row,
    failures_first,
    rows,
    section,
)

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TOKEN = "browser-t0ken-42"
API = "/api/v1/usage"
BROWSER_TIMEOUT = 90  # seconds per Chromium run


def _browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


pytestmark = [
    pytest.mark.skipif(
        _browser() is None, reason="headless Chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.timeout(600),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def api(self, path: str, **params: Any) -> Any:
        r = self.http.get(API + path, params=params)
        assert r.status_code == 200, (path, r.text)
        return r.json()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agentmeter demo`` run in an empty folder: it writes ./agentmeter.db."""
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTMETER_DB", "AGENTMETER_TOKEN")}
    proc = subprocess.run(
        [sys.executable, "-m", "agentmeter.cli", "demo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    db = cwd / "agentmeter.db"
    assert db.is_file()
    return db


@pytest.fixture(scope="module")
def server(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``agentmeter serve --db ... --token ...`` on a free port of 127.0.0.1."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTMETER_DB", "AGENTMETER_TOKEN")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentmeter.cli", "serve", "--db", str(demo_db),
             "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=demo_db.parent,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    srv = Server(proc, base, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if srv.http.get("/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "agentmeter serve did not start: " + log.read_text()
            time.sleep(0.2)
        yield srv
    finally:
        srv.http.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def chromium(url: str, profile: Path, *, screenshot: Path | None = None, height: int = 1100) -> str:
    """Load ``url`` in headless Chromium (fresh profile); the DOM, or a screenshot."""
    browser = _browser()
    assert browser is not None
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size=1280,{height}",
    ]
    cmd.append(f"--screenshot={screenshot}" if screenshot is not None else "--dump-dom")
    proc = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=BROWSER_TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dom(server: Server, path: str, tmp_path: Path) -> Any:
    """A page as the browser shows it, entering with ``?token=`` (cookie, then 303)."""
    sep = "&" if "?" in path else "?"
    text = chromium(f"{server.base}{path}{sep}token={quote(TOKEN)}", tmp_path / "profile")
    soup = bs4.BeautifulSoup(text, "html5lib")
    assert soup.select_one("main h1") is not None, text[-1500:]
    assert "token needed" not in soup.get_text(), f"{path}: refused in the browser"
    heading = soup.select_one("main h1").get_text()
    assert heading not in ("Not found", "Bad request"), (path, soup.select_one("main").text)
    return soup


def _sessions_to_open(sessions: list[dict[str, Any]]) -> list[str]:
    """The largest session and the one with the most failed tool calls."""
    failing = max(sessions, key=lambda s: (s["usage"]["failed_tool_calls"], s["session_id"]))
    assert failing["usage"]["failed_tool_calls"] > 0, "the demo has failing tools"
    return list(dict.fromkeys([sessions[0]["session_id"], failing["session_id"]]))


def test_every_page_in_chromium_shows_the_api_figures(server: Server, tmp_path: Path) -> None:
    ov = server.api("")
    soup = dom(server, "/", tmp_path)
    check_cards(soup, ov["totals"])
    assert card(soup, "sessions") == f"{server.api('/sessions', limit=1)['total']:,}"
    customers = server.api("/customers", limit=10)["customers"]
    assert {"acme", "globex"} <= {c["customer_id"] for c in customers}
    top = rows(section(soup, "customers"))
    assert list(top) == [c["customer_id"] for c in customers]
    for c in customers:
        check_usage_row(top[c["customer_id"]], c["usage"])
    assert soup.select('[data-chart="cost"] svg rect'), "no cost chart drawn"

    sessions = server.api("/sessions", limit=50)["sessions"]
    got = rows(dom(server, "/sessions", tmp_path))
    assert list(got) == [s["session_id"] for s in sessions]
    for s in sessions:
        check_usage_row(got[s["session_id"]], s["usage"])

    for sid in _sessions_to_open(sessions):
        sp = dom(server, f"/session?id={quote(sid)}", tmp_path)
        want = server.api(f"/sessions/{quote(sid, safe='')}")
        assert sp.select_one("main h1").get_text() == f"Session {sid}"
        check_cards(sp, want["usage"])
        tools = rows(section(sp, "tools"))
        assert list(tools) == failures_first(want["tools"])
        for name, t in want["tools"].items():
            check_tool_row(tools[name], t)

    cust = rows(dom(server, "/customers", tmp_path))
    for c in server.api("/customers")["customers"]:
        check_usage_row(cust[c["customer_id"]], c["usage"])
    cp = dom(server, "/customer?id=acme", tmp_path)
    check_cards(cp, server.api("/customers/acme")["usage"])

    tools_want = server.api("/tools")["tools"]
    tools = rows(dom(server, "/tools", tmp_path))
    assert list(tools) == failures_first(tools_want)
    assert tools_want[next(iter(tools))]["failed"] > 0  # flaky_database / calculator first
    for name, t in tools_want.items():
        check_tool_row(tools[name], t)

    budgets = dom(server, "/budgets", tmp_path)
    assert "Budgets live in the tracker" in budgets.get_text()


def test_a_page_without_the_token_is_refused_in_the_browser(server: Server, tmp_path: Path) -> None:
    for path in ("/", "/tools", "/session?id=s1"):
        text = chromium(server.base + path, tmp_path / "fresh")
        soup = bs4.BeautifulSoup(text, "html5lib")
        body = soup.get_text()
        assert "token needed" in body
        for secret in ("acme", "web_search", "flaky_database", "$0."):
            assert secret not in body, (path, secret)
    for path in ("/", "/sessions", API, API + "/customers"):
        assert httpx.get(server.base + path, timeout=10).status_code == 401
    # the token never reaches the server's log, although the browser sent it in URLs
    dom(server, "/tools", tmp_path)
    assert TOKEN not in server.log.read_text(errors="replace")


def test_screenshots(server: Server, tmp_path: Path) -> None:
    """Every page, screenshotted through the cookie redirect: each shows content."""
    import matplotlib.image

    keep = os.environ.get("AGENTMETER_SCREENSHOTS")
    failing = _sessions_to_open(server.api("/sessions", limit=100)["sessions"])[-1]
    shots = {
        "dashboard": "/",
        "sessions": "/sessions",
        "session": f"/session?id={quote(failing)}",
        "customer": "/customer?id=acme",
        "tools": "/tools",
        "budgets": "/budgets",
    }
    for name, path in shots.items():
        png = tmp_path / f"{name}.png"
        sep = "&" if "?" in path else "?"
        chromium(f"{server.base}{path}{sep}token={quote(TOKEN)}", tmp_path / "profile",
                 screenshot=png, height=1000)  # fmt: skip
        pixels = matplotlib.image.imread(png)
        assert pixels.shape[1] == 1280 and pixels.shape[0] == 1000
        ink = (pixels[..., :3].mean(axis=2) < 0.9).mean()
        assert ink > 0.01, f"{name}: the screenshot is nearly empty ({ink:.1%}); see {png}"
        if name in ("dashboard", "session"):
            colored = (pixels[..., :3].max(axis=2) - pixels[..., :3].min(axis=2) > 0.25).mean()
            assert colored > 0.003, f"{name}: no chart visible; see {png}"
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(png, Path(keep) / png.name)
