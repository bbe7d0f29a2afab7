"""LLM and embedding calls, from LlamaIndex's events to ``agentmeter.instrumentation`` calls.

An LLM call is one :class:`~agentmeter.instrumentation.LLMCall` per span id, started
by its start event and ended exactly once: by its end event (a stream: when
drained), by an ``ExceptionEvent`` (``GeneratorExit``: the consumer abandoned the
stream), by the span being dropped (it raised before answering), or when its
stream object is garbage collected. A call made by another LLM call (``chat``
over ``complete``) is counted once: the innermost, which reaches the provider;
the outer one is cancelled. Usage comes from the response (``raw``, then
``additional_kwargs``); what it does not report is estimated with the model's
tokenizer, else llama-index's default one, and flagged.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.instrumentation.events.exception import ExceptionEvent

from agentmeter import BudgetExceeded, Scope, Tracker
from agentmeter.instrumentation import (
    Attribution,
    LLMCall,
    UsageCounts,
    attached,
    capture,
    count_tokens,
    from_llamaindex,
    merge_cumulative,
    start_llm,
)

from ._common import (
    FALLBACK_ENCODING,
    _model_of,
    count,
    count_messages,
    model_of,
    response_text,
    tag,
)

__all__ = ["STREAM_USAGE_FIX", "BudgetNotEnforcedWarning", "LLMEvents", "StreamUsageWarning"]

logger = logging.getLogger("agentmeter.llamaindex")

_MAX_PENDING = 10_000  # LLM calls awaiting their end (streams nobody drained)
_NO_TAGS: tuple[None, None] = (None, None)
_GENERATORS = (GeneratorType, AsyncGeneratorType)  # inspect.isgenerator / isasyncgen, in one test
_NOTHING = UsageCounts(0, 0, reported_input=False, reported_output=False)

STREAM_USAGE_FIX = 'additional_kwargs={"stream_options": {"include_usage": True}}'


class StreamUsageWarning(UserWarning):
    """A stream ended without reporting its usage; its counts were estimated."""


class BudgetNotEnforcedWarning(UserWarning):
    """A budget applied to a LlamaIndex call that agentmeter had no way to stop.

    Said once per LLM class (and once for tools), with the setting that makes
    the budget enforceable; the call itself is still metered.
    """


def is_openai(cls_name: str) -> bool:
    return "openai" in cls_name.lower()


@lru_cache(maxsize=1024)
def _estimated(input_tokens: int, output_tokens: int) -> UsageCounts:
    """Counts with nothing reported (flagged estimated); shared: building one is not free."""
    return UsageCounts(input_tokens, output_tokens, reported_input=False, reported_output=False)


def _may_report(response: Any) -> bool:
    """Whether a response carries anything usage could be read from (a cheap test first)."""
    return response.raw is not None or bool(response.additional_kwargs)


@dataclass(slots=True, eq=False)
class _LLMSpan:
    """An LLM call in flight, and what correlating LlamaIndex's events needs."""

    call: LLMCall
    cls: str
    prompt: str | None = None
    messages: Any = None
    outer: _LLMSpan | None = None  # the pending LLM call this one runs inside
    children: int = 0  # LLM calls running inside this one (those are counted)
    depth: int = 0  # repeated start events of this span (a wrapper decorated twice)
    last: Any = None  # the last stream chunk
    usage: UsageCounts | None = None  # what the stream's chunks reported
    stream: bool = False
    adapter: bool = False  # re-yields another call's chunks (that one is counted)
    budgeted: bool = False  # a budget applied when the call started
    gated: bool = False  # an agentmeter callback handler saw it start (and could refuse it)


@dataclass(slots=True, eq=False)
class _Embedding:
    model: str
    provider: str | None
    cls: str
    attribution: Attribution
    t0: float = field(default_factory=time.perf_counter)


class LLMEvents:
    """The LLM and embedding half of :class:`~agentmeter_llamaindex.Instrumentor`."""

    tracker: Tracker
    enforce_budgets: bool
    _parents: dict[str, str | None]  # span id -> parent span id, of the open spans
    _fail: Callable[[BaseException, str], None]  # logs an internal error

    def __init__(self) -> None:
        self._llm: dict[str, _LLMSpan] = {}
        self._emb: dict[str, deque[_Embedding]] = {}
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        self._last: tuple[Scope | None, tuple[str | None, str | None], Attribution] | None = None

    def _attribution(self, tags: dict[str, Any] | None) -> Attribution:
        """The attribution in force here (``instrument_tags`` over the caller's scopes).

        The last one is reused while the tracker's innermost scope and the tags are
        the same -- what a record is billed to depends on nothing else -- since
        capturing is a large part of the cost of a call.
        """
        session, agent = (tag(tags, "session_id"), tag(tags, "agent_id")) if tags else _NO_TAGS
        scope = self.tracker.current_scope()
        last = self._last
        if last is not None and last[0] is scope and last[1] == (session, agent):
            return last[2]
        a = capture(self.tracker, session_id=session, agent_id=agent)
        self._last = (scope, (session, agent), a)
        return a

    def is_nested_llm(self, span_id: str | None) -> bool:
        """True when the LLM call of ``span_id`` runs inside another LLM call."""
        span = self._llm.get(span_id) if span_id is not None else None
        return span is not None and (span.outer is not None or span.depth > 0)

    # -- start and stream ---------------------------------------------------------
    def _on_start(self, kind: str, event: Any) -> None:
        """A start event (chat and completion share this body: one frame per start).

        Dispatched through ``partial(self._on_start, kind)``, a call made in C.
        """
        sid = event.span_id or event.id_
        llm = self._llm
        span = llm.get(sid)
        if span is not None:
            # A second LLM event in the same span (a wrapper decorated twice): the
            # outer one stays, the inner one is ignored until its end.
            span.depth += 1
            if span.messages is None and span.prompt is None:
                if kind == "completion":
                    span.prompt = event.prompt
                else:
                    span.messages = event.messages
            return
        md = event.model_dict  # model_of(), inline: its lru_cache'd part called directly
        model, provider, cls = _model_of(
            md.get("class_name"), md.get("model"), md.get("model_name")
        )
        tags = event.tags  # the dispatcher's instrument_tags: usually empty
        session, agent = (tag(tags, "session_id"), tag(tags, "agent_id")) if tags else _NO_TAGS
        tracker = self.tracker
        # Attribution captured inside start_llm (its inline path for plain ids).
        call = start_llm(
            model,
            provider=provider,
            kind=kind,
            call_id=sid,
            tracker=tracker,
            session_id=session,
            agent_id=agent,
            check_budget=False,  # the dispatcher cannot stop a call: see callback.py
        )
        if kind == "completion":
            span = _LLMSpan(call, cls, event.prompt)
        else:
            span = _LLMSpan(call, cls, None, event.messages)
        # Whether a budget applies, to say so if nothing could stop the call (_finish).
        span.budgeted = tracker.budget_applies(session)
        parent = self._parents.get(sid)
        if parent is not None:  # the usual top-level call has no parent span: no walk
            span.outer = outer = self._pending_ancestor(sid)
            if outer is not None:
                outer.children += 1
        llm[sid] = span
        if len(llm) > _MAX_PENDING:
            llm.pop(next(iter(llm)), None)

    def _pending_ancestor(self, sid: str) -> _LLMSpan | None:
        parents, llm = self._parents, self._llm
        p = parents.get(sid)
        for _ in range(64):
            if p is None:
                return None
            span = llm.get(p)
            if span is not None:
                return span
            p = parents.get(p)
        return None

    def _on_chunk(self, event: Any) -> None:
        span = self._llm.get(event.span_id)
        if span is None:
            return
        response = event.response
        if span.call.chunks == 0 and response is not None:
            # A stream that re-yields the chunks of another call (CustomLLM's
            # astream_chat iterates stream_chat): the other call is the one counted.
            for other in list(self._llm.values()):
                if other.last is response and other is not span:
                    span.adapter = True
                    # The inner call runs wherever the stream is drained; it is
                    # billed where the caller asked for the stream.
                    inner, outer = other.call.attribution, span.call.attribution
                    other.call.attribution = outer.replace(
                        session_id=inner.session_id or outer.session_id,
                        agent_id=inner.agent_id or outer.agent_id,
                    )
                    break
        span.last = response
        span.call.add_chunk()
        if response is not None and _may_report(response):
            found = from_llamaindex(response)
            if found is not None:
                # Streams report cumulative counts (Anthropic: message_start, then message_delta).
                span.usage = merge_cumulative(span.usage, found)

    def _llm_span_exit(self, id_: str, result: Any) -> None:
        span = self._llm.get(id_)
        if span is not None and isinstance(result, _GENERATORS):
            span.stream = True
            weakref.finalize(result, self._forget_stream, id_)

    # -- the end ----------------------------------------------------------------
    def _ending(self, sid: str | None) -> _LLMSpan | None:
        """The call an end event of ``sid`` ends, or ``None`` (not ours, or an inner repeat)."""
        if sid is None:
            return None
        llm = self._llm
        span = llm.get(sid)
        if span is None:
            return None
        if span.depth:
            span.depth -= 1
            return None
        # None: finished meanwhile (e.g. by the stream finalizer).
        return llm.pop(sid, None)

    def _on_end(self, event: Any) -> None:
        # _ending(), inline: an end event of every call comes here.
        sid = event.span_id
        llm = self._llm
        span = llm.get(sid)  # None is never a key: a miss
        if span is None:
            return
        if span.depth:
            span.depth -= 1
            return
        if llm.pop(sid, None) is not None:  # None: finished meanwhile (a stream finalizer)
            self._finish(span, event.response)

    def _on_exception(self, event: ExceptionEvent) -> None:
        span = self._ending(event.span_id)
        if span is None:
            return
        if isinstance(event.exception, GeneratorExit):
            self._finish(span, span.last, abandoned=True)
        else:
            self._finish(span, span.last, error=event.exception)

    def _llm_span_drop(self, id_: str, err: BaseException | None) -> None:
        span = self._llm.get(id_)
        if span is None or span.stream:
            return
        # The call raised before it returned a response (or a stream).
        del self._llm[id_]
        if isinstance(err, BudgetExceeded):
            self._not_made(span)  # refused by a budget before it was made
        elif span.children:
            span.call.cancel()  # the inner calls are the ones counted
        else:
            # The provider's usage of a failed call is unknown: it is recorded as a
            # failed call with no tokens, not as a successful one with zero.
            span.call.fail(err if err is not None else "error")

    def _forget_stream(self, sid: str) -> None:
        """The stream object of ``sid`` was garbage collected."""
        try:
            span = self._llm.pop(sid, None)
            if span is None:
                return
            if span.call.chunks == 0:
                self._not_made(span)  # never iterated: streams start lazily
            else:
                self._finish(span, span.last, abandoned=True)
        except Exception as exc:
            self._fail(exc, "stream finalizer")

    def _not_made(self, span: _LLMSpan) -> None:
        span.call.cancel()
        if span.outer is not None:
            span.outer.children -= 1

    def _finish(
        self,
        span: _LLMSpan,
        response: Any,
        *,
        abandoned: bool = False,
        error: BaseException | None = None,
    ) -> None:
        call = span.call
        if span.children or span.adapter:
            call.cancel()  # an adapter over inner LLM calls (chat -> complete): those count
            return
        if span.budgeted and not self._covered(span):
            self._warn_unenforced(span)
        stream = span.stream
        usage = span.usage if stream else None
        if (
            usage is None
            and response is not None
            and (response.raw is not None or response.additional_kwargs)  # _may_report, inline
        ):
            usage = from_llamaindex(response)
        if (
            stream
            and not abandoned
            and error is None
            and (usage is None or not (usage.reported_input or usage.reported_output))
        ):
            self._warn_stream(span)
        if usage is None:
            # Nothing reported (a local or mock model): both sides estimated, as
            # _estimate() counts them (abandoned or not: no reported side to drop).
            model = call.model
            if span.prompt is not None:
                inp = count(span.prompt, model)
            elif span.messages is not None:
                inp = count_messages(span.messages, model)
            else:
                inp = 0
            # response_text(), inline for the usual CompletionResponse.
            text = (
                response.text
                if response.__class__ is CompletionResponse
                else response_text(response)
            )
            usage = _estimated(inp, count(text, model))
        elif abandoned or not usage.fully_reported:
            usage = self._estimate(span, usage, response, abandoned)
        if error is not None:
            call.fail(error, usage=usage)
        elif abandoned:
            call.finish(usage, metadata={"stream": "abandoned", "chunks": call.chunks})
        else:
            call.finish(usage)

    def _estimate(
        self, span: _LLMSpan, usage: UsageCounts | None, response: Any, abandoned: bool
    ) -> UsageCounts:
        """``usage`` with the sides it does not report estimated (abandoned: the output).

        What was reported of an estimated side (its parts) is a lower bound."""
        u = usage if usage is not None else _NOTHING
        model = span.call.model
        inp, out = u.input_tokens, u.output_tokens
        if not u.reported_input:
            if span.prompt is not None:
                inp = max(inp, count(span.prompt, model))
            elif span.messages is not None:
                inp = max(inp, count_messages(span.messages, model))
        reported_out = u.reported_output and not abandoned
        if not reported_out:
            out = max(out, count(response_text(response), model))
        if usage is None:
            return _estimated(inp, out)
        return UsageCounts(
            inp,
            out,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
            u.audio_input_tokens,
            u.audio_output_tokens,
            None if abandoned else u.cost_usd,
            u.malformed,
            u.reported_input,
            reported_out,
        )

    # -- budgets -------------------------------------------------------------------
    def gate(self, span_id: str | None) -> None:
        """An agentmeter callback handler saw the LLM call of ``span_id`` start."""
        span = self._llm.get(span_id) if span_id is not None else None
        if span is not None:
            span.gated = True

    @staticmethod
    def _covered(span: _LLMSpan) -> bool:
        """Whether a handler that could refuse saw this call (or the call it runs in)."""
        s: _LLMSpan | None = span
        for _ in range(64):
            if s is None:
                return False
            if s.gated:
                return True
            s = s.outer
        return False

    def _warn_unenforced(self, span: _LLMSpan) -> None:
        key = "llm:" + span.cls
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        if not self.enforce_budgets:
            why = "agentmeter_llamaindex.instrument(enforce_budgets=False) meters without refusing"
            fix = "instrument(enforce_budgets=True) (the default)"
        else:
            why = (
                f"{span.cls} did not call its CallbackManager (its chat / complete methods are "
                "not wrapped by llama-index's llm_chat_callback / llm_completion_callback)"
            )
            fix = (
                "wrap them with llama_index.core.llms.callbacks.llm_chat_callback() / "
                "llm_completion_callback(), as llama-index's own LLMs do"
            )
        warn_unenforced(
            f"agentmeter: a budget applies to calls of {span.cls} (model {span.call.model!r}), "
            f"but agentmeter could not stop them before they were made: {why}. They are "
            f"metered and counted against the budget, never refused. To enforce it: {fix}."
        )

    def _warn_stream(self, span: _LLMSpan) -> None:
        key = span.call.model
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        if is_openai(span.cls):
            fix = f"pass {STREAM_USAGE_FIX} to the llama-index OpenAI LLM, or "
            fix += "instrument(stream_usage=True)"
        else:
            fix = f"enable usage reporting for streams in the {span.cls} integration"
        warnings.warn(
            f"agentmeter: a stream of model {key!r} ended without reporting its token "
            f"usage; its counts are estimated (estimated=True). To count it exactly, {fix}.",
            StreamUsageWarning,
            stacklevel=2,
        )

    # -- embeddings ---------------------------------------------------------------
    def _on_embedding_start(self, event: Any) -> None:
        sid = event.span_id or ""
        queue = self._emb.get(sid)
        if queue is None:
            queue = self._emb[sid] = deque()
            if len(self._emb) > _MAX_PENDING:
                self._emb.pop(next(iter(self._emb)), None)
        queue.append(_Embedding(*model_of(event.model_dict), self._attribution(event.tags)))

    def _on_embedding_end(self, event: Any) -> None:
        sid = event.span_id or ""
        queue = self._emb.get(sid)
        if not queue:
            return
        emb = queue.popleft()  # batches of one span end in the order they started
        if not queue:
            del self._emb[sid]
        # LlamaIndex reports no embedding usage: the count is exact with the model's own
        # tokenizer over the text as sent (llama-index's OpenAIEmbedding replaces newlines).
        openai = is_openai(emb.cls)
        tokens, exact = 0, openai
        for chunk in event.chunks:
            text = chunk.replace("\n", " ") if openai else chunk
            n, own = count_tokens(text, emb.model, fallback_encoding=FALLBACK_ENCODING)
            tokens, exact = tokens + n, exact and own
        a = emb.attribution
        with attached(a):
            self.tracker.record_embedding(
                emb.model,
                tokens,
                provider=emb.provider,
                latency_ms=(time.perf_counter() - emb.t0) * 1000.0,
                call_id=event.id_,
                estimated=not exact,
                session_id=a.session_id,
                agent_id=a.agent_id,
            )


def warn_unenforced(message: str) -> None:
    """Say it loudly: a warning of its own category and a WARNING log record."""
    logger.warning(message)
    warnings.warn(message, BudgetNotEnforcedWarning, stacklevel=3)
