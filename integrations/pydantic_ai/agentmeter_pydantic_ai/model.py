"""``MeteredModel``: any pydantic-ai model, with every request metered before it is sent.

A :class:`MeteredModel` wraps a model (``WrapperModel``, pydantic-ai's own way to
put behaviour around any model) and turns each ``request`` / ``request_stream``
into an ``agentmeter.instrumentation.LLMCall``:

- started *before* the request is handed to the wrapped model, which reserves the
  estimated prompt against every budget that applies: ``agentmeter.BudgetExceeded``
  is raised there, and the provider never sees the request;
- finished with the response's ``RequestUsage`` (cache, reasoning and audio
  details), the model and provider that answered;
- a stream is counted once, when it closes: drained, with its final usage; left
  early (the consumer stopped reading), recorded with what it received and
  flagged ``estimated`` with ``metadata={"stream": "abandoned", "partial": True}``;
  broken, the same with ``ok=False``;
- a request that raises is a failed call.

Each request to the provider counts once: a ``MeteredModel`` inside another one
(a ``FallbackModel`` of metered models, wrapped again by :class:`AgentMeter`)
leaves the metering to the outermost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic_ai.exceptions import ModelAPIError, UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import KnownModelName, Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from agentmeter import Tracker
from agentmeter import instrumentation as ami

from ._usage import from_request_usage, prompt_of, response_text

__all__ = ["MeteredModel", "Who", "metered"]

_G_START = ami.guarded("MeteredModel.request")
_G_END = ami.guarded("MeteredModel.response")

# True while a MeteredModel is handing a request to the model it wraps: a metered
# model inside it (FallbackModel's members) then passes the request through.
_METERING: ContextVar[bool] = ContextVar("agentmeter_pydantic_ai.metering", default=False)

# Where an exception raised inside a stream comes from when the stream itself broke (the
# connection, the provider's client, pydantic-ai's model errors); anything else was raised
# by the code consuming the stream, which stopped reading: the call did not fail.
_TRANSPORT_MODULES = frozenset(
    {
        "httpx",
        "httpcore",
        "h11",
        "h2",
        "aiohttp",
        "ssl",
        "openai",
        "anthropic",
        "google",
        "groq",
        "mistralai",
        "cohere",
        "botocore",
        "aiobotocore",
        "huggingface_hub",
    }
)


def stream_broke(error: BaseException) -> bool:
    """Whether ``error`` says the stream broke (rather than its consumer stopping)."""
    if isinstance(error, ModelAPIError | UnexpectedModelBehavior | OSError | TimeoutError):
        return True
    return type(error).__module__.split(".", 1)[0] in _TRANSPORT_MODULES


# pydantic-ai's `system` names that are not providers agentmeter prices by.
_NOT_PROVIDERS = frozenset({"test", "function", "fallback"})
_PROVIDER_ALIASES = {"google-gla": "google", "google-vertex": "google"}


class Who(NamedTuple):
    """Who a model request or tool call is billed to (``None``: the enclosing scope's)."""

    tracker: Tracker | None = None
    session_id: str | None = None
    agent_id: str | None = None
    customer_id: str | None = None
    tags: dict[str, str] | None = None

    def over(self, other: Who) -> Who:
        """``other``'s values where it has them, else these (tags merged, ``other``'s win)."""
        tags = self.tags
        if other.tags:
            tags = {**(tags or {}), **other.tags}
        return Who(
            other.tracker if other.tracker is not None else self.tracker,
            other.session_id if other.session_id is not None else self.session_id,
            other.agent_id if other.agent_id is not None else self.agent_id,
            other.customer_id if other.customer_id is not None else self.customer_id,
            tags,
        )


def check_who(who: Who) -> Who:
    """Validate attribution given by the user (``TypeError`` / ``ValueError`` naming it)."""
    if who.tracker is not None and not isinstance(who.tracker, Tracker):
        raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(who.tracker).__name__}")
    # capture() checks names and tags exactly as every agentmeter call does.
    ami.capture(
        who.tracker,
        session_id=who.session_id,
        agent_id=who.agent_id,
        customer_id=who.customer_id,
        tags=who.tags,
    )
    return who


def provider_of(system: object) -> str | None:
    """The provider agentmeter prices by, from a pydantic-ai ``system`` / ``provider_name``."""
    if not isinstance(system, str) or not system or system in _NOT_PROVIDERS:
        return None
    return _PROVIDER_ALIASES.get(system, system)


@dataclass(init=False)
class MeteredModel(WrapperModel):
    """A pydantic-ai model whose requests agentmeter meters (see the module docstring).

    Build it with :func:`metered`; :class:`~agentmeter_pydantic_ai.AgentMeter` wraps the
    agent's model in one for each request, with the run's agent, session and customer.
    """

    def __init__(
        self,
        wrapped: Model | KnownModelName,
        *,
        tracker: Tracker | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        who = check_who(Who(tracker, session_id, agent_id, customer_id, tags))
        super().__init__(wrapped)
        self.who = who

    @classmethod
    def around(cls, model: Model, who: Who) -> MeteredModel:
        """A metered ``model`` billing ``who``, already validated (the capability's path)."""
        metered_model = cls.__new__(cls)
        # WrapperModel.__init__ without infer_model: ``model`` is a Model already.
        Model.__init__(metered_model)
        metered_model.wrapped = model
        metered_model.who = who
        return metered_model

    def bound(self, who: Who) -> MeteredModel:
        """A copy billing ``who`` (its values win over this model's own)."""
        # Not copy.copy: WrapperModel forwards unknown attributes to the wrapped model,
        # which sends copy's probing for __setstate__ into a recursion.
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.who = self.who.over(who)
        return twin

    # ------------------------------------------------------------------ metering
    def _start(self, messages: Sequence[ModelMessage]) -> ami.LLMCall | None:
        who = self.who
        model = self.wrapped
        with _G_START:  # BudgetExceeded / BudgetStoreUnavailable propagate
            return ami.start_llm(
                model.model_name or "unknown",
                provider=provider_of(model.system),
                prompt=prompt_of(messages),
                tracker=who.tracker,
                session_id=who.session_id,
                agent_id=who.agent_id,
                customer_id=who.customer_id,
                tags=who.tags,
            )
        return None  # agentmeter failed internally (logged): the request goes on unmetered

    @staticmethod
    def _finish(call: ami.LLMCall, response: ModelResponse, *, complete: bool) -> None:
        with _G_END:
            usage = from_request_usage(response.usage, complete=complete)
            text = None if usage is not None and usage.fully_reported else response_text(response)
            if complete:
                call.finish(
                    usage,
                    output_text=text,
                    model=response.model_name or None,
                    provider=provider_of(response.provider_name),
                )
                return
            if text:
                call.add_chunk(text)  # what arrived, for the estimate of the output
            call.abandon(usage=usage)

    @staticmethod
    def _fail(call: ami.LLMCall, error: BaseException) -> None:
        with _G_END:
            call.fail(error)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        if _METERING.get():
            return await self.wrapped.request(messages, model_settings, model_request_parameters)
        call = self._start(messages)
        if call is None:
            return await self.wrapped.request(messages, model_settings, model_request_parameters)
        token = _METERING.set(True)
        try:
            response = await self.wrapped.request(
                messages, model_settings, model_request_parameters
            )
        except BaseException as exc:  # CancelledError too: the request was made
            self._fail(call, exc)
            raise
        finally:
            _METERING.reset(token)
        self._finish(call, response, complete=True)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        inner = self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        )
        if _METERING.get():
            async with inner as passthrough:
                yield passthrough
            return
        call = self._start(messages)
        if call is None:
            async with inner as unmetered:
                yield unmetered
            return
        # Opening the stream sends the request: nested metered models see the flag
        # only while it opens (it must not outlive this task's frame).
        token = _METERING.set(True)
        try:
            stream = await inner.__aenter__()
        except BaseException as exc:
            self._fail(call, exc)
            raise
        finally:
            _METERING.reset(token)
        try:
            yield stream
        except BaseException as exc:
            self._end_stream(call, stream, exc)
            if not await inner.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            self._end_stream(call, stream, None)
            await inner.__aexit__(None, None, None)

    def _end_stream(
        self, call: ami.LLMCall, stream: StreamedResponse, error: BaseException | None
    ) -> None:
        with _G_END:
            response = stream.get()
            done = error is None and response.state in ("complete", "suspended")
            if done or error is None or not stream_broke(error):
                # Drained; or left early -- the consumer stopped reading, was cancelled,
                # or raised an error of its own: recorded as abandoned, not failed.
                self._finish(call, response, complete=done)
                return
            # A stream that broke: what it received, flagged partial and failed.
            usage = from_request_usage(response.usage, complete=False)
            text = response_text(response)
            if text:
                call.add_chunk(text)
            call.abandon(f"stream failed: {type(error).__name__}", usage=usage, ok=False)


def metered(
    model: Model | KnownModelName,
    *,
    tracker: Tracker | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    customer_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> MeteredModel:
    """Meter every request of ``model`` (a ``Model`` or a name such as ``"openai:gpt-4o"``).

    ``Agent(metered("openai:gpt-4o"))`` meters the agent's model requests, with budgets
    checked before each; :class:`~agentmeter_pydantic_ai.AgentMeter` adds its tools,
    agent name and the run's session. Attribution given here (tracker, session,
    agent, customer, tags) wins over the enclosing ``agentmeter.meter()`` scope's.

    Raises:
        TypeError, ValueError: on bad arguments, naming the argument.
    """
    if isinstance(model, MeteredModel):
        return model.bound(check_who(Who(tracker, session_id, agent_id, customer_id, tags)))
    return MeteredModel(
        model,
        tracker=tracker,
        session_id=session_id,
        agent_id=agent_id,
        customer_id=customer_id,
        tags=tags,
    )
