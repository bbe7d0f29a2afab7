"""Fake LangChain models for tests, demos and notebooks: real LangChain classes, no network.

:class:`UsageChat` is a deterministic chat model that reports ``usage_metadata``
like a provider does (invoke, batch, stream with usage in the last chunk, async),
counts the requests it received (a call blocked by a budget never arrives), and
can play a ReAct script: a human turn is answered with tool calls, a turn after
tool results with a final answer. Give it a priced ``model_name`` (e.g.
``"gpt-4o-mini"``) to see costs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

__all__ = ["UsageChat", "chat_usage"]


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
    provider: str = "fakeprov"
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

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> UsageChat:  # type: ignore[override, unused-ignore]
        return self

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = self.model_name
        return params

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            self._requests.append(len(messages))
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        usage = chat_usage(len(messages)) if self.report_usage else None
        meta = {"model_name": self.model_name, "model_provider": self.provider}
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
