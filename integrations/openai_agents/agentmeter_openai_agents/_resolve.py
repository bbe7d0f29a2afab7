"""What a run tells about a call: its session, customer, model, provider and usage.

Pure readers over the SDK's public objects (``RunContextWrapper``, ``RunConfig``,
``Agent``, ``ModelResponse``); no state, no agentmeter records. The hooks call them
at each model and tool call; all are cheap (a few ``getattr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from agents import Agent, Model, ModelResponse, RunContextWrapper
from agents.models import get_default_model
from agents.tool_context import ToolContext

from agentmeter import instrumentation as ami

__all__ = [
    "RunDefaults",
    "config_ids",
    "context_ids",
    "model_and_provider",
    "output_text",
    "usage_of",
]

# Keys read from the run's own context (``Runner.run(..., context=...)``): a mapping
# with these keys, or an object with these attributes.
SESSION_KEY = "session_id"
CUSTOMER_KEY = "customer_id"


class RunDefaults(NamedTuple):
    """Session and customer a run was started with (explicit, group id, SDK session)."""

    session_id: str | None = None
    customer_id: str | None = None


def _text_id(value: object) -> str | None:
    """A usable id: a non-empty str (ids of other types are ignored, not guessed)."""
    return value if isinstance(value, str) and value else None


def _read(obj: object, key: str) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return _text_id(obj.get(key))
    return _text_id(getattr(obj, key, None))


def context_ids(context: RunContextWrapper[Any]) -> RunDefaults:
    """``session_id`` / ``customer_id`` from the run's context, else its run config.

    The run's context (``context=`` of ``Runner.run``) wins: a mapping with the keys
    ``session_id`` / ``customer_id`` or an object with those attributes. Then the
    run config a tool context carries: ``RunConfig.trace_metadata`` (same keys), then
    ``RunConfig.group_id`` as the session.
    """
    app = context.context
    session, customer = _read(app, SESSION_KEY), _read(app, CUSTOMER_KEY)
    if (session is None or customer is None) and isinstance(context, ToolContext):
        cfg = context.run_config
        if cfg is not None:
            d = config_ids(cfg)
            session, customer = session or d.session_id, customer or d.customer_id
    return RunDefaults(session, customer)


def config_ids(run_config: object, session: object = None) -> RunDefaults:
    """Session and customer from a ``RunConfig`` (or its dict form) and the SDK session.

    ``trace_metadata`` ``session_id`` / ``customer_id`` first, then ``group_id`` (the
    SDK's "grouping identifier for the trace, e.g. a chat thread id"), then the
    ``session=`` object's ``session_id`` (``SQLiteSession("conversation-42")``).
    """
    meta = _get(run_config, "trace_metadata")
    sid = _read(meta, SESSION_KEY) or _text_id(_get(run_config, "group_id"))
    if sid is None and session is not None:
        sid = _text_id(getattr(session, "session_id", None))
    return RunDefaults(sid, _read(meta, CUSTOMER_KEY))


def _get(obj: object, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _split_prefix(name: str) -> tuple[str, str | None]:
    """``"openai/gpt-4o"`` -> (``gpt-4o``, ``openai``); ``"litellm/anthropic/x"`` ->
    (``x``, ``anthropic``): the prefixes of the SDK's ``MultiProvider``."""
    head, sep, rest = name.partition("/")
    if not sep or not rest:
        return name, None
    if head == "litellm" or head == "any-llm":
        inner, sep2, model = rest.partition("/")
        return (model, inner) if sep2 and model else (rest, None)
    return rest, head


def model_and_provider(agent: Agent[Any], run_config: object = None) -> tuple[str, str | None]:
    """The model the SDK will call for ``agent`` (as its ``get_model`` resolves it).

    ``RunConfig.model`` wins over ``agent.model``, which wins over the SDK's default
    model. A ``Model`` object's ``model`` attribute is its name (the OpenAI models
    have one); its provider is ``"openai"`` for the SDK's OpenAI models.
    """
    chosen: object = _get(run_config, "model") if run_config is not None else None
    if chosen is None:
        chosen = agent.model
    if isinstance(chosen, Model):
        name = getattr(chosen, "model", None)
        provider = "openai" if type(chosen).__module__.startswith("agents.models.openai") else None
        if isinstance(name, str) and name:
            model, prefixed = _split_prefix(name)
            return model, provider or prefixed
        return type(chosen).__name__, provider
    if not isinstance(chosen, str) or not chosen:
        chosen = get_default_model()
    model, provider = _split_prefix(chosen)
    return model, provider or "openai"


def usage_of(response: ModelResponse) -> ami.UsageCounts | None:
    """The usage of one model response, ``None`` when the provider reported none.

    The SDK's ``Usage`` has the Responses API shape (``input_tokens_details.
    cached_tokens``, ``output_tokens_details.reasoning_tokens``) for both OpenAI
    APIs. A response without usage (a Chat Completions stream without
    ``include_usage``, which the SDK sends only to api.openai.com unless
    ``ModelSettings(include_usage=True)``) reaches the SDK as zero tokens: that is
    "not reported", and agentmeter estimates it (flagged) instead of counting 0.
    """
    u = response.usage
    # No prompt is 0 tokens: a zero input count means the provider sent no usage
    # (the SDK's ``Usage()`` default), whatever ``requests`` says.
    if u is None or (u.input_tokens == 0 and u.output_tokens == 0):
        return None
    # The SDK's Usage is typed (ints, details objects): read it directly -- five
    # attributes instead of the generic reader's shape detection (~10x faster).
    # Anything that does not fit agentmeter's conventions goes to that reader,
    # which names what was malformed and leaves it to be estimated.
    try:
        d_in, d_out = u.input_tokens_details, u.output_tokens_details
        return ami.UsageCounts(
            u.input_tokens,
            u.output_tokens,
            getattr(d_in, "cached_tokens", 0) or 0,
            getattr(d_in, "cache_write_tokens", 0) or 0,
            getattr(d_out, "reasoning_tokens", 0) or 0,
        )
    except (TypeError, ValueError, AttributeError):
        return ami.from_openai_responses(u)


def output_text(response: ModelResponse) -> str | None:
    """The text a response produced (to estimate its size when usage is missing)."""
    parts: list[str] = []
    for item in response.output:
        for block in getattr(item, "content", None) or ():
            text = getattr(block, "text", None)
            if isinstance(text, str):
                parts.append(text)
        args = getattr(item, "arguments", None)
        if isinstance(args, str):
            parts.append(args)
    return "".join(parts) or None
