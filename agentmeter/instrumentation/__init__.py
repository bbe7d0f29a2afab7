"""agentmeter.instrumentation: the public API for metering a framework.

Everything an integration needs, and nothing it should not touch. agentmeter's
own integrations (LangChain, LlamaIndex) import only ``agentmeter`` and this
module; so can yours. Names exported here follow semantic versioning: they change
incompatibly only in a new major version.

A framework's callbacks map onto a call in flight::

    from agentmeter import instrumentation as ami

    def on_llm_start(run_id, model, messages):          # the framework's hooks
        calls[run_id] = ami.start_llm(model, call_id=run_id, prompt=messages)
        # raises agentmeter.BudgetExceeded here, before the request is sent

    def on_llm_chunk(run_id, text):
        calls[run_id].add_chunk(text)

    def on_llm_end(run_id, response):
        with ami.guarded("MyFramework.on_llm_end"):   # never break the host
            calls.pop(run_id).finish(ami.normalise_usage(response.usage))

    def on_llm_error(run_id, error):
        calls.pop(run_id).fail(error)

The pieces:

- **Calls in flight**: :func:`start_llm`, :func:`start_embedding`,
  :func:`start_tool` return :class:`LLMCall`, :class:`EmbeddingCall`,
  :class:`ToolCall`; each ends exactly once (``finish`` / ``fail`` / ``abandon`` /
  ``cancel``), which settles its budget reservation.
- **Attribution across threads and tasks**: :func:`capture` what is in force
  now, then :func:`attached` / :func:`run_attached` to run code with it.
- **Usage**: :func:`normalise_usage` (and one reader per provider shape) turns
  what a provider or framework reported into :class:`UsageCounts` in agentmeter's
  conventions; malformed values never raise, they are flagged and estimated.
- **Estimates**: :func:`estimate_tokens`, :func:`estimate_messages` (exact with
  tiktoken when it is installed and knows the model, else ~4 characters a token).
- **Call ids**: :func:`register_call_id_provider` lets a decorator inside a
  framework's tool call record the framework's id, so the call counts once.
- **Errors**: :class:`guarded` logs and swallows agentmeter's own errors;
  ``BudgetExceeded`` / ``BudgetStoreUnavailable`` always propagate.
"""

from __future__ import annotations

from .._guard import guarded
from ..scope import ambient_call_id, register_call_id_provider, unregister_call_id_provider
from ._calls import (
    EmbeddingCall,
    LLMCall,
    ToolCall,
    start_embedding,
    start_llm,
    start_tool,
)
from ._context import Attribution, attached, capture, run_attached
from ._tokens import (
    count_tokens,
    encoding_for_model,
    estimate_messages,
    estimate_tokens,
    has_tokenizer,
    message_text,
)
from ._usage import (
    UsageCounts,
    from_anthropic,
    from_bedrock,
    from_gemini,
    from_langchain,
    from_langchain_llm_output,
    from_llamaindex,
    from_openai_chat,
    from_openai_responses,
    merge_cumulative,
    normalise_usage,
    reported_cost,
)

__all__ = [
    "Attribution",
    "EmbeddingCall",
    "LLMCall",
    "ToolCall",
    "UsageCounts",
    "ambient_call_id",
    "attached",
    "capture",
    "count_tokens",
    "encoding_for_model",
    "estimate_messages",
    "estimate_tokens",
    "from_anthropic",
    "from_bedrock",
    "from_gemini",
    "from_langchain",
    "from_langchain_llm_output",
    "from_llamaindex",
    "from_openai_chat",
    "from_openai_responses",
    "guarded",
    "has_tokenizer",
    "merge_cumulative",
    "message_text",
    "normalise_usage",
    "register_call_id_provider",
    "reported_cost",
    "run_attached",
    "start_embedding",
    "start_llm",
    "start_tool",
    "unregister_call_id_provider",
]
