"""An OpenAI API answered in-process, for offline demos, notebooks and your own tests.

``MockOpenAI().client()`` is a real ``openai.AsyncOpenAI`` whose ``httpx`` transport is
an ``httpx.MockTransport``: the SDK's real ``OpenAIChatCompletionsModel`` /
``OpenAIResponsesModel`` talk to it exactly as to the API, and nothing leaves the
process. Answers follow the request: a request that offers tools and carries no tool
output yet asks for the first offered tool, anything else gets the text reply; every
answer reports usage (with a cached part of the prompt and a reasoning part of the
completion), also in streams::

    from agents import Agent, OpenAIResponsesModel, Runner
    from agentmeter_openai_agents.testing import MockOpenAI

    api = MockOpenAI(reply="Sunny.")
    agent = Agent(name="a", model=OpenAIResponsesModel("gpt-4o-mini", api.client()))
    await Runner.run(agent, "weather?")
    api.requests   # what was sent
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

__all__ = ["MockOpenAI"]


class MockOpenAI:
    """Answers ``/chat/completions`` and ``/responses``, plain and streamed.

    Args:
        reply: The text answer.
        tool_args: JSON arguments of a tool call (``args_for[name]`` per tool).
        prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens: The usage
            each answer reports (cached is part of the prompt, reasoning of the output).
        model: The model name the answers carry.
    """

    def __init__(
        self,
        *,
        reply: str = "Done.",
        tool_args: str = "{}",
        prompt_tokens: int = 1200,
        cached_tokens: int = 1024,
        completion_tokens: int = 80,
        reasoning_tokens: int = 16,
        model: str = "gpt-4o-mini",
    ) -> None:
        self.reply, self.tool_args, self.model = reply, tool_args, model
        self.args_for: dict[str, str] = {}
        self.usage = (prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens)
        self.requests: list[dict[str, Any]] = []

    def client(self) -> openai.AsyncOpenAI:
        """An ``AsyncOpenAI`` answered by this mock (no network, no API key)."""
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        return openai.AsyncOpenAI(
            api_key="sk-mock", base_url="http://127.0.0.1:9/v1", http_client=http, max_retries=0
        )

    # ---------------------------------------------------------------- decisions
    def _tool(self, body: dict[str, Any]) -> str | None:
        tools = body.get("tools") or []
        items = body.get("messages") or body.get("input") or []
        if not tools or not isinstance(items, list):
            return None
        for m in items:
            if isinstance(m, dict) and (
                m.get("role") == "tool" or m.get("type") == "function_call_output"
            ):
                return None
        t = tools[0]
        name = t["function"]["name"] if "function" in t else t.get("name")
        return name if isinstance(name, str) else None

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The transport's handler."""
        body = json.loads(request.content or b"{}")
        self.requests.append({"path": request.url.path, "body": body})
        tool = self._tool(body)
        n = len(self.requests)
        stream = bool(body.get("stream"))
        if request.url.path.endswith("/chat/completions"):
            if stream:
                return _sse(self._chat_chunks(tool, n, body), named=False)
            return httpx.Response(200, json=self._chat(tool, n))
        if request.url.path.endswith("/responses"):
            resp = self._response(tool, n)
            if stream:
                return _sse(self._response_events(resp), named=True)
            return httpx.Response(200, json=resp)
        return httpx.Response(404, json={"error": {"message": "not mocked"}})

    # -------------------------------------------------------------------- bodies
    def _chat_usage(self) -> dict[str, Any]:
        p, c, o, r = self.usage
        return {
            "prompt_tokens": p,
            "completion_tokens": o,
            "total_tokens": p + o,
            "prompt_tokens_details": {"cached_tokens": c, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": r, "audio_tokens": 0},
        }

    def _tool_call(self, tool: str, n: int) -> dict[str, Any]:
        args = self.args_for.get(tool, self.tool_args)
        return {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": tool, "arguments": args},
        }

    def _chat(self, tool: str | None, n: int) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.reply, "refusal": None}
        if tool is not None:
            msg["content"] = None
            msg["tool_calls"] = [self._tool_call(tool, n)]
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 1741570283,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": msg,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool else "stop",
                }
            ],
            "usage": self._chat_usage(),
        }

    def _chat_chunks(self, tool: str | None, n: int, body: dict[str, Any]) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion.chunk",
                "created": 1741570283,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        if tool is not None:
            call = self._tool_call(tool, n)
            call["index"] = 0
            out = [chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, "tool_calls")]
        else:
            out = [chunk({"role": "assistant", "content": self.reply}), chunk({}, "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            last = chunk({})
            last["choices"] = []
            last["usage"] = self._chat_usage()
            out.append(last)
        return out

    def _response(self, tool: str | None, n: int) -> dict[str, Any]:
        p, c, o, r = self.usage
        if tool is not None:
            args = self.args_for.get(tool, self.tool_args)
            output: list[dict[str, Any]] = [
                {
                    "type": "function_call",
                    "id": f"fc_{n}",
                    "call_id": f"call_{n}",
                    "name": tool,
                    "arguments": args,
                    "status": "completed",
                }
            ]
        else:
            output = [
                {
                    "type": "message",
                    "id": f"msg_{n}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": self.reply, "annotations": []}],
                }
            ]
        return {
            "id": f"resp_{n}",
            "object": "response",
            "created_at": 1741477868,
            "status": "completed",
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": p,
                "input_tokens_details": {"cached_tokens": c},
                "output_tokens": o,
                "output_tokens_details": {"reasoning_tokens": r},
                "total_tokens": p + o,
            },
        }

    @staticmethod
    def _response_events(resp: dict[str, Any]) -> list[dict[str, Any]]:
        created = {**resp, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [{"type": "response.created", "response": created}]
        for i, item in enumerate(resp["output"]):
            events.append({"type": "response.output_item.added", "output_index": i, "item": item})
            events.append({"type": "response.output_item.done", "output_index": i, "item": item})
        events.append({"type": "response.completed", "response": resp})
        for seq, e in enumerate(events):
            e["sequence_number"] = seq
        return events


def _sse(events: list[dict[str, Any]], *, named: bool) -> httpx.Response:
    if named:
        text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    else:
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})
