"""The OpenAI API faked at the httpx transport for the Agents SDK: real bodies, no network.

The SDK's real ``OpenAIChatCompletionsModel`` / ``OpenAIResponsesModel`` take an
``openai.AsyncOpenAI``; its ``http_client`` here is an ``httpx.AsyncClient`` over an
``httpx.MockTransport`` that answers from the bodies recorded in
``tests/data/provider_usage`` (Chat Completions with cached / reasoning details, the
Responses API reference response), non-streamed and as SSE streams.

The answers are decided by the request alone (no shared script), so concurrent runs
get the answers of their own conversation:

- a request that offers tools and carries no tool output yet asks for the first
  offered tool (``FakeOpenAI.tool_args``), unless ``tool_first`` is off;
- otherwise the model answers with text.

Usage is a function of the conversation's first user message: ``"... n=K"`` gives
``prompt = base_prompt * K`` (so every session of a concurrency test has its own
numbers), and each request's usage is kept in ``served`` so that tests can sum what
the transport billed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

DATA = Path(__file__).resolve().parents[2] / "data" / "provider_usage"


def _body(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())["body"]  # type: ignore[no-any-return]


CHAT_BODY = _body("openai_chat_completion_cached_reasoning_audio")
CHAT_STREAM_USAGE_CHUNK = _body("openai_chat_stream_final_usage_chunk")
RESPONSES_BODY = _body("openai_responses_api_reference")


@dataclass(frozen=True)
class Served:
    """The usage of one answered request, in agentmeter's conventions."""

    path: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    streamed: bool
    with_usage: bool


class FakeOpenAI:
    """Answers ``/chat/completions`` and ``/responses`` (plain and streamed)."""

    def __init__(
        self,
        *,
        prompt: int = 2006,
        cached: int = 1920,
        completion: int = 300,
        reasoning: int = 64,
        tool_args: str = '{"city": "Paris"}',
        reply: str = "It is sunny in Paris.",
        tool_first: bool = True,
        stream_usage: bool = True,
    ) -> None:
        self.prompt, self.cached = prompt, cached
        self.completion, self.reasoning = completion, reasoning
        self.tool_args, self.reply = tool_args, reply
        # Arguments per tool name (an agent used as a tool takes {"input": ...}).
        self.args_for: dict[str, str] = {}
        self.tool_first = tool_first
        self.stream_usage = stream_usage  # False: a stream's last chunk has no usage
        self.delay = 0.0  # seconds each answer takes (a request in flight, to cancel)
        self.requests: list[dict[str, Any]] = []
        self.served: list[Served] = []
        self._n = 0

    # ------------------------------------------------------------------ clients
    def client(self) -> openai.AsyncOpenAI:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self._answer))
        return openai.AsyncOpenAI(
            api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http, max_retries=0
        )

    # ----------------------------------------------------------------- decisions
    def _scale(self, body: dict[str, Any]) -> int:
        text = json.dumps(body.get("messages") or body.get("input") or "")
        m = re.search(r"n=(\d+)", text)
        return int(m.group(1)) if m else 1

    def _counts(self, body: dict[str, Any]) -> tuple[int, int, int, int]:
        k = self._scale(body)
        return self.prompt * k, self.completion * k, self.cached * k, self.reasoning * k

    @staticmethod
    def _has_tool_output(body: dict[str, Any]) -> bool:
        for m in body.get("messages") or ():
            if m.get("role") == "tool":
                return True
        inp = body.get("input")
        if isinstance(inp, list):
            return any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in inp)
        return False

    def _tool_to_call(self, body: dict[str, Any]) -> str | None:
        tools = body.get("tools") or []
        if not tools or not self.tool_first or self._has_tool_output(body):
            return None
        t = tools[0]
        return t["function"]["name"] if "function" in t else t.get("name")

    def _args(self, tool: str) -> str:
        return self.args_for.get(tool, self.tool_args)

    def _next_id(self) -> int:
        self._n += 1
        return self._n

    # ------------------------------------------------------------------- handler
    async def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            self.requests.append({"path": request.url.path, "in_flight": True})
            await asyncio.sleep(self.delay)
            self.requests.pop()
        return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        self.requests.append({"path": path, "body": body})
        inp, out, cached, reasoning = self._counts(body)
        tool = self._tool_to_call(body)
        stream = bool(body.get("stream"))
        with_usage = not stream or self.stream_usage
        if path.endswith("/chat/completions"):
            if stream:
                with_usage = with_usage and bool(
                    (body.get("stream_options") or {}).get("include_usage")
                )
            self.served.append(Served(path, inp, out, cached, reasoning, stream, with_usage))
            if stream:
                return self._chat_stream(tool, inp, out, cached, reasoning, with_usage)
            return httpx.Response(200, json=self._chat(tool, inp, out, cached, reasoning))
        if path.endswith("/responses"):
            self.served.append(Served(path, inp, out, cached, reasoning, stream, with_usage))
            resp = self._response(tool, inp, out, cached, reasoning, with_usage)
            if stream:
                return self._responses_stream(resp)
            return httpx.Response(200, json=resp)
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})

    # ----------------------------------------------------------- chat completions
    def _chat_usage(self, inp: int, out: int, cached: int, reasoning: int) -> dict[str, Any]:
        usage = copy.deepcopy(CHAT_BODY["usage"])
        usage.update(prompt_tokens=inp, completion_tokens=out, total_tokens=inp + out)
        usage["prompt_tokens_details"].update(cached_tokens=cached, audio_tokens=0)
        usage["completion_tokens_details"].update(reasoning_tokens=reasoning, audio_tokens=0)
        return usage

    def _chat(self, tool: str | None, inp: int, out: int, cached: int, rs: int) -> dict[str, Any]:
        body = copy.deepcopy(CHAT_BODY)
        body["id"] = f"chatcmpl-{self._next_id()}"
        body["model"] = "gpt-4o-mini"
        msg = body["choices"][0]["message"]
        if tool is not None:
            msg["content"] = None
            msg["tool_calls"] = [
                {
                    "id": f"call_{self._n}",
                    "type": "function",
                    "function": {"name": tool, "arguments": self._args(tool)},
                }
            ]
            body["choices"][0]["finish_reason"] = "tool_calls"
        else:
            msg["content"] = self.reply
        body["usage"] = self._chat_usage(inp, out, cached, rs)
        return body

    def _chat_stream(
        self, tool: str | None, inp: int, out: int, cached: int, rs: int, with_usage: bool
    ) -> httpx.Response:
        base = copy.deepcopy(CHAT_STREAM_USAGE_CHUNK)
        base["id"] = f"chatcmpl-{self._next_id()}"
        base["model"] = "gpt-4o-mini"
        base.pop("usage")
        chunks: list[dict[str, Any]] = []

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            c = copy.deepcopy(base)
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            chunks.append(c)

        if tool is not None:
            chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": f"call_{self._n}",
                            "type": "function",
                            "function": {"name": tool, "arguments": ""},
                        }
                    ],
                }
            )
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": self._args(tool)}}]})
            chunk({}, "tool_calls")
        else:
            chunk({"role": "assistant", "content": ""})
            words = self.reply.split(" ")
            for i, word in enumerate(words):
                chunk({"content": word if i == len(words) - 1 else word + " "})
            chunk({}, "stop")
        if with_usage:
            last = copy.deepcopy(CHAT_STREAM_USAGE_CHUNK)
            last["id"] = base["id"]
            last["model"] = "gpt-4o-mini"
            last["usage"] = self._chat_usage(inp, out, cached, rs)
            chunks.append(last)
        sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(
            200, content=sse.encode(), headers={"content-type": "text/event-stream"}
        )

    # ---------------------------------------------------------------- responses
    def _response(
        self, tool: str | None, inp: int, out: int, cached: int, rs: int, with_usage: bool
    ) -> dict[str, Any]:
        body = copy.deepcopy(RESPONSES_BODY)
        n = self._next_id()
        body["id"] = f"resp_{n}"
        body["model"] = "o1-2024-12-17"
        if tool is not None:
            body["output"] = [
                {
                    "type": "function_call",
                    "id": f"fc_{n}",
                    "call_id": f"call_{n}",
                    "name": tool,
                    "arguments": self._args(tool),
                    "status": "completed",
                }
            ]
        else:
            body["output"][0]["id"] = f"msg_{n}"
            body["output"][0]["content"][0]["text"] = self.reply
        if with_usage:
            body["usage"].update(input_tokens=inp, output_tokens=out, total_tokens=inp + out)
            body["usage"]["input_tokens_details"]["cached_tokens"] = cached
            body["usage"]["output_tokens_details"]["reasoning_tokens"] = rs
        else:
            body["usage"] = None
        return body

    def _responses_stream(self, resp: dict[str, Any]) -> httpx.Response:
        seq = iter(range(1_000_000))
        events: list[dict[str, Any]] = []
        created = copy.deepcopy(resp)
        created.update(status="in_progress", output=[], usage=None)
        events.append({"type": "response.created", "response": created})
        for i, item in enumerate(resp["output"]):
            events.append({"type": "response.output_item.added", "output_index": i, "item": item})
            if item["type"] == "message":
                text = item["content"][0]["text"]
                events.append(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": i,
                        "content_index": 0,
                        "delta": text,
                        "logprobs": [],
                    }
                )
            events.append({"type": "response.output_item.done", "output_index": i, "item": item})
        events.append({"type": "response.completed", "response": resp})
        for e in events:
            e["sequence_number"] = next(seq)
        sse = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
        return httpx.Response(
            200, content=sse.encode(), headers={"content-type": "text/event-stream"}
        )
