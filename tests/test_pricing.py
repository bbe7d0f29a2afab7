from __future__ import annotations

import warnings
from decimal import ROUND_HALF_UP, Decimal

import pytest
from genai_prices import Usage as GUsage
from genai_prices import calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmeter import Tracker, UnpricedModelWarning, normalise_model
from agentmeter.pricing import PriceBook

REAL_NAMES = {
    "azure/gpt-4o-mini": "gpt-4o-mini",
    "openai/gpt-4o": "gpt-4o",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
    "anthropic/claude-3-5-sonnet-latest": "claude-3-5-sonnet",
    "claude-sonnet-4-5": "claude-sonnet-4-5",
    "gemini-2.5-flash": "gemini-2.5-flash",
    "models/gemini-2.5-flash": "gemini-2.5-flash",
}


def _genai_micros(model: str, inp: int, out: int, cr: int = 0, cw: int = 0) -> int:
    usage = GUsage(input_tokens=inp, output_tokens=out, cache_read_tokens=cr, cache_write_tokens=cw)
    price = calc_price(usage, model).total_price
    return int((price * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))


def test_normalise_model():
    assert normalise_model("azure/gpt-4o-mini") == ("gpt-4o-mini", "azure")
    assert normalise_model("openrouter/anthropic/claude-3.5-sonnet") == (
        "claude-3.5-sonnet",
        "openrouter",
    )
    assert normalise_model(" GPT-4o ") == ("gpt-4o", None)
    assert normalise_model("models/gemini-2.5-flash") == ("gemini-2.5-flash", None)


@pytest.mark.parametrize("name,canonical", REAL_NAMES.items())
def test_real_model_names_are_priced_like_their_canonical_model(name, canonical):
    book = PriceBook()
    rates = book.rates(name)
    assert rates is not None, name
    assert rates.cost_micros(10_000, 1_000) == _genai_micros(canonical, 10_000, 1_000)


@settings(max_examples=60, deadline=None)
@given(
    model=st.sampled_from(
        [
            "gpt-4o-mini",
            "gpt-4o",
            "claude-3-5-sonnet",
            "claude-sonnet-4-5",
            "gemini-2.5-flash",
            "gemini-1.5-pro",
            "o1",
        ]
    ),
    inp=st.integers(0, 400_000),
    out=st.integers(0, 50_000),
    frac_cr=st.floats(0, 1),
    frac_cw=st.floats(0, 1),
)
def test_cost_equals_genai_prices_including_tiers_and_cache(model, inp, out, frac_cr, frac_cw):
    cr = int(inp * frac_cr)
    cw = int((inp - cr) * frac_cw)
    rates = PriceBook().rates(model)
    assert rates is not None
    assert rates.cost_micros(inp, out, cr, cw) == _genai_micros(model, inp, out, cr, cw)


def test_tiered_price_switches_above_threshold():
    rates = PriceBook().rates("claude-sonnet-4-5")
    assert rates is not None and not rates.flat
    low = rates.cost_micros(200_000, 0)
    high = rates.cost_micros(200_001, 0)
    assert high > low * 1.5  # the whole prompt moves to the higher tier


def test_source_order_provider_cost_then_override_then_genai(tracker):
    tracker.record_llm(model="gpt-4o", input_tokens=1000, output_tokens=0, cost_usd=0.5)
    assert tracker.snapshot().totals.cost_micros == 500_000
    tracker.reset()
    tracker.set_price("gpt-4o", input_per_mtok=1, output_per_mtok=2)
    tracker.record_llm(model="openai/gpt-4o", input_tokens=1000, output_tokens=1000)
    assert tracker.snapshot().totals.cost_micros == 3000
    tracker.reset()
    tracker.prices.clear_overrides()
    tracker.record_llm(model="gpt-4o", input_tokens=1000, output_tokens=0)
    assert tracker.snapshot().totals.cost_micros == 2500


def test_override_with_cache_rates_and_provider():
    book = PriceBook()
    book.set_price(
        "my-model", input_per_mtok=10, output_per_mtok=20, cache_read_per_mtok=1, provider="acme"
    )
    with pytest.warns(UnpricedModelWarning):  # a provider's price is not everyone's price
        assert book.rates("my-model") is None
    rates = book.rates("my-model", "acme")
    assert rates is not None and rates.source == "override"
    assert rates.cost_micros(1000, 100, cache_read=500) == 500 * 10 + 500 * 1 + 100 * 20


def test_unpriced_model_is_none_and_warned_once(tracker):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            tracker.record_llm(model="totally-unknown-model", input_tokens=10, output_tokens=1)
    assert len([w for w in caught if issubclass(w.category, UnpricedModelWarning)]) == 1
    u = tracker.snapshot().totals
    assert u.cost_usd is None and u.unpriced_calls == 3 and u.llm_calls == 3
    tracker.record_llm(model="gpt-4o", input_tokens=10, output_tokens=0)
    u = tracker.snapshot().totals
    assert u.cost_usd == Decimal("0.000025") and u.unpriced_calls == 3  # partial, flagged


def test_rates_are_resolved_once_and_cached(monkeypatch):
    import agentmeter.pricing as pricing

    calls = []
    real = pricing._genai_lookup

    def counting(bare, hint):
        calls.append(bare)
        return real(bare, hint)

    monkeypatch.setattr(pricing, "_genai_lookup", counting)
    t = Tracker()
    for _ in range(100):
        t.record_llm(model="gpt-4o-mini", input_tokens=10, output_tokens=1)
    assert calls == ["gpt-4o-mini"]


def test_set_price_rejects_bad_input():
    book = PriceBook()
    with pytest.raises(ValueError, match="input_per_mtok"):
        book.set_price("m", input_per_mtok=-1, output_per_mtok=1)
    with pytest.raises(ValueError, match="output_per_mtok"):
        book.set_price("m", input_per_mtok=1, output_per_mtok=float("nan"))
    with pytest.raises(TypeError, match="model"):
        book.set_price(None, input_per_mtok=1, output_per_mtok=1)  # type: ignore[arg-type]
    with pytest.warns(UnpricedModelWarning):  # nothing was stored by the rejected calls
        assert book.rates("m") is None


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-pro", "o3"]),
    inp=st.integers(0, 2_000_000),
    out=st.integers(0, 200_000),
    cache=st.tuples(st.integers(0, 2_000_000), st.integers(0, 2_000_000)),
)
def test_the_book_prices_a_call_as_its_rates_do(
    model: str, inp: int, out: int, cache: tuple[int, int]
) -> None:
    """PriceBook.cost_micros inlines ModelRates.cost_micros (the record path's hot
    spot): the two agree on every call, across tier boundaries."""
    cr = min(cache[0], inp)
    cw = min(cache[1], inp - cr)
    book = PriceBook()
    rates = book.rates(model)
    assert rates is not None
    assert book.cost_micros(model, None, inp, out, cr, cw) == rates.cost_micros(inp, out, cr, cw)
