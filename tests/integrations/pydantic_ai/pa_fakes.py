"""OpenAI's Chat Completions and Responses APIs faked at the HTTP transport (an
``httpx.MockTransport`` under the real ``openai.AsyncOpenAI`` client), serving recorded bodies."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

DATA = Path(__file__).parents[2] / "data" / "provider_usage"


def recorded(name: str) -> dict[str, Any]:
    """The body of a recorded provider response (tests/data/provider_usage/<name>.json)."""
    body: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())["body"]
    return body


def sse(events: list[dict[str, Any]], *, done: bool = False) -> bytes:
    """Server-sent events as OpenAI streams them."""
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def chat_stream(text: str, usage_body: dict[str, Any], *, chunks: int = 3) -> bytes:
    """A Chat Completions stream of ``text`` in ``chunks`` deltas, then the recorded
    final usage chunk (``stream_options.include_usage``)."""
    base = {k: usage_body[k] for k in ("id", "object", "created", "model")}
    step = max(1, len(text) // chunks)
    pieces = [text[i : i + step] for i in range(0, len(text), step)]
    events: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    ]
    events += [
        {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in pieces
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(usage_body)
    return sse(events, done=True)


def responses_stream(body: dict[str, Any]) -> bytes:
    """A Responses API stream of a recorded response: created, text deltas, completed."""
    created = {**body, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": created}
    ]
    seq = 1
    for item in body["output"]:
        if item.get("type") != "message":
            continue
        for i, part in enumerate(item["content"]):
            for word in part["text"].split(" "):
                events.append(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": seq,
                        "item_id": item["id"],
                        "output_index": 0,
                        "content_index": i,
                        "delta": word + " ",
                        "logprobs": [],
                    }
                )
                seq += 1
    events.append({"type": "response.completed", "sequence_number": seq, "response": body})
    return sse(events)


class FakeOpenAI:
    """OpenAI over ``httpx.MockTransport``: each request gets the next queued reply.

    A reply is ``(status, body_bytes, content_type)`` or a callable of the request
    returning one. ``requests`` holds every request that reached the transport.
    """

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.requests: list[httpx.Request] = []
        self.default: Any = None

    def queue_json(self, body: dict[str, Any], *, times: int = 1) -> None:
        for _ in range(times):
            self.replies.append((200, json.dumps(body).encode(), "application/json"))

    def queue_sse(self, payload: bytes, *, times: int = 1) -> None:
        for _ in range(times):
            self.replies.append((200, payload, "text/event-stream"))

    def queue(self, reply: Callable[[httpx.Request], tuple[int, bytes, str]]) -> None:
        self.replies.append(reply)

    def queue_response(self, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        """Queue a callable building the whole ``httpx.Response`` (a custom body stream)."""
        self.replies.append(("response", reply))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if self.replies else self.default
        if isinstance(reply, tuple) and reply[0] == "response":
            built: httpx.Response = reply[1](request)
            return built
        if reply is None:
            return httpx.Response(500, json={"error": {"message": "no reply queued"}})
        if callable(reply):
            reply = reply(request)
        status, body, ctype = reply
        return httpx.Response(status, content=body, headers={"content-type": ctype})

    def provider(self) -> OpenAIProvider:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self._handle))
        client = openai.AsyncOpenAI(
            api_key="sk-test", base_url="http://127.0.0.1:9/v1", http_client=http, max_retries=0
        )
        return OpenAIProvider(openai_client=client)

    def chat_model(self, name: str = "gpt-4o-mini") -> OpenAIChatModel:
        return OpenAIChatModel(name, provider=self.provider())

    def responses_model(self, name: str = "o1") -> OpenAIResponsesModel:
        return OpenAIResponsesModel(name, provider=self.provider())

    def sent(self, i: int) -> dict[str, Any]:
        """The JSON body of the i-th request that reached the transport."""
        body: dict[str, Any] = json.loads(self.requests[i].content)
        return body


def chat_body(text: str, usage: dict[str, Any], *, model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat completion saying ``text`` (the recorded shape), with ``usage``."""
    body = copy.deepcopy(recorded("openai_chat_completion_cached_reasoning_audio"))
    body["model"] = model
    body["choices"][0]["message"]["content"] = text
    body["usage"] = usage
    return body


def tool_call_body(name: str, args: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """A chat completion calling tool ``name`` with ``args``."""
    body = chat_body("", usage)
    body["choices"][0]["message"]["content"] = None
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": f"call_{name}_{len(json.dumps(args))}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


def usage(prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A Chat Completions ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }
