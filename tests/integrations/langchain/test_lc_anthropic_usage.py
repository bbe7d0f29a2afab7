"""The real langchain-anthropic ChatAnthropic, served Anthropic bodies over an httpx mock.

langchain-anthropic reports a non-streamed answer's prompt-cache writes under the
TTL breakdown (``input_token_details.ephemeral_5m/1h_input_tokens``) with
``cache_creation`` = 0; the normaliser must still find the writes.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from agentmeter.instrumentation import UsageCounts, _usage, from_langchain, normalise_usage

anthropic = pytest.importorskip("anthropic")
pytest.importorskip("langchain_anthropic")

from agentmeter_langchain import AgentMeterCallbackHandler  # noqa: E402
from langchain_anthropic import ChatAnthropic, chat_models  # noqa: E402

import agentmeter  # noqa: E402

DATA = Path(__file__).parents[2] / "data" / "provider_usage"

# The HTTP package the installed anthropic SDK is built on (httpx, or httpx2 in 2.x).
hx: Any = importlib.import_module(
    next(
        root
        for root in (c.__module__.partition(".")[0] for c in anthropic.DefaultHttpxClient.__mro__)
        if root in ("httpx", "httpx2")
    )
)

pytestmark = pytest.mark.timeout(60)


def _body(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))["body"]


def _message_with_1h_cache_write() -> dict[str, Any]:
    """The recorded Messages body, with the recorded usage of a 1-hour cache write."""
    message = _body("anthropic_messages_sdk_cassette.json")
    message["usage"] = _body("anthropic_messages_usage_1h_cache_recorded.json")["usage"]
    return message


def _sse(events: list[dict[str, Any]]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ChatAnthropic's HTTP client answer from a handler (no network)."""

    def install(handler: Any) -> list[hx.Request]:
        seen: list[hx.Request] = []

        def respond(request: hx.Request) -> hx.Response:
            seen.append(request)
            return handler(request)

        def client(**kw: Any) -> hx.Client:
            return hx.Client(
                transport=hx.MockTransport(respond),
                base_url=kw.get("base_url") or "https://api.anthropic.com",
            )

        monkeypatch.setattr(chat_models, "_get_default_httpx_client", client)
        return seen

    return install


def _model(**kw: Any) -> ChatAnthropic:
    return ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", max_retries=0, **kw)  # type: ignore[call-arg]


def test_ttl_cache_writes_reach_from_langchain(serve: Any) -> None:
    seen = serve(lambda r: hx.Response(200, json=_message_with_1h_cache_write()))
    msg = _model().invoke("hi")
    assert len(seen) == 1
    um = msg.usage_metadata
    assert um is not None
    # What langchain-anthropic does: the write only under the TTL key.
    details = um["input_token_details"]
    assert details.get("cache_creation") == 0
    assert details.get("ephemeral_1h_input_tokens") == 6853
    expected = UsageCounts(10 + 6853, 792, cache_write_tokens=6853)
    assert from_langchain(um) == expected
    assert normalise_usage(msg) == expected
    assert _usage._from_langchain(um) == expected  # without the one-pass shortcut


def test_streamed_answer_with_cache_and_thinking(serve: Any) -> None:
    events = _body("anthropic_stream_message_start_delta_sdk_fixture.json")
    start, delta = events
    stream = [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello there!"},
        },
        {"type": "content_block_stop", "index": 0},
        delta,
        {"type": "message_stop"},
    ]
    serve(
        lambda r: hx.Response(
            200, content=_sse(stream), headers={"content-type": "text/event-stream"}
        )
    )
    chunks = list(_model(stream_usage=True).stream("hi"))
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c  # type: ignore[assignment]
    um = total.usage_metadata  # type: ignore[attr-defined]
    assert um is not None
    # message_delta's usage is cumulative: 40 uncached + 7 read + 12 written.
    assert from_langchain(um) == UsageCounts(59, 8, 7, 12, 3)


def test_handler_records_the_ttl_cache_writes(serve: Any) -> None:
    serve(lambda r: hx.Response(200, json=_message_with_1h_cache_write()))
    tracker = agentmeter.Tracker()
    handler = AgentMeterCallbackHandler(tracker)
    _model().invoke("hi", config={"callbacks": [handler]})
    totals = tracker.snapshot().totals
    assert (totals.input_tokens, totals.cache_write_tokens) == (6863, 6853)
