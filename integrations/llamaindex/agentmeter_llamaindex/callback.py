"""The legacy ``CallbackManager`` handler: the one place that can refuse an LLM call.

LlamaIndex's instrumentation dispatcher swallows every exception its handlers
raise, so it cannot stop a call. The ``CallbackManager`` can: an exception from a
handler's ``on_event_start`` propagates out of ``llm.chat()`` / ``complete()`` /
the embedding methods *before* the model is called. This handler starts an
``agentmeter.instrumentation`` call there, which reserves the budget and raises
:class:`agentmeter.BudgetExceeded` when the call would overspend.

:func:`agentmeter_llamaindex.instrument` puts one of these (its *gate*) on the
callback manager each LLM and embedding model is about to call with, while a
budget applies (see ``_instrument.py``), so adding one by hand is optional. Two
on one manager (the gate and yours) reserve once: the first to see the event
claims it.

Metering itself is done by the instrumentation (creating the handler calls
:func:`agentmeter_llamaindex.instrument` for its tracker): the reservation is
booked under the LLM span id, which is also the id the call is recorded with, so
the recorded usage settles it.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.instrumentation.span import active_span_id
from llama_index_instrumentation.dispatcher import active_instrument_tags

import agentmeter
from agentmeter import Tracker
from agentmeter.instrumentation import EmbeddingCall, LLMCall, guarded, start_embedding, start_llm

from ._common import count, count_messages, model_of, tag
from ._instrument import Instrumentor

__all__ = ["AgentMeterCallbackHandler"]

_WATCHED = (CBEventType.LLM, CBEventType.EMBEDDING)
_IGNORED = [t for t in CBEventType if t not in _WATCHED]

# Reservations of calls still in flight that this handler remembers. A stream that is
# never iterated keeps its reservation until the budget store's reservation TTL, or
# until this many newer calls pushed it out.
_MAX_RESERVED = 1_000

_G_START = guarded("AgentMeterCallbackHandler.on_event_start")
_G_END = guarded("AgentMeterCallbackHandler.on_event_end")


class AgentMeterCallbackHandler(BaseCallbackHandler):
    """Enforces agentmeter budgets on LlamaIndex LLM and embedding calls.

    :func:`agentmeter_llamaindex.instrument` adds one to the callback manager a
    model calls with whenever a budget applies; you may also add it yourself
    (``Settings.callback_manager = CallbackManager([handler])``, or
    ``llm.callback_manager.add_handler(handler)``). Before each call it
    reserves the prompt's estimated tokens (and their cost) against every budget
    that applies -- the enclosing ``agentmeter.meter(budget=...)`` scopes and the
    session's -- and raises :class:`agentmeter.BudgetExceeded` instead of making a
    call that would overspend. An LLM call made by another LLM call (``chat`` over
    ``complete``) is checked once.

    Args:
        tracker: Tracker to check and record into (default: the process-wide one).
        instrument: Also instrument the dispatcher for ``tracker`` (the metering);
            ``False`` if you call :func:`agentmeter_llamaindex.instrument` yourself.
    """

    def __init__(self, tracker: Tracker | None = None, *, instrument: bool = True) -> None:
        if tracker is not None and not isinstance(tracker, Tracker):
            raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
        super().__init__(event_starts_to_ignore=_IGNORED, event_ends_to_ignore=_IGNORED)
        self.tracker = tracker if tracker is not None else agentmeter.get_tracker()
        self._instrumentor: Instrumentor | None = None
        if instrument:
            from . import instrument as _instrument
            from . import instrumentor

            current = instrumentor()
            # Reuse the user's instrumentation (and its options) when it meters this
            # tracker already; instrumenting again with defaults would replace it.
            if current is not None and current.tracker is self.tracker:
                self._instrumentor = current
            else:
                self._instrumentor = _instrument(self.tracker)
        # event id -> the call whose reservation is held until the event ends
        self._reserved: dict[str, LLMCall | EmbeddingCall] = {}
        # Set on an instrumentor's gate: inert once that instrumentor is detached (a
        # manager that copied Settings' handler list may still hold it).
        self._gate_of: Instrumentor | None = None

    def _live(self) -> Instrumentor | None:
        """The attached instrumentor metering this handler's tracker, if any."""
        inst = self._instrumentor
        if inst is None or not inst.attached:
            from . import instrumentor

            inst = instrumentor()
        if inst is not None and inst.attached and inst.tracker is self.tracker:
            return inst
        return None

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        """Reserve budget for the LLM / embedding call about to be made.

        Raises:
            agentmeter.BudgetExceeded: the call would exceed a budget; it is not made.
        """
        with _G_START:
            # A cheap "is there any budget?" first, so that no prompt is tokenized for nothing.
            if event_type not in _WATCHED or not self.tracker.budget_applies():
                return event_id
            owner = self._gate_of
            if owner is not None and not owner.attached:
                return event_id
            span_id = active_span_id.get()
            llm = event_type is CBEventType.LLM
            inst = self._live()
            if inst is not None:
                if not inst.claim(event_id, span_id, llm):
                    return event_id  # another agentmeter handler on this manager reserves
                if llm and inst.is_nested_llm(span_id):
                    return event_id  # the outer call already reserved for it
            payload = payload or {}
            model, provider, _ = model_of(payload.get(EventPayload.SERIALIZED) or {})
            # The session the call will be recorded under: instrument_tags win over
            # scopes (as in the instrumentation), so the session's budget applies.
            session = tag(active_instrument_tags.get(), "session_id")
            call: LLMCall | EmbeddingCall
            if llm:
                prompt = payload.get(EventPayload.PROMPT)
                messages = payload.get(EventPayload.MESSAGES)
                tokens = 0
                if isinstance(prompt, str):
                    tokens = count(prompt, model)
                elif messages:
                    tokens = count_messages(messages, model)
                # Booked under the LLM span id, the id the instrumentation records the
                # call with: the recorded usage settles it.
                call = start_llm(
                    model,
                    provider=provider,
                    call_id=span_id if span_id is not None else f"li-cb-{event_id}",
                    prompt_tokens=tokens,
                    tracker=self.tracker,
                    session_id=session,
                    # The request's output limit (seen on the LLM as its span opened):
                    # a hard cap then reserves the call's worst case.
                    max_output_tokens=inst.output_limit(span_id) if inst is not None else None,
                )
            else:
                # An embedding is recorded under an id not known yet: released at its end.
                call = start_embedding(
                    model,
                    provider=provider,
                    call_id=f"li-cb-{event_id}",
                    tracker=self.tracker,
                    session_id=session,
                )
            reserved = self._reserved
            reserved[event_id] = call
            if len(reserved) > _MAX_RESERVED:
                # A stream that is never iterated never ends its event: give back the
                # oldest such reservation rather than hold it (and memory) forever.
                reserved.pop(next(iter(reserved))).cancel()
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        """Give the reservation back when the call failed or was not recorded under it."""
        with _G_END:
            call = self._reserved.pop(event_id, None)
            if call is None:
                return
            failed = bool(payload) and EventPayload.EXCEPTION in payload  # type: ignore[operator]
            inst = self._instrumentor
            recorded = (
                isinstance(call, LLMCall)
                and inst is not None
                and inst.attached
                and not call.call_id.startswith("li-cb-")
            )
            if failed or not recorded:
                call.cancel()

    def start_trace(self, trace_id: str | None = None) -> None:
        """Nothing to do at trace start."""

    def end_trace(
        self,
        trace_id: str | None = None,
        trace_map: dict[str, list[str]] | None = None,
    ) -> None:
        """Nothing to do at trace end."""
