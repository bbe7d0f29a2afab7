"""Fakes for the LangChain integration tests: real LangChain classes, no network.

- :class:`UsageChat`: a chat model that reports ``usage_metadata`` like a provider
  (invoke, batch, stream with usage in the last chunk, async), counts the requests
  it received, and plays a ReAct script (tool calls, then an answer).
- :class:`OpenAIMock`: an ``httpx.MockTransport`` serving real OpenAI response
  bodies to ``langchain_openai.ChatOpenAI`` (chat.completion JSON, SSE streams
  with an ``include_usage`` final chunk only when the request asked for it).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from agentmeter_langchain.testing import UsageChat, chat_usage

__all__ = ["OpenAIMock", "UsageChat", "chat_usage"]


# ---------------------------------------------------------------- OpenAI mock
OPENAI_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 128,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_MODEL = "gpt-4o-mini-2024-07-18"


class OpenAIMock:
    """An OpenAI-compatible server in an ``httpx.MockTransport``; counts requests.

    ``status`` other than 200 answers every request with that error; ``usage``
    replaces the usage block the bodies report (malformed values included: it is
    serialised as Python's ``json`` does, so ``float("nan")`` goes out as ``NaN``).
    """

    def __init__(
        self,
        status: int = 200,
        text: str = "Hello from the mock!",
        usage: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.text = text
        self.usage = OPENAI_USAGE if usage is None else usage
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- transports -------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def chat(self, **kwargs: Any) -> Any:
        """A real ``ChatOpenAI`` talking to this mock (``base_url`` set, as a gateway)."""
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model="gpt-4o-mini",
            api_key="sk-test",  # type: ignore[arg-type]
            base_url="http://mock.local/v1",
            http_client=self.client(),
            http_async_client=self.async_client(),
            max_retries=0,
            **kwargs,
        )

    # -- the server ---------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        with self._lock:
            self.requests.append(body)
        if self.status != 200:
            return httpx.Response(
                self.status,
                json={"error": {"message": "mock failure", "type": "server_error", "code": None}},
            )
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=self._sse(include_usage),
            )
        return httpx.Response(
            200,
            headers={"content-type": "application/json"},
            content=json.dumps(self._completion()).encode(),
        )

    def _completion(self) -> dict[str, Any]:
        return {
            "id": "chatcmpl-mock1",
            "object": "chat.completion",
            "created": 1_732_000_000,
            "model": OPENAI_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }

    def _sse(self, include_usage: bool) -> bytes:
        base = {
            "id": "chatcmpl-mock2",
            "object": "chat.completion.chunk",
            "created": 1_732_000_000,
            "model": OPENAI_MODEL,
            "system_fingerprint": "fp_mock",
            "service_tier": "default",
        }
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        events = [
            {
                **base,
                **extra,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
        ]
        for i in range(0, len(self.text), 5):
            events.append(
                {
                    **base,
                    **extra,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": self.text[i : i + 5]},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        events.append(
            {
                **base,
                **extra,
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
            }
        )
        if include_usage:
            events.append({**base, "choices": [], "usage": self.usage})
        lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
        return "".join(lines).encode()
