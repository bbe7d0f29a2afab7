"""One usage normaliser: every provider's token report, in agentmeter's conventions.

A provider (or the framework in front of it) reports what a call used in a shape
of its own. :func:`normalise_usage` recognises the shape and turns it into
:class:`UsageCounts`, in the conventions of the README:

- ``input_tokens`` is the whole prompt, cached tokens included:
  ``cache_read_tokens`` and ``cache_write_tokens`` are parts of it;
- ``output_tokens`` is the whole completion: ``reasoning_tokens`` is part of it;
- ``audio_input_tokens`` / ``audio_output_tokens`` are informational parts of
  input / output (they may overlap the cache parts);
- ``cost_usd`` is a charge the provider reported itself (OpenRouter's ``cost``).

One reader per shape does the work; each returns ``None`` when the object reports
nothing it knows, else a :class:`UsageCounts`:

=============================  ==============================================
reader                         shape
=============================  ==============================================
:func:`from_openai_chat`       ``prompt_tokens``, ``completion_tokens``,
                               ``prompt_tokens_details.cached_tokens`` /
                               ``cache_write_tokens`` / ``audio_tokens``,
                               ``completion_tokens_details.reasoning_tokens``
                               / ``audio_tokens``, ``cost`` (OpenRouter);
                               DeepSeek's ``prompt_cache_hit_tokens`` when
                               there are no details. Also the final usage
                               chunk of a stream.
:func:`from_openai_responses`  ``input_tokens``, ``output_tokens``,
                               ``input_tokens_details.cached_tokens`` /
                               ``cache_write_tokens``,
                               ``output_tokens_details.reasoning_tokens``.
:func:`from_anthropic`         raw ``input_tokens`` EXCLUDES the cache, so
                               input = ``input_tokens`` +
                               ``cache_read_input_tokens`` + cache writes;
                               cache writes = ``cache_creation_input_tokens``,
                               or the TTL breakdown
                               ``cache_creation.ephemeral_5m_input_tokens`` +
                               ``ephemeral_1h_input_tokens`` (the larger of the
                               two: they should be equal, see below); thinking
                               is inside ``output_tokens``
                               (``output_tokens_details.thinking_tokens`` is
                               read as the reasoning part). Stream events carry
                               it too: ``message_start`` under
                               ``message.usage``, ``message_delta`` under
                               ``usage`` (cumulative: merge with
                               :func:`merge_cumulative`).
:func:`from_gemini`            ``prompt_token_count`` (cache included) +
                               ``tool_use_prompt_token_count``;
                               ``candidates_token_count`` EXCLUDES thoughts, so
                               output = candidates + ``thoughts_token_count``;
                               ``cached_content_token_count``; AUDIO entries
                               of ``prompt_tokens_details`` /
                               ``candidates_tokens_details``. snake_case (the
                               SDK) and camelCase (REST: ``promptTokenCount``
                               ...) alike. REST omits zero counts: with a
                               prompt count present, a missing candidates count
                               is taken from ``total_token_count`` (else 0).
:func:`from_bedrock`           Converse ``inputTokens`` EXCLUDES the cache
                               (AWS's prompt-caching semantics: ``totalTokens``
                               is their sum), so input = ``inputTokens`` +
                               ``cacheReadInputTokens`` +
                               ``cacheWriteInputTokens``; ``cacheDetails`` (the
                               TTL breakdown) like Anthropic's.
:func:`from_langchain`         LangChain ``UsageMetadata``: ``input_tokens``
                               (cache included), ``output_tokens``,
                               ``input_token_details.cache_read`` /
                               ``cache_creation`` and the TTL keys
                               ``ephemeral_5m_input_tokens`` /
                               ``ephemeral_1h_input_tokens`` that
                               langchain-anthropic puts there with
                               ``cache_creation`` = 0;
                               ``output_token_details.reasoning``; ``audio``.
:func:`from_langchain_llm_output`  ``LLMResult.llm_output["token_usage"]`` or
                               ``["usage"]``, in any of the shapes above.
:func:`from_llamaindex`        ``response.raw`` (an SDK object or a dict in any
                               of the shapes above, Anthropic's stream events
                               and Gemini's ``usage_metadata`` included), then
                               ``response.additional_kwargs``
                               (``prompt_tokens`` / ``completion_tokens``).
=============================  ==============================================

:func:`normalise_usage` finds the shape by its keys (dicts, TypedDicts, pydantic
models, SDK objects and plain attribute objects alike), looking inside the usual
wrappers (``usage``, ``usage_metadata``, ``message``, ``llm_output``, ``raw``,
``response_metadata`` ...), or takes a ``source=`` to skip the detection.

Rules, the same for every shape:

1. **Values.** A count is a non-negative integer: an ``int``, an integral
   ``float`` / ``Decimal``, or a string of decimal digits (some gateways send
   ``"12"``), at most ``2**53 - 1``. ``None`` or an absent key is *not reported*.
   Anything else -- negative, NaN, infinite, a fraction, ``True``/``False``, a
   non-numeric string, a list where a number belongs, a container that is not
   one, an object whose attribute access raises -- is *malformed*: it is
   ignored, and its dotted name goes into ``UsageCounts.malformed``. Nothing
   here ever raises on data.
2. **Wholes.** ``reported_input`` / ``reported_output`` say whether a valid
   count of the whole input / output was found. When one is ``False`` the
   corresponding total is only what its parts prove (a lower bound, often 0):
   the caller must estimate that side, take the larger of the estimate and this
   bound, and flag the call estimated. A reader that recognised its shape but
   found nothing valid returns counts with both flags ``False`` (and the
   ``malformed`` names), never ``None``: the call is still recorded.
3. **Parts larger than their whole.** Where a provider *documents* that its
   whole excludes a part (Anthropic's and Bedrock's input and the cache,
   Gemini's candidates and thoughts), its reader adds the part: that is the
   shape's definition, not a repair. Where the whole is documented to include
   the part (OpenAI, LangChain, LlamaIndex's keys) and the report still says
   part > whole, the whole becomes ``max(whole, parts)`` -- not ``whole + part``.
   The report contradicts itself and either number may be the wrong one; the
   maximum is the smallest count consistent with both, never counts a token
   twice, and errs by at most the reported whole (adding errs by as much the
   other way). The same rule settles a TTL breakdown that disagrees with its
   total (Anthropic documents that they are equal, and its own example shows
   248 vs 456 + 100): the larger is the cache write. One rule, for every
   integration (before this module, LangChain added and LlamaIndex took the
   max; the tests of both hold).
4. **Streams.** ``a + b`` sums two reports of *deltas* (LangChain's chunks, an
   OpenAI stream's single usage chunk): counts and costs add, the ``reported_*``
   flags OR, ``malformed`` names are concatenated (without repeats). Reports that
   are *cumulative* (Anthropic's and Gemini's stream events, as LlamaIndex hands
   them on) merge with :func:`merge_cumulative` instead: the larger of each
   count.

No provider or framework package is imported: objects are read by attribute or
key, whatever their class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from numbers import Integral
from typing import Any, Final, NamedTuple

__all__ = [
    "MAX_COUNT",
    "UsageCounts",
    "from_anthropic",
    "from_bedrock",
    "from_gemini",
    "from_langchain",
    "from_langchain_llm_output",
    "from_llamaindex",
    "from_openai_chat",
    "from_openai_responses",
    "merge_cumulative",
    "normalise_usage",
    "reported_cost",
]

MAX_COUNT: Final = 2**53 - 1
"""The largest count accepted (what a JSON number carries exactly)."""

_COUNT_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
)


class _Fields(NamedTuple):
    # The fields of UsageCounts (documented there). A tuple: built in C, ~8x faster
    # than a frozen dataclass, whose __init__ sets every field through
    # object.__setattr__ -- and one is built for every call and stream chunk.
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    cost_usd: Decimal | None = None
    malformed: tuple[str, ...] = ()
    reported_input: bool = True
    reported_output: bool = True


_FIELD_DOCS: Final = {
    "input_tokens": "The whole prompt, cached tokens included. A lower bound when "
    "``reported_input`` is False.",
    "output_tokens": "The whole completion, reasoning included. A lower bound when "
    "``reported_output`` is False.",
    "cache_read_tokens": "Part of ``input_tokens`` served from the provider's prompt cache.",
    "cache_write_tokens": "Part of ``input_tokens`` written to the prompt cache "
    "(billed at a premium).",
    "reasoning_tokens": "Part of ``output_tokens`` spent on reasoning / thinking.",
    "audio_input_tokens": "Informational: audio part of ``input_tokens`` "
    "(may overlap the cache parts).",
    "audio_output_tokens": "Informational: audio part of ``output_tokens``.",
    "cost_usd": "A charge in USD the provider reported itself (e.g. OpenRouter's ``cost``).",
    "malformed": "Names of the fields whose values were unusable and were ignored.",
    "reported_input": "Whether a valid count of the whole input was found (False: estimate it).",
    "reported_output": "Whether a valid count of the whole output was found (False: estimate it).",
}
for _name, _doc in _FIELD_DOCS.items():
    getattr(_Fields, _name).__doc__ = _doc

_new_tuple = tuple.__new__


class UsageCounts(_Fields):
    """What one call (or one stream chunk) used, in agentmeter's conventions.

    Build one with :func:`normalise_usage` (or a ``from_*`` reader); the
    constructor checks its arguments (``TypeError`` / ``ValueError`` naming the
    field) and that every part fits in its whole. Immutable and hashable (a named
    tuple: ``counts._replace(...)`` makes a changed copy, unchecked).

    Attributes:
        input_tokens: The whole prompt, cached tokens included. A lower bound when
            ``reported_input`` is False.
        output_tokens: The whole completion, reasoning included. A lower bound when
            ``reported_output`` is False.
        cache_read_tokens: Part of ``input_tokens`` served from the prompt cache.
        cache_write_tokens: Part of ``input_tokens`` written to the prompt cache.
        reasoning_tokens: Part of ``output_tokens`` spent on reasoning / thinking.
        audio_input_tokens: Informational: audio part of ``input_tokens``.
        audio_output_tokens: Informational: audio part of ``output_tokens``.
        cost_usd: A charge in USD the provider reported itself (OpenRouter's ``cost``).
        malformed: Names of the fields whose values were unusable and were ignored.
        reported_input: Whether a valid count of the whole input was found.
        reported_output: Whether a valid count of the whole output was found.
    """

    __slots__ = ()

    def __new__(
        cls,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        audio_input_tokens: int = 0,
        audio_output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        malformed: tuple[str, ...] = (),
        reported_input: bool = True,
        reported_output: bool = True,
    ) -> UsageCounts:
        self: UsageCounts = _new_tuple(
            cls,
            (
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                reasoning_tokens,
                audio_input_tokens,
                audio_output_tokens,
                cost_usd,
                malformed,
                reported_input,
                reported_output,
            ),
        )
        self._check()
        return self

    def _check(self) -> None:
        i, o = self.input_tokens, self.output_tokens
        cr, cw, rs = self.cache_read_tokens, self.cache_write_tokens, self.reasoning_tokens
        if (  # the common case in one expression; anything else gets the full checks
            i.__class__ is int
            and o.__class__ is int
            and cr.__class__ is int
            and cw.__class__ is int
            and rs.__class__ is int
            and self.audio_input_tokens.__class__ is int
            and self.audio_output_tokens.__class__ is int
            and cr >= 0
            and cw >= 0
            and cr + cw <= i
            and 0 <= rs <= o
            and 0 <= self.audio_input_tokens <= i
            and 0 <= self.audio_output_tokens <= o
            and self.cost_usd is None
            and self.malformed == ()
            and self.reported_input.__class__ is bool
            and self.reported_output.__class__ is bool
        ):
            return
        for name in _COUNT_FIELDS:
            value = getattr(self, name)
            if value.__class__ is not int and (
                isinstance(value, bool) or not isinstance(value, int)
            ):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cache_read_tokens + cache_write_tokens must not exceed input_tokens "
                f"({self.cache_read_tokens} + {self.cache_write_tokens} > {self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens must not exceed output_tokens "
                f"({self.reasoning_tokens} > {self.output_tokens})"
            )
        if self.audio_input_tokens > self.input_tokens:
            raise ValueError("audio_input_tokens must not exceed input_tokens")
        if self.audio_output_tokens > self.output_tokens:
            raise ValueError("audio_output_tokens must not exceed output_tokens")
        cost = self.cost_usd
        if cost is not None:
            if not isinstance(cost, Decimal):
                raise TypeError(f"cost_usd must be a Decimal or None, got {type(cost).__name__}")
            if not cost.is_finite() or cost < 0:
                raise ValueError(f"cost_usd must be a finite amount >= 0, got {cost}")
        if not isinstance(self.malformed, tuple) or not all(
            isinstance(m, str) for m in self.malformed
        ):
            raise TypeError("malformed must be a tuple of str")
        if not isinstance(self.reported_input, bool):
            raise TypeError("reported_input must be a bool")
        if not isinstance(self.reported_output, bool):
            raise TypeError("reported_output must be a bool")

    @property
    def total_tokens(self) -> int:
        """``input_tokens + output_tokens``."""
        return self.input_tokens + self.output_tokens

    @property
    def fully_reported(self) -> bool:
        """Both wholes were reported: nothing needs estimating."""
        return self.reported_input and self.reported_output

    def __add__(self, other: object) -> UsageCounts:
        """Sum two reports of deltas (stream chunks): see the module's rule 4."""
        if not isinstance(other, UsageCounts):
            return NotImplemented
        a, b = self.cost_usd, other.cost_usd
        cost = a if b is None else b if a is None else a + b
        return _unchecked(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.audio_input_tokens + other.audio_input_tokens,
            self.audio_output_tokens + other.audio_output_tokens,
            cost,
            _union(self.malformed, other.malformed),
            self.reported_input or other.reported_input,
            self.reported_output or other.reported_output,
        )

    def __radd__(self, other: object) -> UsageCounts:
        """``0 + counts`` is ``counts``, so that ``sum(chunks)`` works."""
        if other == 0 and not isinstance(other, bool):
            return self
        return NotImplemented


def _unchecked(
    inp: int,
    out: int,
    cr: int,
    cw: int,
    rs: int,
    ai: int,
    ao: int,
    cost: Decimal | None,
    bad: tuple[str, ...],
    reported_input: bool,
    reported_output: bool,
) -> UsageCounts:
    """``UsageCounts(...)`` without the checks: only for values that already pass them
    (ints >= 0 within ``MAX_COUNT``, parts within wholes, a finite cost >= 0 or None)."""
    u: UsageCounts = _new_tuple(
        UsageCounts, (inp, out, cr, cw, rs, ai, ao, cost, bad, reported_input, reported_output)
    )
    return u


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if not b:
        return a
    if not a:
        return b
    return a + tuple(name for name in b if name not in a)


def merge_cumulative(a: UsageCounts | None, b: UsageCounts | None) -> UsageCounts | None:
    """Merge two reports of one call that are *cumulative* (the larger of each count).

    Anthropic's ``message_start`` / ``message_delta`` and Gemini's stream chunks
    each report the call so far. The flags OR, the later cost wins, ``malformed``
    names are united; parts are kept within their wholes (rule 3).
    """
    if a is None:
        return b
    if b is None:
        return a
    cr = max(a.cache_read_tokens, b.cache_read_tokens)
    cw = max(a.cache_write_tokens, b.cache_write_tokens)
    rs = max(a.reasoning_tokens, b.reasoning_tokens)
    ai = max(a.audio_input_tokens, b.audio_input_tokens)
    ao = max(a.audio_output_tokens, b.audio_output_tokens)
    return _unchecked(
        max(a.input_tokens, b.input_tokens, cr + cw, ai),
        max(a.output_tokens, b.output_tokens, rs, ao),
        cr,
        cw,
        rs,
        ai,
        ao,
        b.cost_usd if b.cost_usd is not None else a.cost_usd,
        _union(a.malformed, b.malformed),
        a.reported_input or b.reported_input,
        a.reported_output or b.reported_output,
    )


# --------------------------------------------------------------------- reading values
_MODEL_TYPES: dict[type, bool] = {}
_SCALARS: Final = (str, bytes, bytearray, int, float, complex, Decimal, list, tuple, set, frozenset)


def _is_model(cls: type) -> bool:
    """A pydantic model class: its fields live in the instance ``__dict__``."""
    hit = _MODEL_TYPES.get(cls)
    if hit is None:
        hit = hasattr(cls, "__pydantic_fields__") and hasattr(cls, "model_fields")
        if len(_MODEL_TYPES) > 1024:
            _MODEL_TYPES.clear()
        _MODEL_TYPES[cls] = hit
    return hit


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` or ``obj.key``; ``None`` when absent. May raise for broken objects."""
    if obj.__class__ is dict or isinstance(obj, Mapping):
        return obj.get(key)
    if isinstance(obj, UsageCounts):  # a tuple, read by field name
        return getattr(obj, key, None)
    if obj is None or isinstance(obj, _SCALARS):
        return None
    try:
        d = obj.__dict__
    except AttributeError:
        d = None
    if d.__class__ is dict:
        if key in d:
            return d[key]
        extra = getattr(obj, "__pydantic_extra__", None)
        if extra.__class__ is dict and key in extra:
            return extra[key]
        if _is_model(obj.__class__):
            return None  # pydantic: not a field, not an extra (skip the slow __getattr__)
    return getattr(obj, key, None)


def _get(obj: Any, key: str, name: str, bad: list[str]) -> Any:
    try:
        return _field(obj, key)
    except Exception:
        bad.append(name)
        return None


def _peek(obj: Any, key: str) -> Any:
    try:
        return _field(obj, key)
    except Exception:
        return None


def _container(obj: Any, key: str, name: str, bad: list[str]) -> Any:
    """A nested details block, or ``None``; a value that cannot be one is malformed."""
    value = _get(obj, key, name, bad)
    if value is None or value.__class__ is dict:
        return value
    if isinstance(value, _SCALARS):  # bool is an int
        bad.append(name)
        return None
    return value


def _as_count(value: Any) -> int | None:
    cls = value.__class__
    if cls is int:
        n: int = value
    elif cls is bool:
        return None
    elif cls is float or cls is Decimal:
        if not (math.isfinite(value) if cls is float else value.is_finite()):
            return None
        if abs(value) > MAX_COUNT:
            return None
        if value != int(value):
            return None
        n = int(value)
    elif cls is str:
        s = value.strip()
        if not s or len(s) > 16 or not s.isascii() or not s.isdigit():
            return None
        n = int(s)
    elif isinstance(value, Integral) and not isinstance(value, bool):
        n = int(value)
    else:
        return None
    return n if 0 <= n <= MAX_COUNT else None


def _count(value: Any, name: str, bad: list[str]) -> int | None:
    if value is None:
        return None
    try:
        n = _as_count(value)
    except Exception:
        n = None
    if n is None:
        bad.append(name)
    return n


def _read(obj: Any, key: str, name: str, bad: list[str]) -> int | None:
    return _count(_get(obj, key, name, bad), name, bad)


def _read_any(obj: Any, keys: tuple[str, ...], bad: list[str], prefix: str = "") -> int | None:
    """The first of several spellings of one count (snake_case, camelCase)."""
    for key in keys:
        value = _get(obj, key, prefix + key, bad)
        if value is not None:
            return _count(value, prefix + key, bad)
    return None


def _as_cost(value: Any) -> Decimal | None:
    cls = value.__class__
    if cls is bool:
        return None
    if cls is Decimal:
        d: Decimal = value
    elif cls is int or cls is float:
        d = Decimal(str(value))
    elif cls is str:
        if len(value) > 64:
            return None
        d = Decimal(value.strip())
    else:
        return None
    return d if d.is_finite() and d >= 0 else None


def _cost(obj: Any, bad: list[str], name: str = "cost") -> Decimal | None:
    value = _get(obj, "cost", name, bad)
    if value is None:
        return None
    try:
        d = _as_cost(value)
    except Exception:
        d = None
    if d is None:
        bad.append(name)
    return d


def reported_cost(usage: Any) -> Decimal | None:
    """A charge in USD that a usage block reports itself (OpenRouter's ``cost``), if valid."""
    try:
        return _cost(usage, [])
    except Exception:
        return None


def _sum(*values: int | None) -> int | None:
    """Sum of the reported values; ``None`` when none was reported."""
    total: int | None = None
    for v in values:
        if v is not None:
            total = v if total is None else total + v
    return total


def _build(
    inp: int | None,
    out: int | None,
    cr: int | None,
    cw: int | None,
    rs: int | None,
    ai: int | None,
    ao: int | None,
    cost: Decimal | None,
    bad: list[str],
) -> UsageCounts | None:
    """Counts from what a reader found (rules 2 and 3), or ``None`` if it found nothing."""
    if (
        inp is None
        and out is None
        and cr is None
        and cw is None
        and rs is None
        and ai is None
        and ao is None
        and cost is None
        and not bad
    ):
        return None
    cr_, cw_, rs_, ai_, ao_ = cr or 0, cw or 0, rs or 0, ai or 0, ao or 0
    return _unchecked(
        max(inp or 0, cr_ + cw_, ai_),
        max(out or 0, rs_, ao_),
        cr_,
        cw_,
        rs_,
        ai_,
        ao_,
        cost,
        tuple(dict.fromkeys(bad)),
        inp is not None,
        out is not None,
    )


def _broken(name: str) -> UsageCounts:
    """What a reader returns when the object itself could not be read at all."""
    return UsageCounts(0, 0, malformed=(name,), reported_input=False, reported_output=False)


def _never_raises(
    reader: Callable[[Any], UsageCounts | None],
) -> Callable[[Any], UsageCounts | None]:
    def guarded(obj: Any) -> UsageCounts | None:
        try:
            return reader(obj)
        except Exception:
            return _broken(reader.__name__.removeprefix("_"))

    guarded.__name__ = reader.__name__.removeprefix("_")
    guarded.__qualname__ = guarded.__name__
    guarded.__doc__ = reader.__doc__
    return guarded


# ------------------------------------------------------------------------- the readers
def _from_openai_chat(usage: Any) -> UsageCounts | None:
    """OpenAI Chat Completions ``usage`` (also a stream's final usage chunk)."""
    if usage is None:
        return None
    bad: list[str] = []
    inp = _read(usage, "prompt_tokens", "prompt_tokens", bad)
    out = _read(usage, "completion_tokens", "completion_tokens", bad)
    p = "prompt_tokens_details"
    ptd = _container(usage, p, p, bad)
    cr = cw = ai = None
    if ptd is not None:
        cr = _read(ptd, "cached_tokens", p + ".cached_tokens", bad)
        cw = _read(ptd, "cache_write_tokens", p + ".cache_write_tokens", bad)
        ai = _read(ptd, "audio_tokens", p + ".audio_tokens", bad)
    if cr is None:  # DeepSeek reports its cache hits at the top level
        cr = _read(usage, "prompt_cache_hit_tokens", "prompt_cache_hit_tokens", bad)
    c = "completion_tokens_details"
    ctd = _container(usage, c, c, bad)
    rs = ao = None
    if ctd is not None:
        rs = _read(ctd, "reasoning_tokens", c + ".reasoning_tokens", bad)
        ao = _read(ctd, "audio_tokens", c + ".audio_tokens", bad)
    return _build(inp, out, cr, cw, rs, ai, ao, _cost(usage, bad), bad)


def _from_openai_responses(usage: Any) -> UsageCounts | None:
    """OpenAI Responses API ``usage``."""
    if usage is None:
        return None
    bad: list[str] = []
    inp = _read(usage, "input_tokens", "input_tokens", bad)
    out = _read(usage, "output_tokens", "output_tokens", bad)
    p = "input_tokens_details"
    itd = _container(usage, p, p, bad)
    cr = cw = ai = None
    if itd is not None:
        cr = _read(itd, "cached_tokens", p + ".cached_tokens", bad)
        cw = _read(itd, "cache_write_tokens", p + ".cache_write_tokens", bad)
        ai = _read(itd, "audio_tokens", p + ".audio_tokens", bad)
    o = "output_tokens_details"
    otd = _container(usage, o, o, bad)
    rs = ao = None
    if otd is not None:
        rs = _read(otd, "reasoning_tokens", o + ".reasoning_tokens", bad)
        ao = _read(otd, "audio_tokens", o + ".audio_tokens", bad)
    return _build(inp, out, cr, cw, rs, ai, ao, _cost(usage, bad), bad)


def _ttl_writes(block: Any, name: str, bad: list[str]) -> int | None:
    """Sum of an Anthropic-style TTL breakdown (``ephemeral_5m/1h_input_tokens``)."""
    five = _read(block, "ephemeral_5m_input_tokens", name + ".ephemeral_5m_input_tokens", bad)
    hour = _read(block, "ephemeral_1h_input_tokens", name + ".ephemeral_1h_input_tokens", bad)
    return _sum(five, hour)


def _larger(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _from_anthropic(usage: Any) -> UsageCounts | None:
    """Anthropic Messages ``usage`` (raw ``input_tokens`` excludes the cache)."""
    if usage is None:
        return None
    bad: list[str] = []
    raw_in = _read(usage, "input_tokens", "input_tokens", bad)
    out = _read(usage, "output_tokens", "output_tokens", bad)
    cr = _read(usage, "cache_read_input_tokens", "cache_read_input_tokens", bad)
    cw = _read(usage, "cache_creation_input_tokens", "cache_creation_input_tokens", bad)
    breakdown = _container(usage, "cache_creation", "cache_creation", bad)
    if breakdown is not None:
        cw = _larger(cw, _ttl_writes(breakdown, "cache_creation", bad))
    o = "output_tokens_details"
    otd = _container(usage, o, o, bad)
    rs = None
    if otd is not None:
        rs = _read(otd, "thinking_tokens", o + ".thinking_tokens", bad)
    inp = None if raw_in is None else raw_in + (cr or 0) + (cw or 0)
    return _build(inp, out, cr, cw, rs, None, None, _cost(usage, bad), bad)


_G_PROMPT: Final = ("prompt_token_count", "promptTokenCount")
_G_CANDIDATES: Final = ("candidates_token_count", "candidatesTokenCount")
_G_CACHED: Final = ("cached_content_token_count", "cachedContentTokenCount")
_G_THOUGHTS: Final = ("thoughts_token_count", "thoughtsTokenCount")
_G_TOOL: Final = ("tool_use_prompt_token_count", "toolUsePromptTokenCount")
_G_TOTAL: Final = ("total_token_count", "totalTokenCount")
_G_KEYS: Final = _G_PROMPT + _G_CANDIDATES + _G_CACHED + _G_THOUGHTS + _G_TOTAL
_MAX_DETAILS: Final = 64


def _gemini_audio(meta: Any, keys: tuple[str, ...], bad: list[str]) -> int | None:
    """Tokens of the AUDIO modality in a Gemini ``*_tokens_details`` list."""
    for key in keys:
        details = _get(meta, key, key, bad)
        if details is None:
            continue
        if not isinstance(details, list | tuple):
            bad.append(key)
            return None
        total: int | None = None
        for i, entry in enumerate(details[:_MAX_DETAILS]):
            modality = _get(entry, "modality", f"{key}[{i}].modality", bad)
            modality = getattr(modality, "value", modality)  # the SDK's enum
            if not isinstance(modality, str) or modality.upper() != "AUDIO":
                continue
            n = _read_any(entry, ("token_count", "tokenCount"), bad, f"{key}[{i}].")
            total = _sum(total, n)
        return total
    return None


def _from_gemini(meta: Any) -> UsageCounts | None:
    """Gemini ``usage_metadata`` / ``usageMetadata`` (candidates exclude thoughts)."""
    if meta is None:
        return None
    bad: list[str] = []
    prompt = _read_any(meta, _G_PROMPT, bad)
    candidates = _read_any(meta, _G_CANDIDATES, bad)
    cached = _read_any(meta, _G_CACHED, bad)
    thoughts = _read_any(meta, _G_THOUGHTS, bad)
    tool = _read_any(meta, _G_TOOL, bad)
    if candidates is None and prompt is not None:
        # REST (proto3 JSON) omits zero counts; the total says what is missing.
        total = _read_any(meta, _G_TOTAL, bad)
        rest = None if total is None else total - prompt - (tool or 0) - (thoughts or 0)
        candidates = rest if rest is not None and rest >= 0 else 0
    inp = None if prompt is None else prompt + (tool or 0)
    out = None if candidates is None else candidates + (thoughts or 0)
    ai = _gemini_audio(meta, ("prompt_tokens_details", "promptTokensDetails"), bad)
    ao = _gemini_audio(meta, ("candidates_tokens_details", "candidatesTokensDetails"), bad)
    return _build(inp, out, cached, None, thoughts, ai, ao, None, bad)


def _from_bedrock(usage: Any) -> UsageCounts | None:
    """Bedrock Converse ``usage`` (``inputTokens`` excludes the cache)."""
    if usage is None:
        return None
    bad: list[str] = []
    raw_in = _read(usage, "inputTokens", "inputTokens", bad)
    out = _read(usage, "outputTokens", "outputTokens", bad)
    cr = _read(usage, "cacheReadInputTokens", "cacheReadInputTokens", bad)
    cw = _read(usage, "cacheWriteInputTokens", "cacheWriteInputTokens", bad)
    details = _get(usage, "cacheDetails", "cacheDetails", bad)
    if details is not None:
        if isinstance(details, list | tuple):
            ttl: int | None = None
            for i, entry in enumerate(details[:_MAX_DETAILS]):
                ttl = _sum(ttl, _read(entry, "inputTokens", f"cacheDetails[{i}].inputTokens", bad))
            cw = _larger(cw, ttl)
        else:
            bad.append("cacheDetails")
    inp = None if raw_in is None else raw_in + (cr or 0) + (cw or 0)
    return _build(inp, out, cr, cw, None, None, None, None, bad)


def _from_langchain(usage_metadata: Any) -> UsageCounts | None:
    """LangChain ``UsageMetadata`` (``AIMessage.usage_metadata``), TTL keys included."""
    um = usage_metadata
    if um is None:
        return None
    bad: list[str] = []
    inp = _read(um, "input_tokens", "input_tokens", bad)
    out = _read(um, "output_tokens", "output_tokens", bad)
    p = "input_token_details"
    itd = _container(um, p, p, bad)
    cr = cw = ai = None
    if itd is not None:
        cr = _read_any(itd, ("cache_read", "cached_tokens"), bad, p + ".")
        cw = _read(itd, "cache_creation", p + ".cache_creation", bad)
        # langchain-anthropic: the TTL breakdown, with cache_creation set to 0.
        cw = _larger(cw, _ttl_writes(itd, p, bad))
        ai = _read_any(itd, ("audio", "audio_tokens"), bad, p + ".")
    o = "output_token_details"
    otd = _container(um, o, o, bad)
    rs = ao = None
    if otd is not None:
        rs = _read_any(otd, ("reasoning", "reasoning_tokens"), bad, o + ".")
        ao = _read_any(otd, ("audio", "audio_tokens"), bad, o + ".")
    return _build(inp, out, cr, cw, rs, ai, ao, _cost(um, bad), bad)


def _from_langchain_llm_output(llm_output: Any, depth: int = 0) -> UsageCounts | None:
    """``LLMResult.llm_output``: its ``token_usage`` or ``usage`` block, any shape."""
    if llm_output is None:
        return None
    bad: list[str] = []
    for key in ("token_usage", "usage"):
        block = _get(llm_output, key, key, bad)
        if block is None:
            continue
        counts = _detect(block, depth + 1)
        if counts is not None:
            return _with_bad(counts, bad)
        if isinstance(block, _SCALARS):
            bad.append(key)
    return _build(None, None, None, None, None, None, None, None, bad)


def _from_llamaindex(response: Any, depth: int = 0) -> UsageCounts | None:
    """A LlamaIndex ``ChatResponse`` / ``CompletionResponse``: ``raw``, else its kwargs."""
    if response is None:
        return None
    bad: list[str] = []
    raw = _get(response, "raw", "raw", bad)
    counts = _detect(raw, depth + 1) if raw is not None else None
    if counts is None or not (counts.reported_input or counts.reported_output):
        kwargs = _get(response, "additional_kwargs", "additional_kwargs", bad)
        more = _detect(kwargs, depth + 1) if kwargs else None
        if more is not None and (counts is None or more.reported_input or more.reported_output):
            counts = more if counts is None else _with_bad(more, list(counts.malformed))
    if counts is None:
        return _build(None, None, None, None, None, None, None, None, bad)
    return _with_bad(counts, bad)


def _with_bad(counts: UsageCounts, bad: list[str]) -> UsageCounts:
    if not bad:
        return counts
    return counts._replace(malformed=_union(tuple(dict.fromkeys(bad)), counts.malformed))


from_openai_chat = _never_raises(_from_openai_chat)
from_openai_responses = _never_raises(_from_openai_responses)
from_anthropic = _never_raises(_from_anthropic)
from_gemini = _never_raises(_from_gemini)
from_bedrock = _never_raises(_from_bedrock)
_from_langchain_guarded = _never_raises(_from_langchain)
_LC_KEYS: Final = frozenset(
    ("input_tokens", "output_tokens", "total_tokens", "input_token_details", "output_token_details")
)
_LC_IN_KEYS: Final = frozenset(("cache_read", "cache_creation", "audio"))
_LC_OUT_KEYS: Final = frozenset(("reasoning", "audio"))


def from_langchain(usage_metadata: Any) -> UsageCounts | None:
    """LangChain ``UsageMetadata`` (``AIMessage.usage_metadata``), TTL keys included."""
    um = usage_metadata
    # What providers send almost always, read in one pass: a plain dict of the
    # standard keys holding in-range ints whose parts fit in their wholes. Anything
    # else (other keys such as the TTL breakdown, other types, malformed or
    # inconsistent values) takes the full reader, which gives the same counts here.
    if um.__class__ is dict and um.keys() <= _LC_KEYS:
        inp = um.get("input_tokens")
        out = um.get("output_tokens")
        if (
            inp.__class__ is int
            and out.__class__ is int
            and 0 <= inp <= MAX_COUNT
            and 0 <= out <= MAX_COUNT
        ):
            cr = cw = ai = rs = ao = 0
            d = um.get("input_token_details")
            if d is not None:
                if d.__class__ is not dict or not d.keys() <= _LC_IN_KEYS:
                    return _from_langchain_guarded(um)
                cr, cw, ai = d.get("cache_read", 0), d.get("cache_creation", 0), d.get("audio", 0)
                if not (
                    cr.__class__ is int
                    and cw.__class__ is int
                    and ai.__class__ is int
                    and cr >= 0
                    and cw >= 0
                    and 0 <= ai <= inp
                    and cr + cw <= inp
                ):
                    return _from_langchain_guarded(um)
            d = um.get("output_token_details")
            if d is not None:
                if d.__class__ is not dict or not d.keys() <= _LC_OUT_KEYS:
                    return _from_langchain_guarded(um)
                rs, ao = d.get("reasoning", 0), d.get("audio", 0)
                if not (
                    rs.__class__ is int
                    and ao.__class__ is int
                    and 0 <= rs <= out
                    and 0 <= ao <= out
                ):
                    return _from_langchain_guarded(um)
            # _unchecked(), inline: every value passed the checks above.
            counts: UsageCounts = _new_tuple(
                UsageCounts, (inp, out, cr, cw, rs, ai, ao, None, (), True, True)
            )
            return counts
    return _from_langchain_guarded(um)


from_langchain_llm_output = _never_raises(_from_langchain_llm_output)
from_llamaindex = _never_raises(_from_llamaindex)


# ------------------------------------------------------------------------- detection
_MAX_DEPTH: Final = 5
_ANTHROPIC_MARKERS: Final = (
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "server_tool_use",
    "inference_geo",
)


def _present(obj: Any, key: str) -> bool:
    return _peek(obj, key) is not None


def _view(obj: Any) -> dict[str, Any] | None:
    """A plain dict of ``obj``'s keys when that is cheap and exact (dicts, pydantic models)."""
    if obj.__class__ is dict:
        return obj
    if isinstance(obj, Mapping):
        return None  # a custom mapping: go through its own get()
    try:
        d = obj.__dict__
    except Exception:
        return None
    if d.__class__ is not dict or not _is_model(obj.__class__):
        return None
    extra = getattr(obj, "__pydantic_extra__", None)
    return {**d, **extra} if extra.__class__ is dict and extra else d


def _detect(obj: Any, depth: int) -> UsageCounts | None:
    """Find the usage in ``obj`` by its keys, looking inside the usual wrappers."""
    if isinstance(obj, UsageCounts):  # before the scalars: it is a tuple
        return obj
    if obj is None or depth > _MAX_DEPTH or isinstance(obj, _SCALARS):
        return None
    view = _view(obj)
    get: Callable[[str], Any] = view.get if view is not None else lambda k: _peek(obj, k)
    if get("prompt_tokens") is not None or get("completion_tokens") is not None:
        return _from_openai_chat(obj)
    if get("input_tokens") is not None or get("output_tokens") is not None:
        if any(get(k) is not None for k in _ANTHROPIC_MARKERS) or _present(
            get("output_tokens_details"), "thinking_tokens"
        ):
            return _from_anthropic(obj)
        if get("input_tokens_details") is not None or get("output_tokens_details") is not None:
            return _from_openai_responses(obj)
        return _from_langchain(obj)  # LangChain's UsageMetadata, or a bare pair
    if any(get(k) is not None for k in _G_KEYS):
        return _from_gemini(obj)
    if get("inputTokens") is not None or get("outputTokens") is not None:
        return _from_bedrock(obj)
    for key in ("usage", "usage_metadata", "usageMetadata"):
        inner = get(key)
        if inner is not None:
            counts = _detect(inner, depth + 1)
            if counts is not None:
                return counts
    if get("raw") is not None or get("additional_kwargs") is not None:
        counts = _from_llamaindex(obj, depth)
        if counts is not None:
            return counts
    for key in ("llm_output", "token_usage", "message", "response_metadata"):
        inner = get(key)
        if inner is not None:
            counts = _detect(inner, depth + 1)
            if counts is not None:
                return counts
    return None


def _unwrap(obj: Any, keys: tuple[str, ...], wrappers: tuple[str, ...]) -> Any:
    """The usage block itself: ``obj`` if it has one of ``keys``, else a wrapper's value."""
    if any(_present(obj, k) for k in keys):
        return obj
    for path in wrappers:
        inner = obj
        for part in path.split("."):
            inner = _peek(inner, part)
        if inner is not None:
            return inner
    return obj


_SOURCES: Final[
    dict[str, tuple[Callable[[Any], UsageCounts | None], tuple[str, ...], tuple[str, ...]]]
] = {
    "openai": (from_openai_chat, ("prompt_tokens", "completion_tokens"), ("usage",)),
    "openai_chat": (from_openai_chat, ("prompt_tokens", "completion_tokens"), ("usage",)),
    "openai_responses": (from_openai_responses, ("input_tokens", "output_tokens"), ("usage",)),
    "anthropic": (
        from_anthropic,
        ("input_tokens", "output_tokens"),
        ("usage", "message.usage"),
    ),
    "gemini": (from_gemini, _G_KEYS, ("usage_metadata", "usageMetadata")),
    "google": (from_gemini, _G_KEYS, ("usage_metadata", "usageMetadata")),
    "bedrock": (from_bedrock, ("inputTokens", "outputTokens"), ("usage",)),
    "langchain": (from_langchain, ("input_tokens", "output_tokens"), ("usage_metadata",)),
    "langchain_llm_output": (
        from_langchain_llm_output,
        ("token_usage", "usage"),
        ("llm_output",),
    ),
    "llamaindex": (from_llamaindex, (), ()),
}


def normalise_usage(obj: Any, *, source: str | None = None) -> UsageCounts | None:
    """The usage ``obj`` reports, in agentmeter's conventions; ``None`` if it reports none.

    ``obj`` is a usage block or anything that holds one (a provider response, a
    stream event, an ``AIMessage``, an ``LLMResult``, a LlamaIndex response), as
    a dict, TypedDict, pydantic model or attribute object. Its shape is found by
    its keys (see the module docstring) unless ``source`` names it: one of
    ``"openai"`` (= ``"openai_chat"``), ``"openai_responses"``, ``"anthropic"``,
    ``"gemini"`` (= ``"google"``), ``"bedrock"``, ``"langchain"``,
    ``"langchain_llm_output"``, ``"llamaindex"``.

    Never raises on the data: unusable values are listed in ``malformed`` and
    leave ``reported_input`` / ``reported_output`` False (the caller estimates).

    Raises:
        TypeError: ``source`` is not a string or None.
        ValueError: ``source`` is not one of the names above.
    """
    if source is not None:
        if not isinstance(source, str):
            raise TypeError(f"source must be a str or None, got {type(source).__name__}")
        entry = _SOURCES.get(source)
        if entry is None:
            raise ValueError(f"source must be one of {sorted(_SOURCES)}, got {source!r}")
        reader, keys, wrappers = entry
        try:
            block = _unwrap(obj, keys, wrappers) if wrappers else obj
        except Exception:
            block = obj
        return reader(block)
    try:
        return _detect(obj, 0)
    except Exception:
        return _broken("usage")
