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

import itertools
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .. import _validate
from .._guard import guarded
from ..budget import Budget
from ..scope import STACK, Scope
from ._context import Attribution, capture
from ._tokens import estimate_messages, estimate_tokens
from ._usage import UsageCounts

if TYPE_CHECKING:
    from ..tracker import Tracker

__all__ = [
    "EmbeddingCall",
    "LLMCall",
    "ToolCall",
    "start_embedding",
    "start_llm",
    "start_tool",
]

_LLM_KINDS = frozenset({"chat", "completion", "image", "audio", "other"})

# One guard per entry point (a guard holds only its name, so sharing one is safe).
_G_ADD_CHUNK = guarded("LLMCall.add_chunk")
_G_FINISH = guarded("LLMCall.finish")
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
        return capture(
            tracker,
            session_id=session_id,
            agent_id=agent_id,
            customer_id=customer_id,
            tool=tool,
            tags=tags,
        )
    if not isinstance(attribution, Attribution):
        raise TypeError(f"attribution must be an Attribution, got {type(attribution).__name__}")
    return attribution


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


class _InFlight:
    """What every call in flight shares: attribution, id, clock, the once-only end."""

    __slots__ = ("_ended", "_once", "attribution", "call_id", "t0", "tracker")

    def __init__(self, attribution: Attribution, call_id: object) -> None:
        self.attribution = attribution
        self.tracker = attribution.tracker
        cls = call_id.__class__
        if cls is UUID:  # LangChain's run ids
            self.call_id: str = str(call_id)
        elif cls is str and call_id and call_id.isascii():  # type: ignore[attr-defined]
            self.call_id = call_id  # type: ignore[assignment]
        else:
            cid = _validate.call_id(call_id)
            self.call_id = str(cid) if cid is not None else self.tracker.new_call_id()
        self.t0 = time.perf_counter()
        # next() on a count is atomic: exactly one of finish/fail/abandon/cancel wins.
        self._once = itertools.count()
        self._ended = False

    @property
    def done(self) -> bool:
        """True once the call was finished, failed, abandoned or cancelled."""
        return self._ended

    def _claim(self) -> bool:
        if next(self._once) == 0:
            self._ended = True
            return True
        return False

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return (time.perf_counter() - self.t0) * 1000.0

    def _reserve(
        self, estimate: Callable[[], int], kind: str, model: str | None, provider: str | None
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
                call_id=self.call_id,
                session_id=a.session_id,
            )

    def _release(self) -> None:
        self.tracker.release(self.call_id)


class LLMCall(_InFlight):
    """An LLM call in flight (see the module docstring for the lifecycle).

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

    def __init__(
        self,
        attribution: Attribution,
        model: str,
        provider: str | None,
        kind: str,
        call_id: object,
        prompt: Any,
        prompt_tokens: int | None,
    ) -> None:
        super().__init__(attribution, call_id)
        self.model = model
        self.provider = provider
        self.kind = kind
        self._prompt = prompt
        self._prompt_tokens = prompt_tokens
        self._usage: UsageCounts | None = None
        self._chars = 0
        self.chunks = 0

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
        *,
        ok: bool,
        error: str | None,
        model: str | None,
        provider: str | None,
        cost_usd: Decimal | float | None,
        metadata: dict[str, Any] | None,
        tokens: bool = True,
    ) -> None:
        a = self.attribution
        if tokens:
            inp, out, cr, cw, rs, estimated = self._counts(usage, output_text)
        else:
            inp = out = cr = cw = rs = 0
            estimated = False
        if cost_usd is None and usage is not None:
            cost_usd = usage.cost_usd
        elif cost_usd is None and self._usage is not None:
            cost_usd = self._usage.cost_usd
        with _attached(a):
            self.tracker.record_llm(
                model or self.model,
                inp,
                out,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                reasoning_tokens=rs,
                provider=provider or self.provider,
                latency_ms=self.elapsed_ms(),
                cost_usd=cost_usd,
                call_id=self.call_id,
                kind=self.kind,
                estimated=estimated,
                session_id=a.session_id,
                agent_id=a.agent_id,
                metadata=metadata,
                tool=a.tool,
                ok=ok,
                error=error,
                customer_id=a.customer_id,
                tags=a.tags,
            )

    def finish(
        self,
        usage: UsageCounts | None = None,
        *,
        output_text: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        cost_usd: Decimal | float | None = None,
        metadata: dict[str, Any] | None = None,
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

        Returns:
            True if this settled the call, False if it had already ended.
        """
        if not self._claim():
            return False
        with _G_FINISH:
            self._record(
                usage,
                output_text,
                ok=True,
                error=None,
                model=model,
                provider=provider,
                cost_usd=cost_usd,
                metadata=metadata,
            )
        return True

    def fail(
        self,
        error: BaseException | str,
        *,
        usage: UsageCounts | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Record a failed call (no tokens unless ``usage`` says some were billed)."""
        if not self._claim():
            return False
        with _G_FAIL:
            err = error if isinstance(error, str) else type(error).__name__
            self._record(
                usage,
                None,
                ok=False,
                error=err,
                model=None,
                provider=None,
                cost_usd=None,
                metadata=metadata,
                tokens=usage is not None,
            )
        return True

    def abandon(
        self,
        note: str = "stream abandoned before its end",
        *,
        usage: UsageCounts | None = None,
        ok: bool = True,
    ) -> bool:
        """Record a stream that ended early with what it received (flagged partial).

        ``ok=True`` (the default) because a consumer that stops reading is not a
        failure of the call; pass ``ok=False`` for a stream that broke.
        """
        if not self._claim():
            return False
        with _G_ABANDON:
            self._record(
                usage,
                None,
                ok=ok,
                error=note,
                model=None,
                provider=None,
                cost_usd=None,
                metadata={"stream": "abandoned" if ok else "failed", "partial": True},
            )
        return True

    def cancel(self) -> bool:
        """The call was not made after all: give the reservation back, record nothing."""
        if not self._claim():
            return False
        with _G_CANCEL:
            self._release()
        return True


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
    ) -> bool:
        """Record the call: the reported count, else one estimated from the texts."""
        if not self._claim():
            return False
        with guarded("EmbeddingCall.finish"):
            estimated = False
            if input_tokens is None and usage is not None and usage.reported_input:
                input_tokens = usage.input_tokens
                if cost_usd is None:
                    cost_usd = usage.cost_usd
            if input_tokens is None:
                estimated = True
                try:
                    input_tokens = sum(estimate_tokens(t, self.model) for t in self._texts or ())
                except Exception:  # unusable texts: record the call anyway, it was made
                    input_tokens = 0
            self._record(input_tokens, estimated, True, None, cost_usd)
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

    __slots__ = ("category", "name", "scope")

    def __init__(
        self,
        attribution: Attribution,
        name: str,
        category: str,
        call_id: object,
        scope: Scope | None,
    ) -> None:
        super().__init__(attribution, call_id)
        self.name = name
        self.category = category
        self.scope = scope

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
def start_llm(
    model: str,
    *,
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

    Raises:
        BudgetExceeded: the call would overspend a budget (nothing was booked).
        TypeError, ValueError: on bad arguments.
    """
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
    a = _attribution(attribution, tracker, session_id, agent_id, customer_id, tool, tags)
    call = LLMCall(a, model, provider, kind, call_id, prompt, prompt_tokens)
    if check_budget:
        with _G_START:
            call._reserve(call.prompt_tokens, "llm", model, provider)
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
        check_budget: Reserve one tool call against the budgets that apply.

    Raises:
        BudgetExceeded: the tool must not run (its scope is closed again, nothing booked).
    """
    _validate.name("tool", name, optional=False)
    if type(category) is not str:
        raise TypeError(f"category must be a str, got {type(category).__name__}")
    _validate.flag("open_scope", open_scope)
    _validate.flag("check_budget", check_budget)
    _validate.name("scope_name", scope_name)
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
    call = ToolCall(a, name, category, call_id, scope)
    if check_budget:
        try:
            tracker = call.tracker
            if (scope is not None and scope.budget_refs) or tracker.budget_applies(a.session_id):
                tracker.check_budget(kind="tool", call_id=call.call_id, session_id=a.session_id)
        except BaseException:
            call._claim()
            call._close_scope()
            raise
    return call
