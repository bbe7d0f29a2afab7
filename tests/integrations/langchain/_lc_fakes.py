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
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

__all__ = ["OpenAIMock", "UsageChat", "chat_usage"]


def chat_usage(n_messages: int) -> dict[str, Any]:
    """The usage :class:`UsageChat` reports for a prompt of ``n_messages`` messages."""
    return {
        "input_tokens": 10 * n_messages + 1,
        "output_tokens": 5,
        "total_tokens": 10 * n_messages + 6,
        "input_token_details": {"cache_read": 2, "cache_creation": 1},
        "output_token_details": {"reasoning": 1},
    }


class UsageChat(BaseChatModel):
    """A deterministic chat model that reports usage (see :func:`chat_usage`).

    With ``tool_script`` it acts as a ReAct model: a human turn is answered with
    calls to those tools, a turn after tool results with a final answer.
    """

    model_name: str = "fake-usage-model"
    reply: str = "hello there, I am fake"
    tool_script: Sequence[str] = ()
    report_usage: bool = True
    fail_with: str | None = None
    _requests: list[int] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "usage-chat"

    @property
    def requests(self) -> int:
        """How many calls reached the model (a blocked call never does)."""
        return len(self._requests)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> UsageChat:  # type: ignore[override]
        return self

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "fakeprov"
        params["ls_model_name"] = self.model_name
        return params

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            self._requests.append(len(messages))
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        usage = chat_usage(len(messages)) if self.report_usage else None
        meta = {"model_name": self.model_name, "model_provider": "fakeprov"}
        if self.tool_script and isinstance(messages[-1], HumanMessage):
            calls = [
                {"name": name, "args": {"query": f"q{i}"}, "id": f"call_{i}", "type": "tool_call"}
                for i, name in enumerate(self.tool_script)
            ]
            return AIMessage(
                content="", tool_calls=calls, usage_metadata=usage, response_metadata=meta
            )
        return AIMessage(content=self.reply, usage_metadata=usage, response_metadata=meta)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

    def _chunks(self, messages: list[BaseMessage]) -> list[ChatGenerationChunk]:
        msg = self._answer(messages)
        text = str(msg.content)
        parts = [text[i : i + 4] for i in range(0, len(text), 4)] or [""]
        chunks = [ChatGenerationChunk(message=AIMessageChunk(content=p)) for p in parts]
        # Usage rides on the last chunk, as OpenAI's include_usage chunk does.
        chunks.append(
            ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata=msg.usage_metadata,
                    response_metadata=msg.response_metadata,
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": i,
                            "type": "tool_call_chunk",
                        }
                        for i, c in enumerate(msg.tool_calls)
                    ],
                )
            )
        )
        return chunks

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if run_manager is not None:
                run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if run_manager is not None:
                await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk


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

    ``status`` other than 200 answers every request with that error.
    """

    def __init__(self, status: int = 200, text: str = "Hello from the mock!") -> None:
        self.status = status
        self.text = text
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
        return httpx.Response(200, json=self._completion())

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
            "usage": OPENAI_USAGE,
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
            events.append({**base, "choices": [], "usage": OPENAI_USAGE})
        lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
        return "".join(lines).encode()
