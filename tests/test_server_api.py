"""The REST API: every endpoint, filter and error, over a live tracker and over databases."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import storage_pg
from storage_pg import free_port
from storage_util import priced_tracker

pytest.importorskip("fastapi", reason="the REST API needs: pip install 'agentmeter-core[server]'")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import agentmeter  # noqa: E402
from agentmeter.models import EVENT_FIELDS  # noqa: E402
from agentmeter.server import create_app  # noqa: E402
from agentmeter.storage import DatabaseError, SQLSink, UsageStore  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
db_url = storage_pg.db_url  # the fixtures
pg = storage_pg.pg
API = "/api/v1/usage"
HEALTH = "/api/v1/health"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMERS = ("acme", "globex/eu", "initech")
SESSIONS = ("s1", "s2", "chat/7")
AGENTS = ("planner", "team/coder")
MODELS = ("m1", "openai/gpt-x", "m2")
TAGS: tuple[dict[str, str] | None, ...] = (
    None,
    {"team": "search"},
    {"team": "billing", "env": "prod"},
)


# ---------------------------------------------------------------- helpers
def billing_workload(t: agentmeter.Tracker, n: int = 200, seed: int = 3) -> None:
    """Every kind of call, attributed to customers, sessions, agents and tags (ids with '/')."""
    rng = random.Random(seed)
    for i in range(n):
        who: dict[str, Any] = {
            "customer_id": rng.choice([None, *CUSTOMERS]),
            "session_id": rng.choice([None, *SESSIONS]),
            "agent_id": rng.choice([None, *AGENTS]),
            "tags": rng.choice(TAGS),
        }
        op = rng.random()
        if op < 0.4:
            inp, out = rng.randint(0, 2000), rng.randint(0, 500)
            t.record_llm(
                model=rng.choice(MODELS),
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=rng.randint(0, inp // 3),
                cache_write_tokens=rng.randint(0, inp // 3),
                reasoning_tokens=rng.randint(0, out // 2),
                latency_ms=rng.randint(0, 4000) / 4,
                tool=rng.choice([None, None, "search"]),
                ok=rng.random() > 0.1,
                estimated=rng.random() < 0.2,
                **who,
            )
        elif op < 0.5:
            t.record_llm("mystery-model", rng.randint(1, 99), rng.randint(0, 9), **who)
        elif op < 0.62:
            t.record_embedding(model="emb", input_tokens=rng.randint(1, 900), **who)
        elif op < 0.9:
            tool = rng.choice(["search", "calc", "web/fetch"])
            t.record_tool_call(
                tool=tool,
                ok=rng.random() > 0.2,
                duration_ms=rng.randint(0, 8000) / 4,
                category="" if tool == "calc" else "web",
                call_id=f"tool-{seed}-{i}",
                **who,
            )
        elif op < 0.95:
            t.record_cache_hit(tokens_saved=rng.randint(0, 300), **who)
        else:
            t.record_cache_miss(**who)
    # A session and a customer that only called a tool: zero cost, not "unpriced".
    t.record_tool_call("calc", True, duration_ms=1.5, session_id="quiet", customer_id="quiet-co")


def event(call_id: str, ts: float, kind: str = "chat", **fields: Any) -> tuple[Any, ...]:
    """A raw event tuple as the tracker hands it to sinks (for events at chosen times)."""
    values: dict[str, Any] = dict.fromkeys(EVENT_FIELDS)
    values.update(
        call_id=call_id,
        timestamp=ts,
        kind=kind,
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        scope_path=(),
        status="ok",
        estimated=False,
        tokens_saved=0,
    )
    unknown = set(fields) - set(values)
    assert not unknown, unknown
    values.update(fields)
    return tuple(values[f] for f in EVENT_FIELDS)


def _json(model: Any) -> Any:
    return model.model_dump(mode="json")


def _without_recent(tools: dict[str, Any]) -> dict[str, Any]:
    """Tool stats without the last few call ids (their order across sessions is not defined)."""
    return {k: {f: v for f, v in s.items() if f != "recent_call_ids"} for k, s in tools.items()}


@pytest.fixture
def live() -> agentmeter.Tracker:
    t = priced_tracker()
    billing_workload(t)
    t.set_budget("s1", agentmeter.Budget(max_tokens=10**9))
    return t


@pytest.fixture
def stored(db_url: str) -> Iterator[tuple[str, agentmeter.Tracker]]:
    t = priced_tracker()
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        billing_workload(t)
    yield db_url, t


@pytest.fixture
def dated(tmp_path: Path) -> Path:
    """Six days of events (June 1..6 2025, 10 input tokens each), and two recent ones."""
    path = tmp_path / "dated.db"
    base = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()
    now = time.time()
    with SQLSink(path) as sink:
        for i in range(6):
            sink.submit(
                event(
                    f"d{i}",
                    base + 86400 * i,
                    model="m1",
                    input_tokens=10,
                    session_id="s/old" if i < 3 else "s/new",
                    agent_id="a",
                    customer_id="acme" if i % 2 else "globex/eu",
                    tags={"team": "search"} if i < 2 else None,
                )
            )
        sink.submit(event("r1", now - 3 * 86400, model="m1", input_tokens=1, session_id="r"))
        sink.submit(event("r2", now - 10 * 86400, model="m1", input_tokens=2, session_id="r"))
    return path


# ------------------------------------------------------- live tracker
def test_live_tracker_endpoints(live: agentmeter.Tracker) -> None:
    snap = live.snapshot()
    with TestClient(create_app(tracker=live)) as c:
        body = c.get(API).json()
        assert body["source"] == "tracker"
        assert body["totals"] == _json(snap.totals)
        for view in ("by_customer", "by_agent", "by_model", "by_session", "by_provider"):
            assert body[view] == {k: _json(v) for k, v in getattr(snap, view).items()}, view

        page = c.get(f"{API}/sessions", params={"limit": 2, "offset": 1}).json()
        assert page["total"] == len(snap.by_session) and page["limit"] == 2
        ordered = sorted(snap.by_session, key=lambda k: (-snap.by_session[k].total_tokens, k))
        assert [s["session_id"] for s in page["sessions"]] == ordered[1:3]

        sess = c.get(f"{API}/sessions/s1").json()
        assert sess == _json(live.session("s1"))
        assert 10**9 in sess["budget"]["limits"].values()

        for cid in CUSTOMERS:
            r = c.get(f"{API}/customers/{cid}")  # 'globex/eu' has a slash
            assert r.status_code == 200, r.text
            assert r.json() == _json(live.customer(cid))
        customers = c.get(f"{API}/customers").json()
        assert [x["customer_id"] for x in customers["customers"]] == list(
            sorted(snap.by_customer, key=lambda k: (-snap.by_customer[k].total_tokens, k))
        )
        assert customers["total"] == len(CUSTOMERS) + 1  # and quiet-co

        agent = c.get(f"{API}/agents/team/coder").json()
        assert agent["usage"] == _json(snap.by_agent["team/coder"])
        assert (
            sum(u["total_tokens"] for u in agent["by_customer"].values())
            <= sum(u["total_tokens"] for u in agent["by_session"].values())
            + agent["usage"]["total_tokens"]
        )
        agents = c.get(f"{API}/agents").json()
        assert {a["agent_id"]: a["usage"] for a in agents["agents"]} == {
            k: _json(v) for k, v in snap.by_agent.items()
        }

        model = c.get(f"{API}/models/openai/gpt-x").json()  # a model name with a slash
        assert model["model"] == "openai/gpt-x"
        assert model["usage"] == _json(snap.by_model["openai/gpt-x"])
        models = c.get(f"{API}/models", params={"limit": 1}).json()
        assert models["total"] == len(snap.by_model) and len(models["models"]) == 1

        tools = c.get(f"{API}/tools").json()
        assert tools["tools"]["search"]["calls"] == snap.by_tool["search"].calls
        assert "web" in tools["by_category"] and "web/fetch" in tools["tools"]
        r = c.get(f"{API}/tools", params={"session": "s2"})
        assert set(r.json()["tools"]) == set(snap.by_session_tool["s2"])
        r = c.get(f"{API}/tools", params={"session_id": "s2"})  # the earlier parameter name
        assert set(r.json()["tools"]) == set(snap.by_session_tool["s2"])
        r = c.get(f"{API}/tools", params={"customer": "globex/eu"})
        assert r.json()["tools"] == {
            k: _json(v) for k, v in snap.by_customer_tool["globex/eu"].items()
        }


def test_live_tracker_filters_by_customer_session_agent_model(live: agentmeter.Tracker) -> None:
    snap = live.snapshot()
    cells = [c for c in snap.cells if c.customer_id == "acme" and c.session_id == "s1"]
    expected = sum((c.usage for c in cells), agentmeter.Usage())
    with TestClient(create_app(tracker=live)) as c:
        body = c.get(API, params={"customer": "acme", "session": "s1"}).json()
        assert body["filters"]["customer"] == "acme" and body["filters"]["session"] == "s1"
        assert body["totals"]["total_tokens"] == expected.total_tokens
        assert body["totals"]["cost_micros"] == expected.cost_micros
        assert set(body["by_customer"]) == {"acme"} and set(body["by_session"]) == {"s1"}
        listing = c.get(f"{API}/sessions", params={"customer": "acme"}).json()
        acme = {x.session_id for x in snap.cells if x.customer_id == "acme" and x.session_id}
        assert {s["session_id"] for s in listing["sessions"]} == acme
        by_model = c.get(f"{API}/models", params={"agent": "planner"}).json()["models"]
        planner = [x for x in snap.cells if x.agent_id == "planner" and x.model]
        assert sum(m["usage"]["llm_calls"] for m in by_model) == sum(
            x.usage.llm_calls for x in planner
        )


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (f"{API}/sessions/nope", {}, 404),
        (f"{API}/customers/nope/at/all", {}, 404),
        (f"{API}/agents/nope", {}, 404),
        (f"{API}/models/vendor/nope", {}, 404),
        (f"{API}/tools", {"session": "nope"}, 404),
        (f"{API}/tools", {"customer": "nope"}, 404),
        (f"{API}/tools", {"session": ""}, 422),
        (f"{API}/tools", {"session": "s1", "session_id": "s2"}, 422),
        (f"{API}/tools", {"session": "s1", "customer": "acme"}, 400),
        (f"{API}/sessions", {"limit": 0}, 422),
        (f"{API}/sessions", {"limit": 5000}, 422),
        (f"{API}/sessions", {"limit": "ten"}, 422),
        (f"{API}/sessions", {"offset": -1}, 422),
        (f"{API}/sessions", {"offset": 2**63}, 422),
        (f"{API}/customers", {"limit": 0}, 422),
        (API, {"since": "yesterday-ish"}, 422),
        (API, {"until": "2025-13-45"}, 422),
        (API, {"tag": "no-equals-sign"}, 422),
        (API, {"since": "2025-01-01T00:00:00Z"}, 400),  # a live tracker has no time ranges
        (API, {"since": "7d"}, 400),
        (API, {"tag": "team=search"}, 400),  # nor tags
        (f"{API}/timeseries", {}, 400),  # nor time series
        (f"{API}/timeseries", {"bucket": "week"}, 422),
        (f"{API}/timeseries", {"by": "colour"}, 422),
        (f"{API}/sessions/s1", {"customer": "acme"}, 400),
        (f"{API}/sessions/s1", {"session": "s2"}, 404),
        (f"{API}/nothing-here", {}, 404),
    ],
)
def test_live_tracker_errors_are_one_readable_message(
    live: agentmeter.Tracker, path: str, params: dict[str, Any], status: int
) -> None:
    with TestClient(create_app(tracker=live)) as c:
        r = c.get(path, params=params)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    assert set(r.json()) == {"detail"}
    assert "Traceback" not in r.text


def test_error_messages_say_what_to_do(live: agentmeter.Tracker) -> None:
    with TestClient(create_app(tracker=live)) as c:
        detail = c.get(API, params={"since": "last tuesday"}).json()["detail"]
        assert "ISO 8601" in detail and "7d" in detail and "last tuesday" in detail
        detail = c.get(f"{API}/sessions", params={"limit": 0}).json()["detail"]
        assert "limit" in detail and "greater than or equal to 1" in detail
        assert c.get(f"{API}/sessions/nope").json()["detail"] == "unknown session 'nope'"
        assert "database" in c.get(f"{API}/timeseries").json()["detail"]
        r = c.delete(API)
        assert r.status_code == 405 and isinstance(r.json()["detail"], str)
        r = c.post(
            f"{API}/reset", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code in (403, 422) and isinstance(r.json()["detail"], str)


def test_the_time_rule_is_the_clis(dated: Path) -> None:
    from agentmeter.cli.report import parse_time

    with TestClient(create_app(db_url=dated)) as c:
        week = c.get(API, params={"since": "7d"}).json()
        assert week["totals"]["input_tokens"] == 1  # the event 3 days ago, not the one 10 days ago
        assert abs(datetime.fromisoformat(week["since"]) - parse_time("7d")) < timedelta(seconds=60)
        two = c.get(API, params={"since": "2w"}).json()
        assert two["totals"]["input_tokens"] == 3
        bad = c.get(API, params={"since": "sometime"}).json()["detail"]
    with pytest.raises(Exception) as cli_error:
        parse_time("sometime")
    assert str(cli_error.value) in bad  # the same message, word for word


# ------------------------------------------------------------ the lock
def _get_paths(app: Any) -> list[str]:
    """Every GET route of the app, with ids filled in (a real id where one is needed)."""
    fill = {
        "{session_id:path}": "s1",
        "{customer_id:path}": "acme",
        "{agent_id:path}": "planner",
        "{model_name:path}": "m1",
    }
    out = []
    for route in app.routes:
        if "GET" not in getattr(route, "methods", ()) or route.path == HEALTH:
            continue
        if not route.path.startswith("/api/") and route.path not in ("/openapi.json", "/docs"):
            continue  # the dashboard's pages: its own tests
        path = route.path
        for k, v in fill.items():
            path = path.replace(k, v)
        if "{" in path:  # e.g. the dashboard's static files
            continue
        out.append(path)
    return out


def test_every_endpoint_but_health_needs_the_token(live: agentmeter.Tracker) -> None:
    app = create_app(tracker=live, token=TOKEN)
    paths = _get_paths(app)
    assert {API, f"{API}/customers", f"{API}/timeseries", "/openapi.json", "/docs"} <= set(paths)
    with TestClient(app) as c:
        r = c.get(HEALTH)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = c.get(path, headers=headers, follow_redirects=False)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.json()["detail"].startswith("missing or wrong token")
            # Query strings are not credentials.
            r = c.get(path, params={"token": TOKEN}, follow_redirects=False)
            assert r.status_code == 401, path
            r = c.get(path, headers=AUTH)
            assert r.status_code in (200, 400), (path, r.text)  # 400: timeseries on a tracker
        assert c.post(f"{API}/reset").status_code == 401
        r = c.post(f"{API}/reset", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with TestClient(app, cookies={"agentmeter_token": TOKEN}) as c:  # browsers: the cookie
        assert c.get(API).status_code == 200
    with TestClient(app, cookies={"agentmeter_token": "wrong"}) as c:
        assert c.get(API).status_code == 401
    with TestClient(app) as c:
        r = c.get(API, headers={"Authorization": f"bearer {TOKEN}"})  # scheme is case-blind
        assert r.status_code == 200


def test_without_a_token_reads_are_open_and_reset_is_off(live: agentmeter.Tracker) -> None:
    with TestClient(create_app(tracker=live)) as c:
        assert c.get(API).status_code == 200
        assert c.get("/openapi.json").status_code == 200
        r = c.post(f"{API}/reset", headers=AUTH)
        assert r.status_code == 403 and "disabled" in r.json()["detail"]
    assert live.snapshot().totals.llm_calls > 0


def test_check_request_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from agentmeter.server import auth

    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    app = create_app(tracker=agentmeter.Tracker(), token=TOKEN)
    with TestClient(app) as c:
        assert c.get(API, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get(API, headers=AUTH).status_code == 200
    assert (b"nope", TOKEN.encode()) in seen and (TOKEN.encode(), TOKEN.encode()) in seen


def test_reset_of_a_live_tracker(live: agentmeter.Tracker) -> None:
    with TestClient(create_app(tracker=live, token=TOKEN)) as c:
        assert c.post(f"{API}/reset").status_code == 401
        r = c.post(f"{API}/reset", headers=AUTH, json={"session": "s1"})
        assert r.status_code == 400 and "all of its counters" in r.json()["detail"]
        assert live.snapshot().totals.llm_calls > 0
        r = c.post(f"{API}/reset", headers=AUTH)
        assert r.status_code == 200 and r.json()["reset"] is True
        assert r.json()["source"] == "tracker" and r.json()["deleted_events"] is None
        assert live.snapshot().totals == agentmeter.Usage()
        assert c.get(f"{API}/reset", headers=AUTH).status_code == 405


# ------------------------------------------------------------ databases
def test_database_endpoints_equal_the_live_tracker(stored: tuple[str, agentmeter.Tracker]) -> None:
    url, t = stored
    snap = t.snapshot()
    with TestClient(create_app(db_url=url)) as c:
        body = c.get(API).json()
        assert body["source"] == "database"
        assert body["totals"] == _json(snap.totals)
        for view in ("by_customer", "by_agent", "by_model", "by_session", "by_provider"):
            assert body[view] == {k: _json(v) for k, v in getattr(snap, view).items()}, view
        for sid in SESSIONS:
            got = c.get(f"{API}/sessions/{sid}").json()
            want = _json(t.session(sid))
            want["budget"] = None  # budgets live in the tracker
            assert _without_recent(got.pop("tools")) == _without_recent(want.pop("tools"))
            assert got == want
        for cid in CUSTOMERS:
            got = c.get(f"{API}/customers/{cid}").json()
            want = _json(t.customer(cid))
            assert _without_recent(got.pop("tools")) == _without_recent(want.pop("tools"))
            assert got == want, cid
        page = c.get(f"{API}/sessions", params={"limit": 10}).json()
        assert page["total"] == len(snap.by_session)
        assert all(s["first_seen"] and s["last_seen"] for s in page["sessions"])
        customers = c.get(f"{API}/customers", params={"limit": 2, "offset": 1}).json()
        ordered = sorted(snap.by_customer, key=lambda k: (-snap.by_customer[k].total_tokens, k))
        assert customers["total"] == 4  # and quiet-co
        assert [x["customer_id"] for x in customers["customers"]] == ordered[1:3]
        for listing, key, view in (
            ("agents", "agent_id", snap.by_agent),
            ("models", "model", snap.by_model),
        ):
            rows = c.get(f"{API}/{listing}").json()[listing]
            assert {x[key]: x["usage"] for x in rows} == {k: _json(v) for k, v in view.items()}
        agent = c.get(f"{API}/agents/team/coder").json()
        assert agent["usage"] == _json(snap.by_agent["team/coder"])
        model = c.get(f"{API}/models/openai/gpt-x").json()
        assert model["usage"] == _json(snap.by_model["openai/gpt-x"])
        tools = c.get(f"{API}/tools").json()
        assert _without_recent(tools["tools"]) == _without_recent(
            {k: _json(v) for k, v in snap.by_tool.items()}
        )
        assert _without_recent(tools["by_category"]) == _without_recent(
            {k: _json(v) for k, v in snap.by_category.items()}
        )
        ctools = c.get(f"{API}/tools", params={"customer": "globex/eu"}).json()["tools"]
        assert _without_recent(ctools) == _without_recent(
            {k: _json(v) for k, v in snap.by_customer_tool["globex/eu"].items()}
        )
        for path in ("sessions/nope", "customers/no/one", "agents/nope", "models/a/b/c"):
            r = c.get(f"{API}/{path}")
            assert r.status_code == 404 and r.json()["detail"].startswith("unknown "), path
        assert c.get(f"{API}/tools", params={"session": "nope"}).status_code == 404
        assert c.get(API, params={"until": "not a time"}).status_code == 422
        r = c.get(API, params={"since": "2025-01-02", "until": "2025-01-01"})
        assert r.status_code == 422 and "before" in r.json()["detail"]
        assert c.post(f"{API}/reset").status_code == 403


def test_database_filters_tags_and_time(dated: Path) -> None:
    with TestClient(create_app(db_url=dated)) as c:
        assert c.get(API).json()["totals"]["input_tokens"] == 63
        r = c.get(API, params={"since": "2025-06-03", "until": "2025-06-05T00:00:00+00:00"})
        assert r.status_code == 200
        assert r.json()["totals"]["input_tokens"] == 20
        assert r.json()["since"].startswith("2025-06-03")
        r = c.get(f"{API}/sessions/s/new", params={"since": "2025-06-05"})
        assert r.json()["usage"]["llm_calls"] == 2  # June 5 and 6
        assert c.get(f"{API}/agents/a", params={"since": "2030-01-01"}).status_code == 404
        tagged = c.get(API, params={"tag": "team=search"}).json()
        assert tagged["totals"]["input_tokens"] == 20 and tagged["filters"]["tags"] == {
            "team": "search"
        }
        assert (
            c.get(API, params={"tag": ["team=search", "env=prod"]}).json()["totals"]["llm_calls"]
            == 0
        )
        acme = c.get(f"{API}/customers/acme").json()
        assert acme["usage"]["input_tokens"] == 30 and set(acme["by_session"]) == {"s/old", "s/new"}
        listing = c.get(f"{API}/customers", params={"until": "2025-06-02"}).json()
        assert [x["customer_id"] for x in listing["customers"]] == ["globex/eu"]
        sessions = c.get(f"{API}/sessions", params={"customer": "globex/eu"}).json()
        assert {s["session_id"] for s in sessions["sessions"]} == {"s/old", "s/new"}


def test_timeseries(dated: Path) -> None:
    with TestClient(create_app(db_url=dated)) as c:
        day = c.get(f"{API}/timeseries", params={"bucket": "day", "until": "2025-07-01"}).json()
        assert day["bucket"] == "day" and day["by"] is None
        assert [p["start"][:10] for p in day["points"]] == [f"2025-06-0{i}" for i in range(1, 7)]
        assert all(p["usage"]["input_tokens"] == 10 and p["key"] is None for p in day["points"])
        assert datetime.fromisoformat(day["points"][0]["start"]) == datetime(2025, 6, 1, tzinfo=UTC)
        hour = c.get(
            f"{API}/timeseries",
            params={"bucket": "hour", "by": "customer", "until": "2025-06-03"},
        ).json()
        assert [(p["start"], p["key"]) for p in hour["points"]] == [
            ("2025-06-01T12:00:00Z", "globex/eu"),
            ("2025-06-02T12:00:00Z", "acme"),
        ]
        filtered = c.get(
            f"{API}/timeseries", params={"customer": "acme", "tag": "team=search"}
        ).json()
        assert [p["usage"]["input_tokens"] for p in filtered["points"]] == [10]
        everything = c.get(f"{API}/timeseries", params={"by": "session"}).json()["points"]
        assert sum(p["usage"]["input_tokens"] for p in everything) == 63


def test_database_reset_deletes_only_what_it_names(dated: Path) -> None:
    with TestClient(create_app(db_url=dated, token=TOKEN)) as c:
        r = c.post(f"{API}/reset", headers=AUTH)
        assert r.status_code == 400 and "name what to delete" in r.json()["detail"]
        r = c.post(f"{API}/reset", headers=AUTH, json={})
        assert r.status_code == 400
        assert c.get(API, headers=AUTH).json()["totals"]["llm_calls"] == 8
        r = c.post(f"{API}/reset", headers=AUTH, json={"colour": "red"})
        assert r.status_code == 422
        r = c.post(f"{API}/reset", headers=AUTH, json={"since": "whenever"})
        assert r.status_code == 422 and "ISO 8601" in r.json()["detail"]
        r = c.post(f"{API}/reset", headers=AUTH, params={"session": "r"}, json={"session": "s/old"})
        assert r.status_code == 422  # two different answers to one question

        r = c.post(f"{API}/reset", headers=AUTH, json={"session": "s/old"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["deleted_events"] == 3 and body["deleted"]["events"] == 3
        assert body["session"] == "s/old" and body["source"] == "database"
        assert c.get(f"{API}/sessions/s/old", headers=AUTH).status_code == 404
        assert c.get(API, headers=AUTH).json()["totals"]["input_tokens"] == 33

        r = c.post(f"{API}/reset", headers=AUTH, params={"customer": "acme", "until": "2025-06-06"})
        assert r.status_code == 200 and r.json()["deleted_events"] == 1  # June 4 (June 2: gone)
        assert r.json()["customer"] == "acme" and r.json()["until"].startswith("2025-06-06")
        assert c.get(f"{API}/customers/acme", headers=AUTH).json()["usage"]["input_tokens"] == 10

        r = c.post(f"{API}/reset", headers=AUTH, params={"since": "7d"})
        assert r.status_code == 200 and r.json()["deleted_events"] == 1  # the one 3 days ago
        left = c.get(API, headers=AUTH).json()["totals"]
        assert left["input_tokens"] == 22 and left["llm_calls"] == 3
    with UsageStore(dated) as store:
        assert store.count() == 3 and store.totals().input_tokens == 22


def test_database_error_is_503_without_traceback(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "gone.db"
    with SQLSink(path) as sink:
        sink.submit(event("x", time.time(), model="m", input_tokens=1))
    app = create_app(db_url=str(path))
    con = sqlite3.connect(path)
    for (name,) in con.execute("select name from sqlite_master where type = 'table'").fetchall():
        con.execute(f'drop table "{name}"')
    con.commit()
    con.close()
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get(API)
    assert r.status_code == 503
    assert r.json()["detail"].startswith("database unavailable")


def test_create_app_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either"):
        create_app(tracker=agentmeter.Tracker(), db_url="x.db")
    with pytest.raises(DatabaseError, match="not found"):
        create_app(db_url=str(tmp_path / "missing.db"))
    with pytest.raises(ValueError, match="token"):
        create_app(tracker=agentmeter.Tracker(), token="")
    with pytest.raises(TypeError):
        create_app(tracker="not a tracker")  # type: ignore[arg-type]
    app = create_app()  # the process-wide default tracker
    with TestClient(app) as c:
        assert c.get(API).json()["source"] == "tracker"


# ------------------------------------------------------------- contract
def test_openapi_schema_documents_every_field(live: agentmeter.Tracker) -> None:
    with TestClient(create_app(tracker=live, token=TOKEN)) as c:
        schema = c.get("/openapi.json", headers=AUTH).json()
    paths = schema["paths"]
    for p in (
        HEALTH,
        API,
        f"{API}/sessions",
        f"{API}/sessions/{{session_id}}",
        f"{API}/customers",
        f"{API}/customers/{{customer_id}}",
        f"{API}/agents",
        f"{API}/agents/{{agent_id}}",
        f"{API}/models",
        f"{API}/models/{{model_name}}",
        f"{API}/tools",
        f"{API}/timeseries",
        f"{API}/reset",
    ):
        assert p in paths, p
    params = {p["name"] for p in paths[f"{API}/timeseries"]["get"]["parameters"]}
    assert {"bucket", "by", "customer", "session", "tag", "since", "until"} <= params
    comps = schema["components"]["schemas"]
    for name in (
        "UsageOverview",
        "SessionList",
        "CustomerList",
        "CustomerUsage",
        "SessionUsage",
        "Timeseries",
        "ToolStats",
        "Usage",
        "ErrorResponse",
    ):
        assert any(k.split("-")[0] == name for k in comps), name
    undocumented = [
        f"{name}.{prop}"
        for name, comp in comps.items()
        if not name.startswith(("HTTPValidationError", "ValidationError"))
        for prop, spec in comp.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undocumented == []
    assert {"HTTPBearer", "APIKeyCookie"} <= set(schema["components"]["securitySchemes"])
    assert "security" not in paths[HEALTH]["get"]
    assert "security" in paths[API]["get"]


def test_json_fields_are_the_documented_ones(stored: tuple[str, agentmeter.Tracker]) -> None:
    """Every key of every response is a property of its documented schema."""
    url, _t = stored
    app = create_app(db_url=url)
    with TestClient(app) as c:
        comps = c.get("/openapi.json").json()["components"]["schemas"]

        def props(name: str) -> set[str]:
            for key in (name, f"{name}-Output"):
                if key in comps:
                    return set(comps[key]["properties"])
            raise AssertionError(name)

        usage, tool = props("Usage"), props("ToolStats")
        overview = c.get(API).json()
        assert set(overview) == props("UsageOverview")
        assert set(overview["totals"]) == usage
        customer = c.get(f"{API}/customers/acme").json()
        assert set(customer) == props("CustomerUsage")
        assert all(set(t) == tool for t in customer["tools"].values())
        series = c.get(f"{API}/timeseries", params={"by": "model"}).json()
        assert set(series) == props("Timeseries")
        assert all(set(p) == props("TimePoint") for p in series["points"])


def test_costs_are_six_place_decimal_strings(stored: tuple[str, agentmeter.Tracker]) -> None:
    url, _t = stored
    with TestClient(create_app(db_url=url)) as c:
        body = c.get(API).json()
        usages = [body["totals"], *body["by_model"].values(), *body["by_customer"].values()]
        for u in usages:
            if u["cost_usd"] is None:  # only when calls were made and none was priced
                assert u["unpriced_calls"] == u["llm_calls"] + u["embedding_calls"] > 0
            else:
                assert isinstance(u["cost_usd"], str) and len(u["cost_usd"].split(".")[1]) == 6
        # a model with no price: every call unpriced -> null, never "0"
        assert body["by_model"]["mystery-model"]["cost_usd"] is None
        assert body["by_model"]["mystery-model"]["unpriced_calls"] > 0
        quiet = c.get(f"{API}/sessions/quiet").json()["usage"]
        assert quiet["cost_usd"] == "0.000000" and quiet["cost_micros"] == 0
        assert c.get(f"{API}/customers/quiet-co").json()["usage"]["cost_usd"] == "0.000000"


# ------------------------------------------------------------ over HTTP
def test_real_uvicorn_server_over_http(stored: tuple[str, agentmeter.Tracker]) -> None:
    import uvicorn

    url, t = stored
    port = free_port()
    config = uvicorn.Config(
        create_app(db_url=url, token=TOKEN), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get(HEALTH).json() == {"status": "ok"}
            assert client.get(API).status_code == 401
            r = client.get(API, headers=AUTH)
            assert r.status_code == 200
            assert r.json()["totals"]["llm_calls"] == t.snapshot().totals.llm_calls
            assert client.get(f"{API}/models/openai/gpt-x", headers=AUTH).status_code == 200
            assert client.get(f"{API}/customers/globex/eu", headers=AUTH).status_code == 200
            assert client.get(f"{API}/sessions/chat/7", headers=AUTH).status_code == 200
            assert client.get(f"{API}/sessions/none", headers=AUTH).status_code == 404
            assert client.get(API, params={"since": "x"}, headers=AUTH).status_code == 422
            assert client.post(f"{API}/reset").status_code == 401
            r = client.post(f"{API}/reset", headers=AUTH, json={"customer": "acme"})
            assert r.status_code == 200 and r.json()["deleted_events"] > 0
            assert client.get(f"{API}/customers/acme", headers=AUTH).status_code == 404
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_live_session_without_tools_has_an_empty_tool_table() -> None:
    t = agentmeter.Tracker()
    t.record_llm("gpt-4o", 10, 1, session_id="talker")  # a session that called no tool
    with TestClient(create_app(tracker=t)) as c:
        r = c.get(f"{API}/tools", params={"session": "talker"})
        assert r.status_code == 200 and r.json()["tools"] == {}


def test_the_overview_pages_its_sessions(tmp_path: Path) -> None:
    """``GET /api/v1/usage`` lists one page of sessions (``limit`` / ``offset``, largest
    first) and says how many there are -- the same on both backends."""
    t = priced_tracker()
    path = tmp_path / "pages.db"
    with SQLSink(path) as sink:
        t.add_sink(sink)
        for i in range(7):
            t.record_llm("gpt-4o-mini", 100 - i, 1, session_id=f"s{i}", customer_id="acme")
        t.record_llm("gpt-4o-mini", 5, 1)
        assert sink.flush(30)
    snap = t.snapshot()
    ordered = sorted(snap.by_session, key=lambda k: (-snap.by_session[k].total_tokens, k))
    for app in (create_app(db_url=str(path)), create_app(tracker=t)):
        with TestClient(app) as c:
            body = c.get(API).json()
            assert (body["session_count"], body["limit"], body["offset"]) == (7, 100, 0)
            assert list(body["by_session"]) == ordered
            page = c.get(API, params={"limit": 2, "offset": 3}).json()
            assert list(page["by_session"]) == ordered[3:5]
            assert page["by_session"]["s3"] == _json(snap.by_session["s3"])
            assert (page["session_count"], page["limit"], page["offset"]) == (7, 2, 3)
            assert page["totals"] == body["totals"] == _json(snap.totals)
            assert page["by_customer"] == body["by_customer"]
            past = c.get(API, params={"offset": 50}).json()
            assert past["by_session"] == {} and past["session_count"] == 7
            bad = c.get(API, params={"limit": 0})
            assert bad.status_code == 422 and "limit" in bad.json()["detail"]
