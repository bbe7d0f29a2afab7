"""MeteredEmbeddings: LangChain embeddings fire no callbacks; the wrapper meters them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from agentmeter_langchain import MeteredEmbeddings
from langchain_core.embeddings import Embeddings

import agentmeter


class _Counting(Embeddings):
    """A fake embedding model (no numpy) that counts the calls that reached it."""

    def __init__(self, size: int, fail: bool = False) -> None:
        self.size = size
        self.fail = fail
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("embedding service down")
        return [[float(len(t))] * self.size for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_sync_and_async_calls_are_metered(lc_tracker: agentmeter.Tracker) -> None:
    emb = MeteredEmbeddings(_Counting(size=4), lc_tracker, session_id="e")
    assert isinstance(emb, Embeddings)
    vectors = emb.embed_documents(["a" * 40, "b" * 8])
    assert len(vectors) == 2 and len(vectors[0]) == 4
    emb.embed_query("c" * 4)

    async def run() -> None:
        await emb.aembed_documents(["d" * 4])
        await emb.aembed_query("e" * 4)

    asyncio.run(asyncio.wait_for(run(), 10))
    usage = lc_tracker.session("e").usage
    assert usage.embedding_calls == 4
    assert usage.embedding_tokens == 10 + 2 + 1 + 1 + 1  # ~4 characters per token
    assert usage.estimated_calls == 4  # no tokenizer for this model: flagged estimated
    assert emb.size == 4  # other attributes pass through


def _whitespace_tokens(text: str) -> int:
    """A tokenizer standing in for the model's own (one token per word)."""
    return len(text.split())


def test_exact_count_with_a_tokenizer(lc_tracker: agentmeter.Tracker) -> None:
    emb = MeteredEmbeddings(
        _Counting(size=4),
        lc_tracker,
        model="text-embedding-3-small",
        token_counter=_whitespace_tokens,
    )
    emb.embed_documents(["one two three", "four"])
    usage = lc_tracker.snapshot().totals
    assert usage.embedding_tokens == 4 and usage.estimated_calls == 0


def test_failure_is_recorded_and_reraised(lc_tracker: agentmeter.Tracker) -> None:
    events: list[agentmeter.UsageEvent] = []
    lc_tracker.subscribe(events.append)
    emb = MeteredEmbeddings(_Counting(size=4, fail=True), lc_tracker)
    with pytest.raises(ConnectionError):
        emb.embed_documents(["x"])
    assert events[0].status == "error" and events[0].error == "ConnectionError"
    assert events[0].input_tokens == 0


def test_budget_blocks_the_call(lc_tracker: agentmeter.Tracker) -> None:
    inner = _Counting(size=4)
    emb = MeteredEmbeddings(inner, lc_tracker)
    with (
        pytest.raises(agentmeter.BudgetExceeded),
        lc_tracker.meter("ingest", budget=agentmeter.Budget(max_tokens=12)),
    ):
        emb.embed_documents(["a" * 40])  # 10 tokens
        emb.embed_documents(["a" * 40])  # would be 20 > 12: refused
    assert inner.calls == 1


class _EmbeddingsServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i, _ in enumerate(body["input"])
        ]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 7, "total_tokens": 7},
            },
        )


def test_openai_embeddings_over_a_mock_transport(lc_tracker: agentmeter.Tracker) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    server = _EmbeddingsServer()
    transport = httpx.MockTransport(server.handle)
    raw = langchain_openai.OpenAIEmbeddings(
        model="text-embedding-3-small",
        api_key="sk-test",
        base_url="http://mock.local/v1",
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
        check_embedding_ctx_length=False,  # its own chunking needs tiktoken's download
        max_retries=0,
    )
    emb = MeteredEmbeddings(raw, lc_tracker)
    assert (emb.model, emb.provider) == ("text-embedding-3-small", "openai")
    emb.embed_documents(["hello world", "again"])
    asyncio.run(asyncio.wait_for(emb.aembed_query("question"), 10))
    assert len(server.requests) == 2
    snap = lc_tracker.snapshot()
    assert snap.totals.embedding_calls == 2 and snap.totals.embedding_tokens > 0
    assert snap.totals.unpriced_calls == 0 and snap.totals.cost_micros >= 0
    assert set(snap.by_model) == {"text-embedding-3-small"}


def test_rejects_non_embeddings() -> None:
    with pytest.raises(TypeError):
        MeteredEmbeddings(object())  # type: ignore[arg-type]
