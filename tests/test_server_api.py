"""The REST API: every endpoint and error code, over a live tracker and over databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import storage_pg
from storage_pg import free_port
from storage_util import priced_tracker, raw_event, workload

pytest.importorskip("fastapi", reason="the REST API needs: pip install 'agentmeter-core[server]'")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import agentmeter  # noqa: E402
from agentmeter.server import create_app  # noqa: E402
from agentmeter.storage import DatabaseError, SQLSink  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning")
db_url = storage_pg.db_url  # the fixtures
pg = storage_pg.pg
API = "/api/v1/usage"
TOKEN = "s3cret-token"


def _json(model: Any) -> Any:
    return model.model_dump(mode="json")


@pytest.fixture
def live() -> agentmeter.Tracker:
    t = priced_tracker()
    workload(t, n=150, seed=5)
    t.set_budget("s1", agentmeter.Budget(max_tokens=10**9))
    return t


@pytest.fixture
def stored(db_url: str) -> Iterator[tuple[str, agentmeter.Tracker]]:
    t = priced_tracker()
    with SQLSink(db_url) as sink:
        t.add_sink(sink)
        workload(t, n=150, seed=5)
    yield db_url, t


def test_live_tracker_endpoints(live: agentmeter.Tracker) -> None:
    snap = live.snapshot()
    with TestClient(create_app(tracker=live)) as c:
        r = c.get(API)
        assert r.status_code == 200
        body = r.json()
        assert body["source"] == "tracker"
        assert body["totals"] == _json(snap.totals)
        for view in ("by_agent", "by_model", "by_session", "by_provider"):
            assert body[view] == {k: _json(v) for k, v in getattr(snap, view).items()}

        r = c.get(f"{API}/sessions", params={"limit": 2, "offset": 1})
        assert r.status_code == 200
        page = r.json()
        assert page["total"] == len(snap.by_session) and page["limit"] == 2
        ordered = sorted(snap.by_session, key=lambda k: (-snap.by_session[k].total_tokens, k))
        assert [s["session_id"] for s in page["sessions"]] == ordered[1:3]

        r = c.get(f"{API}/sessions/s1")
        assert r.status_code == 200
        sess = r.json()
        assert sess == _json(live.session("s1"))
        assert 10**9 in sess["budget"]["limits"].values()
        assert set(sess["tools"]) == set(live.session("s1").tools)

        r = c.get(f"{API}/agents/planner")
        assert r.status_code == 200
        agent = r.json()
        assert agent["usage"] == _json(snap.by_agent["planner"])

        r = c.get(f"{API}/models/openai/gpt-x")  # a model name with a slash
        assert r.status_code == 200
        assert r.json()["model"] == "openai/gpt-x"
        assert r.json()["usage"] == _json(snap.by_model["openai/gpt-x"])

        r = c.get(f"{API}/tools")
        assert r.status_code == 200
        assert r.json()["tools"]["search"]["calls"] == snap.by_tool["search"].calls
        assert "web" in r.json()["by_category"]
        r = c.get(f"{API}/tools", params={"session_id": "s2"})
        assert set(r.json()["tools"]) == set(snap.by_session_tool["s2"])


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (f"{API}/sessions/nope", {}, 404),
        (f"{API}/agents/nope", {}, 404),
        (f"{API}/models/vendor/nope", {}, 404),
        (f"{API}/tools", {"session_id": "nope"}, 404),
        (f"{API}/tools", {"session_id": ""}, 422),
        (f"{API}/sessions", {"limit": 0}, 422),
        (f"{API}/sessions", {"limit": 5000}, 422),
        (f"{API}/sessions", {"limit": "ten"}, 422),
        (f"{API}/sessions", {"offset": -1}, 422),
        (f"{API}/sessions", {"offset": 2**63}, 422),
        (API, {"since": "yesterday-ish"}, 422),
        (API, {"since": "2025-01-01T00:00:00Z"}, 400),  # a live tracker has no time ranges
        (f"{API}/nothing-here", {}, 404),
    ],
)
def test_live_tracker_errors(
    live: agentmeter.Tracker, path: str, params: dict[str, Any], status: int
) -> None:
    with TestClient(create_app(tracker=live)) as c:
        r = c.get(path, params=params)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    assert "Traceback" not in r.text


def test_reset_needs_the_token(live: agentmeter.Tracker) -> None:
    with TestClient(create_app(tracker=live)) as c:  # no token configured: reset is off
        r = c.post(f"{API}/reset", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403
    with TestClient(create_app(tracker=live, token=TOKEN)) as c:
        assert c.post(f"{API}/reset").status_code == 401
        r = c.post(f"{API}/reset", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post(f"{API}/reset", headers={"Authorization": TOKEN}).status_code == 401
        assert live.snapshot().totals.llm_calls > 0
        r = c.post(f"{API}/reset", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["reset"] is True
        assert live.snapshot().totals == agentmeter.Usage()
        assert c.get(f"{API}/reset").status_code == 405


def test_database_endpoints_equal_the_live_tracker(stored: tuple[str, agentmeter.Tracker]) -> None:
    url, t = stored
    snap = t.snapshot()
    with TestClient(create_app(db_url=url)) as c:
        body = c.get(API).json()
        assert body["source"] == "database"
        assert body["totals"] == _json(snap.totals)
        for view in ("by_agent", "by_model", "by_session", "by_provider"):
            assert body[view] == {k: _json(v) for k, v in getattr(snap, view).items()}
        for sid in ("s1", "s2", "s3"):
            assert c.get(f"{API}/sessions/{sid}").json() == _json(t.session(sid))
        page = c.get(f"{API}/sessions", params={"limit": 10}).json()
        assert page["total"] == 3
        assert all(s["first_seen"] and s["last_seen"] for s in page["sessions"])
        agent = c.get(f"{API}/agents/coder").json()
        assert agent["usage"] == _json(snap.by_agent["coder"])
        model = c.get(f"{API}/models/openai/gpt-x").json()
        assert model["usage"] == _json(snap.by_model["openai/gpt-x"])
        tools = c.get(f"{API}/tools").json()["tools"]
        for name, stats in snap.by_tool.items():
            expected = _json(stats)
            assert {k: v for k, v in tools[name].items() if k != "recent_call_ids"} == {
                k: v for k, v in expected.items() if k != "recent_call_ids"
            }
        for path in ("sessions/nope", "agents/nope", "models/a/b/c"):
            assert c.get(f"{API}/{path}").status_code == 404
        assert c.get(f"{API}/tools", params={"session_id": "nope"}).status_code == 404
        assert c.get(API, params={"until": "not a time"}).status_code == 422
        r = c.get(API, params={"since": "2025-01-02", "until": "2025-01-01"})
        assert r.status_code == 422 and "before" in r.json()["detail"]
        assert c.post(f"{API}/reset").status_code == 403


def test_database_time_ranges_and_reset(db_url: str) -> None:
    base = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
    with SQLSink(db_url) as sink:
        for i in range(6):
            sink.submit(
                raw_event(
                    f"c{i}",
                    base + 86400 * i,
                    model="m1",
                    input_tokens=10,
                    session_id="s",
                    agent_id="a",
                )
            )
    with TestClient(create_app(db_url=db_url, token=TOKEN)) as c:
        assert c.get(API).json()["totals"]["input_tokens"] == 60
        r = c.get(API, params={"since": "2025-06-03", "until": "2025-06-05T00:00:00+00:00"})
        assert r.status_code == 200
        assert r.json()["totals"]["input_tokens"] == 20
        assert r.json()["since"].startswith("2025-06-03")
        r = c.get(f"{API}/sessions/s", params={"since": "2025-06-05"})
        assert r.json()["usage"]["llm_calls"] == 2  # June 5 and 6
        r = c.get(f"{API}/agents/a", params={"since": "2030-01-01"})
        assert r.status_code == 404
        r = c.post(f"{API}/reset", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["deleted_events"] == 6
        assert c.get(API).json()["totals"]["llm_calls"] == 0


def test_database_error_is_503_without_traceback(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "gone.db"
    with SQLSink(path) as sink:
        sink.submit(raw_event("x", time.time(), model="m", input_tokens=1))
    app = create_app(db_url=str(path))
    con = sqlite3.connect(path)
    con.execute("drop table agentmeter_events")
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


def test_openapi_schema_is_the_contract(live: agentmeter.Tracker) -> None:
    with TestClient(create_app(tracker=live, token=TOKEN)) as c:
        schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    for p in (
        API,
        f"{API}/sessions",
        f"{API}/sessions/{{session_id}}",
        f"{API}/agents/{{agent_id}}",
        f"{API}/models/{{model}}",
        f"{API}/tools",
        f"{API}/reset",
    ):
        assert p in paths, p
    comps = schema["components"]["schemas"]
    for name in ("UsageOverview", "SessionList", "SessionUsage", "ToolStats", "Usage"):
        assert any(k.startswith(name) for k in comps), name
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


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
            r = client.get(API)
            assert r.status_code == 200
            assert r.json()["totals"]["llm_calls"] == t.snapshot().totals.llm_calls
            assert client.get(f"{API}/models/openai/gpt-x").status_code == 200
            assert client.get(f"{API}/sessions/none").status_code == 404
            assert client.get(API, params={"since": "x"}).status_code == 422
            assert client.post(f"{API}/reset").status_code == 401
            r = client.post(f"{API}/reset", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_live_session_without_tools_has_an_empty_tool_table() -> None:
    t = agentmeter.Tracker()
    t.record_llm("gpt-4o", 10, 1, session_id="talker")  # a session that called no tool
    with TestClient(create_app(tracker=t)) as c:
        r = c.get(f"{API}/tools", params={"session_id": "talker"})
        assert r.status_code == 200 and r.json()["tools"] == {}
