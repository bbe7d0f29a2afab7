"""An OpenAI API faked at the httpx transport: real response bodies, no network.

llama-index's ``OpenAI`` and ``OpenAIEmbedding`` accept ``http_client=`` /
``async_http_client=``; an ``httpx.MockTransport`` answers their requests with
bodies shaped exactly like the API's (usage with cached / reasoning details,
SSE streams whose last chunk carries the usage when ``include_usage`` is set).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
from llama_index.core.utils import get_tokenizer


class FakeOpenAI:
    """Counts requests and answers chat, completion and embedding calls."""

    def __init__(
        self,
        *,
        prompt_tokens: int = 1200,
        cached_tokens: int = 1024,
        completion_tokens: int = 20,
        reasoning_tokens: int = 0,
        reply: str = "Hello from the fake model!",
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.completion_tokens = completion_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reply = reply
        # Scripted chat turns: each entry is either a str (text) or a list of
        # (tool name, json arguments) tool calls; used in order, then `reply`.
        self.script: list[str | list[tuple[str, str]]] = []
        self.embedding_tokens_reported: list[int] = []

    # -- clients ------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    @property
    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    # -- bodies --------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.requests.append({"path": request.url.path, "body": body})
        path = request.url.path
        if path.endswith("/embeddings"):
            return self._embeddings(body)
        if path.endswith("/chat/completions"):
            turn = self.script.pop(0) if self.script else self.reply
            if body.get("stream"):
                return self._chat_stream(body, turn)
            return self._chat(body, turn)
        if path.endswith("/completions"):
            return self._completion(body)
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})

    def _chat(self, body: dict[str, Any], turn: str | list[tuple[str, str]]) -> httpx.Response:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish = "stop"
        if isinstance(turn, str):
            message["content"] = turn
        else:
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(turn)
            ]
            finish = "tool_calls"
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body.get("model", "gpt-4o-mini") + "-2024-07-18",
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": self.usage(),
                "system_fingerprint": "fp_fake",
            },
        )

    def _chat_stream(
        self, body: dict[str, Any], turn: str | list[tuple[str, str]]
    ) -> httpx.Response:
        model = body.get("model", "gpt-4o-mini") + "-2024-07-18"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                "usage": None,
            }

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if isinstance(turn, str):
            for word in turn.split(" "):
                chunks.append(chunk({"content": word + " "}))
            chunks.append(chunk({}, "stop"))
        else:
            for i, (name, args) in enumerate(turn):
                chunks.append(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": f"call_{i}",
                                    "type": "function",
                                    "function": {"name": name, "arguments": args},
                                }
                            ]
                        }
                    )
                )
            chunks.append(chunk({}, "tool_calls"))
        if (body.get("stream_options") or {}).get("include_usage"):
            last = chunk({})
            last["choices"] = []
            last["usage"] = self.usage()
            chunks.append(last)
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(
            200, content=text.encode(), headers={"content-type": "text/event-stream"}
        )

    def _completion(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 1_700_000_000,
                "model": body.get("model", "gpt-3.5-turbo-instruct"),
                "choices": [
                    {"text": self.reply, "index": 0, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens,
                    "total_tokens": self.prompt_tokens + self.completion_tokens,
                },
            },
        )

    def _embeddings(self, body: dict[str, Any]) -> httpx.Response:
        inputs = body["input"]
        if isinstance(inputs, str):
            inputs = [inputs]
        model = body.get("model", "text-embedding-ada-002")
        # The API's count: cl100k_base (these models' tokenizer) over the strings it
        # received, computed with llama-index's own tokenizer, not agentmeter's.
        encode = get_tokenizer()
        used = sum(len(encode(text)) for text in inputs)
        self.embedding_tokens_reported.append(used)
        vector = [0.1, 0.2, 0.3, 0.4]
        data = []
        for i, _ in enumerate(inputs):
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack("<4f", *vector)).decode()
            else:
                emb = vector
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            },
        )


Handler = Callable[[httpx.Request], httpx.Response]
