"""Model prices: user overrides, genai-prices' bundled data, and name normalisation.

Cost is computed in integer arithmetic. Rates are kept in femto-USD per token
(USD per million tokens x 1e9), so ``tokens * rate`` is exact and one division
rounds the call's total to integer micro-USD (half up). genai-prices'
``calc_price`` costs ~150 us a call; we resolve a model's rates through it once
and cache the result, so every later call is a dict lookup and a few multiplies.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from . import _validate

__all__ = ["ModelRates", "PriceBook", "UnpricedModelWarning", "normalise_model"]

_FEMTO_PER_USD_PER_MTOK = 10**9  # 1 USD/Mtok == 1e-6 USD/token == 1e9 femto-USD/token
_FEMTO_PER_MICRO = 10**9
_HALF_MICRO = _FEMTO_PER_MICRO // 2


class UnpricedModelWarning(UserWarning):
    """A model has no known price: its calls are counted but their cost is ``None``."""


# Routing prefixes seen in LiteLLM, LangChain (ls_provider) and gateways, mapped to
# genai-prices provider ids. A prefix maps to None when it says nothing about price.
_PROVIDER_ALIASES: dict[str, str | None] = {
    "openai": "openai",
    "azure": "azure",
    "azure_ai": "azure",
    "azure_openai": "azure",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "google_genai": "google",
    "google_vertexai": "google",
    "google_anthropic_vertex": "anthropic",
    "vertex_ai": "google",
    "vertexai": "google",
    "bedrock": "aws",
    "amazon_bedrock": "aws",
    "aws": "aws",
    "mistral": "mistral",
    "mistralai": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "together": "together",
    "together_ai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "cohere": "cohere",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "openrouter": "openrouter",
    "perplexity": "perplexity",
    "models": None,  # Gemini's "models/gemini-2.5-flash"
}
# Tried, in order, when the model name alone does not identify a provider
# (genai-prices cannot guess e.g. "text-embedding-3-small").
_DATE_SUFFIX = re.compile(r"(?:[-@]\d{4}-?\d{2}-?\d{2}|-latest|-\d{4})$")


def normalise_model(model: str) -> tuple[str, str | None]:
    """Split a model name into its bare, lower-case name and a provider hint.

    ``"azure/gpt-4o-mini"`` -> ``("gpt-4o-mini", "azure")``;
    ``"openrouter/anthropic/claude-3.5-sonnet"`` -> ``("claude-3.5-sonnet", "openrouter")``;
    ``"models/gemini-2.5-flash"`` -> ``("gemini-2.5-flash", None)``.
    Dated snapshots are kept here (genai-prices knows many); :class:`PriceBook`
    strips the date only when the dated name is unknown.
    """
    m = model.strip().lower()
    hint: str | None = None
    if "/" in m:
        parts = [p for p in m.split("/") if p]
        for part in parts[:-1]:
            if part in _PROVIDER_ALIASES:
                hint = _PROVIDER_ALIASES[part]
                break
        m = parts[-1] if parts else m
    return m, hint


def _candidates(bare: str) -> list[str]:
    out = [bare]
    undated = _DATE_SUFFIX.sub("", bare)
    if undated != bare and undated:
        out.append(undated)
    return out


@dataclass(frozen=True, slots=True)
class ModelRates:
    """One model's resolved rates, in femto-USD per token (per request for ``request``).

    Each field is a tuple of ``(threshold, rate)`` pairs, highest threshold first; the
    first pair whose threshold the call's input tokens exceed applies (genai-prices'
    "cliff" tiers: crossing a threshold prices *all* tokens at the tier's rate). A
    flat price is ``((-1, rate),)``. A missing cache rate means the input rate.
    """

    input: tuple[tuple[int, int], ...]
    output: tuple[tuple[int, int], ...]
    cache_read: tuple[tuple[int, int], ...] | None
    cache_write: tuple[tuple[int, int], ...] | None
    request: int
    source: str
    # Precomputed for the hot path: ((threshold, input, output, cache_read, cache_write), ...)
    # over the union of all thresholds, highest first, ending with threshold -1.
    tiers: tuple[tuple[int, int, int, int, int], ...] = field(init=False, repr=False)
    # The same tiers as the terms of cost_micros' one expression: (threshold, input,
    # output, cache read - input, cache write - input, request + half a micro-USD).
    _terms: tuple[tuple[int, int, int, int, int, int], ...] = field(init=False, repr=False)
    # The one term of a flat price (None when tiered): no tier search on the hot path.
    _flat: tuple[int, int, int, int, int, int] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        starts = {-1}
        for t in (self.input, self.output, self.cache_read, self.cache_write):
            starts.update(start for start, _ in t or ())
        tiers = []
        for start in sorted(starts, reverse=True):
            probe = start + 1  # an input size that selects this tier
            ri = _pick(self.input, probe)
            tiers.append(
                (
                    start,
                    ri,
                    _pick(self.output, probe),
                    ri if self.cache_read is None else _pick(self.cache_read, probe),
                    ri if self.cache_write is None else _pick(self.cache_write, probe),
                )
            )
        object.__setattr__(self, "tiers", tuple(tiers))
        terms = tuple(
            (start, ri, ro, rcr - ri, rcw - ri, self.request + _HALF_MICRO)
            for start, ri, ro, rcr, rcw in tiers
        )
        object.__setattr__(self, "_terms", terms)
        object.__setattr__(self, "_flat", terms[0] if len(terms) == 1 else None)

    @property
    def flat(self) -> bool:
        """True when the price does not depend on the prompt size."""
        return len(self.tiers) == 1

    def cost_micros(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> int:
        """The cost of one call in integer micro-USD, rounded half up."""
        t = self._flat
        if t is None:
            t = _tier(self._terms, input_tokens)
        # (input - cache) * input rate + cache * cache rate, regrouped so that the
        # differences of rates are precomputed: the same integer, fewer operations.
        # The cache terms are added only when there are cache tokens (products of
        # femto-USD rates are multi-digit ints: each one skipped is ~15 ns).
        femto = input_tokens * t[1] + output_tokens * t[2] + t[5]
        if cache_read:
            femto += cache_read * t[3]
        if cache_write:
            femto += cache_write * t[4]
        return femto // 1_000_000_000  # femto-USD per micro-USD (_FEMTO_PER_MICRO), inlined

    @property
    def input_per_mtok(self) -> Decimal:
        """The base input rate in USD per million tokens."""
        return Decimal(self.input[-1][1]) / _FEMTO_PER_USD_PER_MTOK

    @property
    def output_per_mtok(self) -> Decimal:
        """The base output rate in USD per million tokens."""
        return Decimal(self.output[-1][1]) / _FEMTO_PER_USD_PER_MTOK


def _tier(
    terms: tuple[tuple[int, int, int, int, int, int], ...], input_tokens: int
) -> tuple[int, int, int, int, int, int]:
    """The term of the first tier whose threshold ``input_tokens`` exceeds (the last
    tier's threshold is -1, so one always does)."""
    for t in terms:
        if input_tokens > t[0]:
            return t
    return terms[-1]


def _pick(tiers: tuple[tuple[int, int], ...], input_tokens: int) -> int:
    for start, rate in tiers:
        if input_tokens > start:
            return rate
    return tiers[-1][1]


def _femto(value: Decimal) -> int:
    return int((value * _FEMTO_PER_USD_PER_MTOK).to_integral_value(rounding="ROUND_HALF_UP"))


def _tiers(price: Any) -> tuple[tuple[int, int], ...] | None:
    """Convert a genai-prices price (Decimal or TieredPrices) to our tier tuple."""
    if price is None:
        return None
    if isinstance(price, Decimal):
        return ((-1, _femto(price)),)
    tiers = sorted(((t.start, _femto(t.price)) for t in price.tiers), reverse=True)
    return (*tiers, (-1, _femto(price.base)))


def _from_genai(model_price: Any) -> ModelRates | None:
    inp = _tiers(getattr(model_price, "input_mtok", None))
    out = _tiers(getattr(model_price, "output_mtok", None))
    if inp is None and out is None:
        return None  # priced per image / per second / ...: not a token model
    inp = inp or ((-1, 0),)
    out = out or ((-1, 0),)
    cr = _tiers(getattr(model_price, "cache_read_mtok", None))
    cw = _tiers(getattr(model_price, "cache_write_mtok", None))
    req = getattr(model_price, "requests_kcount", None)
    request = _femto(req) // 1000 if isinstance(req, Decimal) else 0
    return ModelRates(inp, out, cr, cw, request, "genai-prices")


class _Snapshot:
    """genai-prices' bundled data, through a snapshot object of our own.

    genai-prices memoises every lookup (hits and misses) on its snapshot without a
    bound, so a stream of distinct unknown model names would grow it forever. We look
    up through a private ``DataSnapshot`` over the same provider data and start a
    fresh one every ``RENEW_AFTER`` lookups, which drops those memos.
    """

    RENEW_AFTER = 2048

    def __init__(self) -> None:
        self._snapshot: Any = None
        self._lookups = 0
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            self._lookups += 1
            if self._snapshot is None or self._lookups > self.RENEW_AFTER:
                from genai_prices import data_snapshot

                bundled = data_snapshot.get_snapshot()
                self._snapshot = data_snapshot.DataSnapshot(
                    providers=bundled.providers, from_auto_update=bundled.from_auto_update
                )
                self._lookups = 1
            return self._snapshot


_SNAPSHOT = _Snapshot()


def _genai_lookup(bare: str, hint: str | None) -> ModelRates | None:
    snapshot = _SNAPSHOT.get()
    now = datetime.now(tz=UTC)
    # The provider hint first; then every provider at once (None). When that misses,
    # the per-provider fallbacks would too (a miss through them costs ~2 ms, against
    # ~65 us for the global one), so they are tried only for names genai-prices knows.
    providers: list[str | None] = [hint] if hint else []
    providers.append(None)
    for candidate in _candidates(bare):
        for provider in providers:
            try:
                _, info = snapshot.find_provider_model(candidate, None, provider, None)
            except LookupError:
                continue
            rates = _from_genai(info.get_prices(now))
            if rates is not None:
                return rates
    return None


# Models whose resolved rates are kept (oldest forgotten first; ~180 bytes an entry, so
# ~3 MB at most). A forgotten name is resolved again: ~70 us for a name genai-prices
# does not know, ~150 us for one it knows.
CACHE_SIZE = 16_384
# Distinct unpriced models warned about one by one; past this, one last warning says
# so (a flood of per-customer names must not flood the log or the warnings registry).
MAX_UNPRICED_WARNINGS = 1000


class PriceBook:
    """Resolves and caches per-model rates; holds the user's overrides.

    Source order per call: a cost the provider reported (handled by the caller) >
    :meth:`set_price` overrides > genai-prices > unpriced (``None``).
    """

    def __init__(self) -> None:
        self._overrides: dict[tuple[str, str | None], ModelRates] = {}
        # Raw (model, provider) -> resolved rates or None. Written without a lock:
        # a racing duplicate resolution yields the same value.
        self._cache: dict[Any, ModelRates | None] = {}
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        self._tool_prices: dict[str, int] = {}  # tool -> micro-USD per call

    def set_price(
        self,
        model: str,
        *,
        input_per_mtok: float | Decimal | int,
        output_per_mtok: float | Decimal | int,
        cache_read_per_mtok: float | Decimal | int | None = None,
        cache_write_per_mtok: float | Decimal | int | None = None,
        provider: str | None = None,
    ) -> None:
        """Override (or add) a model's price, in USD per million tokens."""
        _validate.name("model", model, optional=False)
        _validate.name("provider", provider)
        values: dict[str, tuple[tuple[int, int], ...] | None] = {}
        for arg, val in (
            ("input_per_mtok", input_per_mtok),
            ("output_per_mtok", output_per_mtok),
            ("cache_read_per_mtok", cache_read_per_mtok),
            ("cache_write_per_mtok", cache_write_per_mtok),
        ):
            if val is None:
                values[arg] = None
                continue
            if isinstance(val, bool) or not isinstance(val, int | float | Decimal):
                raise TypeError(f"{arg} must be a number, got {type(val).__name__}")
            dec = Decimal(repr(val)) if isinstance(val, float) else Decimal(val)
            if not dec.is_finite() or dec < 0:
                raise ValueError(f"{arg} must be a finite number >= 0, got {val!r}")
            values[arg] = ((-1, _femto(dec)),)
        bare, hint = normalise_model(model)
        prov = _PROVIDER_ALIASES.get(provider.lower(), provider.lower()) if provider else hint
        rates = ModelRates(
            values["input_per_mtok"] or ((-1, 0),),
            values["output_per_mtok"] or ((-1, 0),),
            values["cache_read_per_mtok"],
            values["cache_write_per_mtok"],
            0,
            "override",
        )
        self._overrides[(bare, prov)] = rates
        self._cache.clear()

    def set_tool_price(self, tool: str, cost_usd: float | Decimal | int | None) -> None:
        """Price every call of ``tool`` at ``cost_usd`` dollars (``None`` removes the price).

        A priced tool's calls carry that cost (unless the record gives its own), it
        counts in every aggregate the call belongs to, and a cost budget reserves
        it before the tool runs.
        """
        _validate.name("tool", tool, optional=False)
        micros = _validate.opt_cost_micros("cost_usd", cost_usd)
        if micros is None:
            self._tool_prices.pop(tool, None)
        else:
            self._tool_prices[tool] = micros

    @property
    def has_tool_prices(self) -> bool:
        """True when some tool has a price (:meth:`set_tool_price`)."""
        return bool(self._tool_prices)

    def tool_cost_micros(self, tool: str) -> int | None:
        """A tool's price per call in micro-USD, ``None`` when it has none."""
        return self._tool_prices.get(tool) if self._tool_prices else None

    def clear_overrides(self) -> None:
        """Forget every :meth:`set_price` override."""
        self._overrides.clear()
        self._cache.clear()

    def rates(self, model: str, provider: str | None = None) -> ModelRates | None:
        """The rates for a model, or ``None`` when it is unpriced (cached after the first call).

        The cache is bounded (:data:`CACHE_SIZE` models, oldest forgotten first), so
        a stream of distinct model names (per-customer fine-tunes) cannot grow it
        without limit; a forgotten model is simply resolved again.
        """
        key: Any = model if provider is None else (model, provider)
        try:
            return self._cache[key]
        except KeyError:
            pass
        rates = self._resolve(model, provider)
        cache = self._cache
        if len(cache) >= CACHE_SIZE:
            try:
                del cache[next(iter(cache))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                pass
        cache[key] = rates
        return rates

    def cost_micros(
        self,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int | None:
        """The cost of one call in integer micro-USD, ``None`` when the model is unpriced."""
        try:
            rates = self._cache[model if provider is None else (model, provider)]
        except KeyError:
            rates = self.rates(model, provider)
        if rates is None:
            return None
        # ModelRates.cost_micros, inlined: this runs on every record, and a Python
        # frame is a fifth of it.
        t = rates._flat
        if t is None:
            t = _tier(rates._terms, input_tokens)
        femto = input_tokens * t[1] + output_tokens * t[2] + t[5]
        if cache_read_tokens:
            femto += cache_read_tokens * t[3]
        if cache_write_tokens:
            femto += cache_write_tokens * t[4]
        return femto // 1_000_000_000

    def _resolve(self, model: str, provider: str | None) -> ModelRates | None:
        bare, hint = normalise_model(model)
        if provider:
            p = provider.strip().lower()
            hint = _PROVIDER_ALIASES.get(p, hint or p)
        if self._overrides:
            for candidate in _candidates(bare):
                rates = self._overrides.get((candidate, hint)) or self._overrides.get(
                    (candidate, None)
                )
                if rates is not None:
                    return rates
        try:
            rates = _genai_lookup(bare, hint)
        except Exception:  # a broken price snapshot must not break recording
            rates = None
        if rates is None:
            self._warn_unpriced(model)
        return rates

    def _warn_unpriced(self, model: str) -> None:
        with self._warn_lock:
            if model in self._warned or len(self._warned) > MAX_UNPRICED_WARNINGS:
                return
            self._warned.add(model)
            last = len(self._warned) > MAX_UNPRICED_WARNINGS
        if last:
            warnings.warn(
                f"agentmeter: more than {MAX_UNPRICED_WARNINGS} models have no known price; "
                "further ones are counted with cost None without a warning each.",
                UnpricedModelWarning,
                stacklevel=4,
            )
            return
        warnings.warn(
            f"agentmeter: no price known for model {model!r}; its calls are counted with "
            f"cost None. Set one with agentmeter.set_price({model!r}, input_per_mtok=..., "
            "output_per_mtok=...).",
            UnpricedModelWarning,
            stacklevel=4,
        )
