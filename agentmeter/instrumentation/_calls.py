"""Calls in flight: one object per LLM, embedding or tool call, from start to settlement.

Every integration meters a call the same way, so the lifecycle lives here once:

1. **start** (``start_llm`` / ``start_embedding`` / ``start_tool``): capture the
   attribution (tracker, scopes, session, agent, customer), start the clock and
   reserve the budget -- :class:`~agentmeter.BudgetExceeded` is raised *here*,
   before the framework sends the request, and nothing is booked then;
2. **stream** (``add_chunk``): count what arrives, and any usage it carries;
3. **end**, exactly once: ``finish`` (usage reported, or estimated and flagged
   when it was not), ``fail`` (a failed call), ``abandon`` (a stream the consumer
   stopped: what it received is recorded and flagged) or ``cancel`` (the call was
   never made: the reservation is given back, nothing is recorded). Whichever
   comes first settles the reservation; later ones return ``False`` and do
   nothing, from any thread.

The end runs with the captured attribution attached, so a callback that fires on
another thread or task still credits the scopes the call started in. Internal
errors are logged and swallowed (see :func:`agentmeter.instrumentation.guarded`);
only ``BudgetExceeded`` / ``BudgetStoreUnavailable`` propagate.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, Literal
from uuid import UUID

from .. import _validate
from .._guard import guarded, swallow
from .._signature import KW, TRUSTED, KeywordsOnly, keywords_only, positional_error
from ..budget import Budget
from ..errors import BudgetExceeded, BudgetStoreUnavailable
from ..scope import STACK, Scope
from ._context import _TRACKER_TYPES, Attribution, capture_now, checked
from ._tokens import estimate_messages, estimate_tokens
from ._usage import UsageCounts

if TYPE_CHECKING:
    from ..tracker import Tracker

__all__ = [
    "MEASURED",
    "EmbeddingCall",
    "LLMCall",
    "ToolCall",
    "start_embedding",
    "start_llm",
    "start_tool",
]

_LLM_KINDS = frozenset({"chat", "completion", "image", "audio", "other"})
_new_tuple = tuple.__new__
_object_new = object.__new__
_perf_counter = time.perf_counter  # a global, not a module attribute, on the hot path
# Deliberate answers to the host: they leave every end method (as with guarded).
_PROPAGATE = (BudgetExceeded, BudgetStoreUnavailable)


class _Latency(enum.Enum):
    MEASURED = "measured"


MEASURED: Final = _Latency.MEASURED
"""``LLMCall.finish(latency_ms=MEASURED)`` (the default): the time since the call started."""

# One guard per entry point (a guard holds only its name, so sharing one is safe).
_G_ADD_CHUNK = guarded("LLMCall.add_chunk")
_G_FAIL = guarded("LLMCall.fail")
_G_ABANDON = guarded("LLMCall.abandon")
_G_CANCEL = guarded("LLMCall.cancel")
_G_START = guarded("start_llm")


def _attribution(
    attribution: Attribution | None,
    tracker: Tracker | None,
    session_id: str | None,
    agent_id: str | None,
    customer_id: str | None,
    tool: str | None,
    tags: dict[str, str] | None,
) -> Attribution:
    if attribution is None:
        return capture_now(tracker, session_id, agent_id, customer_id, tool, tags)
    return checked(attribution)


class _attached:
    """Attach ``attribution``'s scopes around a record -- only when they are not the
    current ones already (the common case: a call ends in the context it started in)."""

    __slots__ = ("stack", "token")

    def __init__(self, attribution: Attribution) -> None:
        self.stack = attribution.stack
        self.token: Any = None

    def __enter__(self) -> None:
        if STACK.get() is not self.stack:
            self.token = STACK.set(self.stack)

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            STACK.reset(self.token)  # a with block begins and ends in one context


# The five groups of a UUID's 32 hex digits, cut in one C call.
_UUID_GROUPS = itemgetter(slice(0, 8), slice(8, 12), slice(12, 16), slice(16, 20), slice(20, 32))


def _uuid_str(u: UUID) -> str:
    """``str(u)``, faster than ``UUID.__str__`` (which slices in Python).

    The hex digits come from ``int.to_bytes().hex()``: in place (inside a framework's
    call) that path costs a third of the instruction-cache misses of ``"%032x" %``,
    whose formatting machinery the rest of the call has evicted by then.
    """
    return "-".join(_UUID_GROUPS(u.int.to_bytes(16, "big").hex()))


def _call_id(call_id: object, tracker: Tracker) -> str:
    """The id a call is recorded under: the framework's (checked), else a fresh one."""
    cls = call_id.__class__
    if cls is UUID:  # LangChain's run ids
        return _uuid_str(call_id)  # type: ignore[arg-type]
    if cls is str and call_id and call_id.isascii():  # type: ignore[attr-defined]
        return call_id  # type: ignore[return-value]
    cid = _validate.call_id(call_id)
    return str(cid) if cid is not None else tracker.new_call_id()


class _InFlight:
    """What every call in flight shares: attribution, id, clock, the once-only end."""

    __slots__ = ("_open", "attribution", "call_id", "t0", "tracker")

    def __init__(self, attribution: Attribution, call_id: object) -> None:
        self.attribution = attribution
        self.tracker = attribution.tracker
        self.call_id: str = _call_id(call_id, self.tracker)
        self.t0 = time.perf_counter()
        # Popped by the end that wins: list.pop is atomic, so exactly one of
        # finish/fail/abandon/cancel claims the call, from any thread.
        self._open = [True]

    @property
    def done(self) -> bool:
        """True once the call was finished, failed, abandoned or cancelled."""
        return not self._open

    def _claim(self) -> bool:
        try:
            return self._open.pop()
        except IndexError:
            return False

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return (time.perf_counter() - self.t0) * 1000.0

    def _reserve(
        self,
        estimate: Callable[[], int],
        kind: str,
        model: str | None,
        provider: str | None,
        max_output_tokens: int | None = None,
    ) -> None:
        """Reserve against the budgets that apply (estimating only when one does)."""
        a = self.attribution
        if not a.budgeted:
            return
        with _attached(a):
            self.tracker.check_budget(
                estimate(),
                kind=kind,
                model=model,
                provider=provider,
                max_output_tokens=max_output_tokens,
                call_id=self.call_id,
                session_id=a.session_id,
                customer_id=a.customer_id,
                agent_id=a.agent_id,
                tool=a.tool,
            )

    def _release(self) -> None:
        self.tracker.release(self.call_id)


class LLMCall(_InFlight):
    """An LLM call in flight, made by :func:`start_llm` (the lifecycle: see the module).

    Attributes:
        model: Model name (may be refined by :meth:`finish`).
        provider: Provider name, or ``None``.
        kind: ``"chat"``, ``"completion"``, ``"image"``, ``"audio"`` or ``"other"``.
        call_id: The id the call is recorded (and its reservation booked) under.
        chunks: Stream chunks seen so far.
    """

    __slots__ = (
        "_chars",
        "_prompt",
        "_prompt_tokens",
        "_usage",
        "chunks",
        "kind",
        "model",
        "provider",
    )
    # The slots' types (start_llm fills them).
    model: str
    provider: str | None
    kind: str
    chunks: int
    _chars: int
    _prompt: Any
    _prompt_tokens: int | None
    _usage: UsageCounts | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        # start_llm() builds every LLMCall, filling its slots itself: a class call
        # runs __init__ through C, in a second eval loop (a call from Python to
        # Python is inlined), ~0.25 us of each model call's start inside LangChain.
        raise TypeError("LLMCall objects are made by agentmeter.instrumentation.start_llm()")

    def prompt_tokens(self) -> int:
        """The prompt's size: as given at start, else estimated from the prompt (cached)."""
        if self._prompt_tokens is None:
            prompt = self._prompt
            if prompt is None:
                n = 0
            elif isinstance(prompt, str):
                n = estimate_tokens(prompt, self.model)
            else:
                n = estimate_messages(prompt, self.model)
            self._prompt_tokens = n
        return self._prompt_tokens

    def add_chunk(self, text: str | None = None, usage: UsageCounts | None = None) -> None:
        """Count one stream chunk: its text (for an estimate) and any usage it carries.

        Usage of successive chunks is added up; pass the final chunk's totals to
        :meth:`finish` instead when the provider reports cumulative counts.
        """
        with _G_ADD_CHUNK:
            self.chunks += 1
            if text:
                self._chars += len(text)
            if usage is not None:
                self._usage = usage if self._usage is None else self._usage + usage

    def _counts(
        self, usage: UsageCounts | None, output_text: str | None
    ) -> tuple[int, int, int, int, int, bool]:
        u = usage if usage is not None else self._usage
        estimated = False
        if u is not None and u.reported_input:
            inp = u.input_tokens
        else:
            inp = max(self.prompt_tokens(), u.input_tokens if u is not None else 0)
            estimated = True
        if u is not None and u.reported_output:
            out = u.output_tokens
        else:
            guess = estimate_tokens(output_text, self.model) if output_text else 0
            if not guess and self._chars:
                guess = (self._chars + 3) // 4
            out = max(guess, u.output_tokens if u is not None else 0)
            estimated = True
        cr = cw = rs = 0
        if u is not None:
            cr, cw, rs = u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens
            if cr + cw > inp:  # parts of an estimated whole: keep the whole consistent
                inp = cr + cw
            if rs > out:
                out = rs
        return inp, out, cr, cw, rs, estimated

    def _record(
        self,
        usage: UsageCounts | None,
        output_text: str | None,
        ok: bool,
        error: str | None,
        model: str | None,
        provider: str | None,
        cost: int | None,
        metadata: dict[str, Any] | None,
        latency_ms: float | _Latency | None,
        tokens: bool = True,
    ) -> None:
        """Record the call through the tracker's trusted path (arguments checked already)."""
        u = usage if usage is not None else self._usage
        if not tokens:
            inp = out = cr = cw = rs = 0
            estimated = False
        elif u is not None and u.reported_input and u.reported_output:  # nothing to estimate
            inp, out = u.input_tokens, u.output_tokens
            cr, cw, rs = u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens
            estimated = False
        else:
            inp, out, cr, cw, rs, estimated = self._counts(usage, output_text)
        if cost is None and u is not None and u.cost_usd is not None:
            cost = _validate.opt_cost_micros("cost_usd", u.cost_usd)
        if latency_ms is MEASURED:
            latency_ms = (time.perf_counter() - self.t0) * 1000.0
        a = self.attribution
        tracker = self.tracker
        stack = a.stack
        # Attach the captured scopes, unless they are the current ones already (the
        # usual case: the call ends in the context it started in).
        token = None if STACK.get() is stack else STACK.set(stack)
        try:
            tracker.record_llm(
                model or self.model,
                inp,
                out,
                TRUSTED,
                cr,
                cw,
                rs,
                provider or self.provider,
                latency_ms,
                cost,
                self.call_id,
                self.kind,
                estimated,
                a.session_id,
                a.agent_id,
                a.customer_id,
                a.tool,
                a.tags,
                metadata,
                ok,
                error,
            )
        finally:
            if token is not None:
                STACK.reset(token)  # set and reset in one context, this frame

    @keywords_only
    def finish(
        self,
        usage: UsageCounts | None = None,
        _kw: KeywordsOnly = KW,  # keyword-only: see agentmeter._signature
        output_text: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        cost_usd: Decimal | float | None = None,
        metadata: dict[str, Any] | None = None,
        latency_ms: float | Literal[_Latency.MEASURED] | None = MEASURED,
    ) -> bool:
        """Record the call's usage and settle its reservation.

        Args:
            usage: What the provider reported (see :func:`normalise_usage`); parts it
                did not report validly are estimated and the call is flagged
                ``estimated``. ``None``: the streamed chunks' usage, else estimates.
            output_text: The answer, to estimate output tokens when they were not reported.
            model: The model the provider says answered (default: the one at start).
            provider: Provider, if known only now.
            cost_usd: A cost the provider reported (wins over prices).
            metadata: Free-form data for subscribers and sinks.
            latency_ms: The call's duration: measured from its start (the default), a
                duration the framework reported, or ``None`` when it is unknown (a
                call whose start was not seen): recorded without a latency.

        Returns:
            True if this settled the call, False if it had already ended.

        Raises:
            TypeError, ValueError: on bad arguments (the call stays open then).
        """
        if _kw is not KW:
            raise positional_error("LLMCall.finish", 1)
        if (
            usage.__class__ is UsageCounts
            and output_text is None
            and provider is None
            and cost_usd is None
            and metadata is None
            and latency_ms is MEASURED
            and (model is None or (model.__class__ is str and model.isascii()))
            and usage.reported_input
            and usage.reported_output
            and usage.cost_usd is None
        ):
            # The usual end -- whole counts reported, nothing else -- recorded here
            # through the tracker's trusted path (what _record does, without its
            # branches and one call less); every value is valid already.
            try:  # self._claim(), inline: exactly one end wins
                self._open.pop()
            except IndexError:
                return False
            u: UsageCounts = usage
            a = self.attribution
            stack = a.stack
            token = None if STACK.get() is stack else STACK.set(stack)
            try:
                self.tracker.record_llm(
                    model or self.model,
                    u.input_tokens,
                    u.output_tokens,
                    TRUSTED,
                    u.cache_read_tokens,
                    u.cache_write_tokens,
                    u.reasoning_tokens,
                    self.provider,
                    (_perf_counter() - self.t0) * 1000.0,
                    None,
                    self.call_id,
                    self.kind,
                    False,
                    a.session_id,
                    a.agent_id,
                    a.customer_id,
                    a.tool,
                    a.tags,
                    None,
                    True,
                    None,
                )
            except _PROPAGATE:
                raise
            except Exception as exc:
                swallow(exc, "LLMCall.finish")
            finally:
                if token is not None:
                    STACK.reset(token)
            return True
        cost = None
        if (
            (usage is not None and usage.__class__ is not UsageCounts)
            or output_text is not None
            or (model is not None and (model.__class__ is not str or not model.isascii()))
            or (provider is not None and (provider.__class__ is not str or not provider.isascii()))
            or cost_usd is not None
            or metadata is not None
            or latency_ms is not MEASURED
        ):
            cost, latency_ms = _check_end(
                usage, output_text, model, provider, cost_usd, metadata, latency_ms
            )
        try:  # self._claim(), inline: exactly one end wins
            self._open.pop()
        except IndexError:
            return False
        try:
            self._record(
                usage, output_text, True, None, model, provider, cost, metadata, latency_ms
            )
        except _PROPAGATE:
            raise
        except Exception as exc:
            swallow(exc, "LLMCall.finish")
        return True

    def fail(
        self,
        error: BaseException | str,
        *,
        usage: UsageCounts | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Record a failed call (no tokens unless ``usage`` says some were billed)."""
        if not isinstance(error, BaseException | str):
            raise TypeError(f"error must be an exception or a str, got {type(error).__name__}")
        err = _validate.error(error) if isinstance(error, str) else type(error).__name__
        _check_end(usage, None, None, None, None, metadata, MEASURED)
        if not self._claim():
            return False
        with _G_FAIL:
            billed = usage is not None
            self._record(usage, None, False, err, None, None, None, metadata, MEASURED, billed)
        return True

    def abandon(
        self,
        note: str = "stream abandoned before its end",
        *,
        usage: UsageCounts | None = None,
        ok: bool = True,
        output_text: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Record a stream that ended early with what it received (flagged partial).

        ``ok=True`` (the default) because a consumer that stops reading is not a
        failure of the call; pass ``ok=False`` for a stream that broke.

        Args:
            note: Why it ended (recorded as the event's error text).
            usage: Usage the stream reported before it stopped, if any.
            ok: False for a stream that broke.
            output_text: The text received, to estimate its tokens (default: the
                chunks' text counted by :meth:`add_chunk`).
            model: The model the stream said answered (default: the one at start).
            provider: Provider, if known only now.
            metadata: Free-form data for subscribers and sinks; its ``"stream"`` and
                ``"partial"`` keys are agentmeter's.
        """
        _validate.flag("ok", ok)
        if type(note) is not str:
            raise TypeError(f"note must be a str, got {type(note).__name__}")
        _validate.text("note", note)
        _check_end(usage, output_text, model, provider, None, metadata, MEASURED)
        if not self._claim():
            return False
        marks = {"stream": "abandoned" if ok else "failed", "partial": True}
        with _G_ABANDON:
            self._record(
                usage,
                output_text,
                ok,
                note,
                model,
                provider,
                None,
                {**metadata, **marks} if metadata else marks,
                MEASURED,
            )
        return True

    def cancel(self) -> bool:
        """The call was not made after all: give the reservation back, record nothing."""
        if not self._claim():
            return False
        with _G_CANCEL:
            self._release()
        return True


def _check_end(
    usage: object,
    output_text: object,
    model: object,
    provider: object,
    cost_usd: object,
    metadata: object,
    latency_ms: float | _Latency | None,
) -> tuple[int | None, float | _Latency | None]:
    """Check what an end method was given (before it ends the call, so a bad argument
    leaves it open); returns the cost in micro-dollars and the latency."""
    if usage is not None and not isinstance(usage, UsageCounts):
        raise TypeError(f"usage must be a UsageCounts or None, got {type(usage).__name__}")
    if output_text is not None and not isinstance(output_text, str):
        raise TypeError(f"output_text must be a str or None, got {type(output_text).__name__}")
    if model is not None and model != "":  # "" (or None): the model named at start
        _validate.name("model", model)
    if provider is not None and provider != "":
        _validate.name("provider", provider)
    _validate.metadata(metadata)
    if latency_ms is not MEASURED and latency_ms is not None:
        latency_ms = _validate.duration("latency_ms", latency_ms)
    cost = _validate.opt_cost_micros("cost_usd", cost_usd)
    return cost, latency_ms


class EmbeddingCall(_InFlight):
    """An embedding call in flight: ``finish(input_tokens)``, ``fail``, ``cancel``."""

    __slots__ = ("_texts", "model", "provider")

    def __init__(
        self,
        attribution: Attribution,
        model: str,
        provider: str | None,
        call_id: object,
        texts: Sequence[str] | None,
    ) -> None:
        super().__init__(attribution, call_id)
        self.model = model
        self.provider = provider
        self._texts = texts

    def _record(
        self,
        input_tokens: int,
        estimated: bool,
        ok: bool,
        error: str | None,
        cost_usd: Decimal | float | None,
    ) -> None:
        a = self.attribution
        with _attached(a):
            self.tracker.record_embedding(
                self.model,
                input_tokens,
                provider=self.provider,
                latency_ms=self.elapsed_ms(),
                cost_usd=cost_usd,
                call_id=self.call_id,
                estimated=estimated,
                session_id=a.session_id,
                agent_id=a.agent_id,
                tool=a.tool,
                ok=ok,
                error=error,
                customer_id=a.customer_id,
                tags=a.tags,
            )

    def finish(
        self,
        input_tokens: int | None = None,
        *,
        usage: UsageCounts | None = None,
        cost_usd: Decimal | float | None = None,
        estimated: bool | None = None,
    ) -> bool:
        """Record the call: the reported count, else one estimated from the texts.

        Args:
            input_tokens: The count the provider reported.
            usage: Or its usage (its input count, and a cost it reported).
            cost_usd: A cost the provider reported (wins over prices).
            estimated: Whether the count is an estimate. ``None`` (the default): only
                when it was estimated here from the texts; ``True`` for a count the
                caller estimated itself (a tokenizer run on the inputs).

        Raises:
            TypeError, ValueError: on bad arguments (the call stays open then).
        """
        if input_tokens is not None:
            input_tokens = _validate.count("input_tokens", input_tokens)
        if usage is not None and not isinstance(usage, UsageCounts):
            raise TypeError(f"usage must be a UsageCounts or None, got {type(usage).__name__}")
        if estimated is not None:
            _validate.flag("estimated", estimated)
        _validate.opt_cost_micros("cost_usd", cost_usd)
        if not self._claim():
            return False
        with guarded("EmbeddingCall.finish"):
            flagged = False
            if input_tokens is None and usage is not None and usage.reported_input:
                input_tokens = usage.input_tokens
                if cost_usd is None:
                    cost_usd = usage.cost_usd
            if input_tokens is None:
                flagged = True
                try:
                    input_tokens = sum(estimate_tokens(t, self.model) for t in self._texts or ())
                except Exception:  # unusable texts: record the call anyway, it was made
                    input_tokens = 0
            self._record(
                input_tokens, flagged if estimated is None else estimated, True, None, cost_usd
            )
        return True

    def fail(self, error: BaseException | str) -> bool:
        """Record a failed embedding call (no tokens)."""
        if not self._claim():
            return False
        with guarded("EmbeddingCall.fail"):
            err = error if isinstance(error, str) else type(error).__name__
            self._record(0, False, False, err, None)
        return True

    def cancel(self) -> bool:
        """The call was not made: give the reservation back, record nothing."""
        if not self._claim():
            return False
        with guarded("EmbeddingCall.cancel"):
            self._release()
        return True


class ToolCall(_InFlight):
    """A tool call in flight: ``finish(ok=...)``, ``fail``, ``cancel``.

    With ``open_scope`` (the default) the call opens a scope for the tool's body in
    the current context: LLM calls made inside are credited to the tool, and a
    function decorated with ``@metered_tool`` inside records the same call once.

    Attributes:
        name: The tool's name.
        category: Its category ("" for none).
        scope: The scope of the tool's body, or ``None``.
    """

    __slots__ = ("category", "cost_usd", "name", "scope")

    def __init__(
        self,
        attribution: Attribution,
        name: str,
        category: str,
        call_id: object,
        scope: Scope | None,
        cost_usd: Decimal | float | None = None,
    ) -> None:
        super().__init__(attribution, call_id)
        self.name = name
        self.category = category
        self.scope = scope
        self.cost_usd = cost_usd

    def _close_scope(self, exc: BaseException | None = None) -> None:
        scope = self.scope
        if scope is not None and scope.active:
            scope.exit(exc)

    def finish(
        self, ok: bool = True, error: str | None = None, *, exc: BaseException | None = None
    ) -> bool:
        """Record the call (its duration, success) and close its scope."""
        if not self._claim():
            return False
        try:
            with guarded("ToolCall.finish"), _attached(self.attribution):
                a = self.attribution
                self.tracker.record_tool_call(
                    self.name,
                    ok,
                    self.elapsed_ms(),
                    category=self.category,
                    call_id=self.call_id,
                    session_id=a.session_id,
                    agent_id=a.agent_id,
                    error=error,
                    customer_id=a.customer_id,
                    tags=a.tags,
                    cost_usd=self.cost_usd,
                )
        finally:
            with guarded("ToolCall.finish"):
                self._close_scope(exc)
        return True

    def fail(self, error: BaseException | str) -> bool:
        """Record a failed tool call (an exception, or an error result)."""
        if isinstance(error, BaseException):
            return self.finish(False, type(error).__name__, exc=error)
        return self.finish(False, error)

    def cancel(self) -> bool:
        """The tool did not run after all: give the reservation back, record nothing."""
        if not self._claim():
            return False
        with guarded("ToolCall.cancel"):
            self._release()
            self._close_scope()
        return True


# ------------------------------------------------------------------- factories
@keywords_only
def start_llm(
    model: str,
    _kw: KeywordsOnly = KW,  # keyword-only: see agentmeter._signature
    provider: str | None = None,
    kind: str = "chat",
    call_id: object = None,
    prompt: str | Sequence[Any] | None = None,
    prompt_tokens: int | None = None,
    attribution: Attribution | None = None,
    tracker: Tracker | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    customer_id: str | None = None,
    tool: str | None = None,
    tags: dict[str, str] | None = None,
    check_budget: bool = True,
    max_output_tokens: int | None = None,
) -> LLMCall:
    """Start metering an LLM call: capture attribution, start the clock, reserve budget.

    Args:
        model: Model name as requested.
        provider: Provider name (for pricing), if known.
        kind: ``"chat"``, ``"completion"``, ``"image"``, ``"audio"`` or ``"other"``.
        call_id: The framework's run id (default: a fresh agentmeter id).
        prompt: The prompt (text or messages), to estimate its size when needed.
        prompt_tokens: The prompt's size when the caller counted it already.
        attribution: Captured earlier (:func:`capture`); default: captured now,
            with the explicit ``session_id`` / ``agent_id`` / ``customer_id`` /
            ``tool`` / ``tags`` given here.
        tracker: Tracker (default: the process-wide one).
        session_id, agent_id, customer_id, tool, tags: Explicit attribution.
        check_budget: Reserve the estimated prompt against the budgets that apply.
        max_output_tokens: The request's output limit, when it sets one: the
            reservation is then the call's worst case (input plus this many output
            tokens, priced at the model's rates), a hard cap. Without it the
            reservation is the input only.

    Raises:
        BudgetExceeded: the call would overspend a budget (nothing was booked).
        TypeError, ValueError: on bad arguments.
    """
    if _kw is not KW:
        raise positional_error("start_llm", 1)
    if model.__class__ is not str or not model or not model.isascii():
        _validate.name("model", model, optional=False)
    if provider is not None and (
        provider.__class__ is not str or not provider or not provider.isascii()
    ):
        _validate.name("provider", provider)
    if kind.__class__ is not str or kind not in _LLM_KINDS:
        _validate.kind(kind, _LLM_KINDS)
    if prompt_tokens is not None:
        prompt_tokens = _validate.count("prompt_tokens", prompt_tokens)
    if check_budget is not True and check_budget is not False:
        _validate.flag("check_budget", check_budget)
    if max_output_tokens is not None:
        max_output_tokens = _validate.count("max_output_tokens", max_output_tokens)
    if attribution is None:
        # capture_now(), inline on every model call's start: the usual arguments (a
        # Tracker, plain ASCII ids, no tags) are valid as they are.
        if (
            tracker.__class__ in _TRACKER_TYPES
            and tags is None
            and (
                session_id is None
                or (session_id.__class__ is str and session_id.isascii() and session_id)
            )
            and (
                agent_id is None or (agent_id.__class__ is str and agent_id.isascii() and agent_id)
            )
            and (
                customer_id is None
                or (customer_id.__class__ is str and customer_id.isascii() and customer_id)
            )
            and (tool is None or (tool.__class__ is str and tool.isascii() and tool))
        ):
            stack = STACK.get()
            a = _new_tuple(
                Attribution, (tracker, stack, session_id, agent_id, customer_id, tool, None)
            )
        else:
            a = capture_now(tracker, session_id, agent_id, customer_id, tool, tags)
            tracker, stack = a.tracker, a.stack
    else:
        a = checked(attribution)
        tracker, stack = a.tracker, a.stack
    # The call's slots, filled here rather than by a constructor (see LLMCall.__init__).
    call: LLMCall = _object_new(LLMCall)
    call.attribution = a
    call.tracker = tracker  # type: ignore[assignment]  # a Tracker on every branch above
    if call_id.__class__ is UUID:  # LangChain's run ids: _uuid_str(call_id), inline
        call.call_id = "-".join(_UUID_GROUPS(call_id.int.to_bytes(16, "big").hex()))
    else:
        call.call_id = _call_id(call_id, tracker)  # type: ignore[arg-type]
    call.t0 = _perf_counter()
    call._open = [True]  # see _InFlight.__init__
    call.model = model
    call.provider = provider
    call.kind = kind
    call._prompt = prompt
    call._prompt_tokens = prompt_tokens
    call._usage = None
    call._chars = 0
    call.chunks = 0
    # Estimate the prompt and reserve only where a budget applies (the usual answer,
    # no budget and no scopes, is found without a call).
    # (tracker is a Tracker on every branch here: checked above, or captured.)
    if check_budget and (tracker.ledger.active or (stack and a.budgeted)):  # type: ignore[union-attr]
        with _G_START:
            call._reserve(call.prompt_tokens, "llm", model, provider, max_output_tokens)
    return call


def start_embedding(
    model: str,
    *,
    provider: str | None = None,
    call_id: object = None,
    texts: Sequence[str] | None = None,
    attribution: Attribution | None = None,
    tracker: Tracker | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    customer_id: str | None = None,
    tool: str | None = None,
    tags: dict[str, str] | None = None,
    check_budget: bool = True,
) -> EmbeddingCall:
    """Start metering an embedding call (arguments as :func:`start_llm`; ``texts`` are
    the inputs, to estimate their tokens when the provider does not report them)."""
    _validate.name("model", model, optional=False)
    _validate.name("provider", provider)
    _validate.flag("check_budget", check_budget)
    if texts is not None and (isinstance(texts, str) or not isinstance(texts, Sequence)):
        raise TypeError("texts must be a sequence of str")
    a = _attribution(attribution, tracker, session_id, agent_id, customer_id, tool, tags)
    call = EmbeddingCall(a, model, provider, call_id, texts)
    if check_budget:
        with guarded("start_embedding"):
            call._reserve(
                lambda: sum(estimate_tokens(t, model) for t in texts or ()),
                "embedding",
                model,
                provider,
            )
    return call


def start_tool(
    name: str,
    *,
    category: str = "",
    call_id: object = None,
    open_scope: bool = True,
    scope_name: str | None = None,
    budget: Budget | None = None,
    attribution: Attribution | None = None,
    tracker: Tracker | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    customer_id: str | None = None,
    tags: dict[str, str] | None = None,
    check_budget: bool = True,
    cost_usd: Decimal | float | None = None,
) -> ToolCall:
    """Start metering a tool call: open the tool's scope, reserve a tool call, start the clock.

    Args:
        name: The tool's name.
        category: Free-form group (``"search"``, ``"db"`` ...).
        call_id: The framework's run id (default: a fresh agentmeter id).
        open_scope: Open a scope for the tool's body in the current context (LLM
            calls inside are credited to the tool). Close it by ending the call.
        scope_name: The scope's name (default ``"tool:<name>"``).
        budget: A budget of the tool's own scope.
        attribution, tracker, session_id, agent_id, customer_id, tags: as :func:`start_llm`.
        check_budget: Reserve one tool call (and its price) against the budgets
            that apply, per-tool limits included.
        cost_usd: What one call of the tool costs (default: the price set with
            ``agentmeter.set_tool_price``). Reserved before the tool runs, recorded
            on the call.

    Raises:
        BudgetExceeded: the tool must not run (its scope is closed again, nothing booked).
    """
    _validate.name("tool", name, optional=False)
    if type(category) is not str:
        raise TypeError(f"category must be a str, got {type(category).__name__}")
    _validate.flag("open_scope", open_scope)
    _validate.flag("check_budget", check_budget)
    _validate.name("scope_name", scope_name)
    if cost_usd is not None:
        _validate.opt_cost_micros("cost_usd", cost_usd)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget must be an agentmeter.Budget, got {type(budget).__name__}")
    a = _attribution(attribution, tracker, session_id, agent_id, customer_id, None, tags)
    scope = None
    if open_scope:
        scope = Scope(
            a.tracker,
            scope_name or f"tool:{name}",
            a.session_id,
            a.agent_id,
            budget,
            None,
            name,
            category or None,
            customer_id=a.customer_id,
            tags=a.tags,
        )
        scope.enter()
        # Records of the tool call itself go through the tool's scope from now on.
        a = Attribution(
            a.tracker, STACK.get(), a.session_id, a.agent_id, a.customer_id, None, a.tags
        )
    call = ToolCall(a, name, category, call_id, scope, cost_usd)
    if check_budget:
        try:
            tracker = call.tracker
            if (scope is not None and scope.budget_refs) or tracker.budget_applies(a.session_id):
                tracker.check_budget(
                    kind="tool",
                    estimated_cost_usd=cost_usd,
                    call_id=call.call_id,
                    session_id=a.session_id,
                    customer_id=a.customer_id,
                    agent_id=a.agent_id,
                    tool=name,
                )
        except BaseException:
            call._claim()
            call._close_scope()
            raise
    return call
