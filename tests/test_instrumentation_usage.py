"""The usage normaliser against real provider bodies, malformed values and arbitrary input.

The bodies live in tests/data/provider_usage/ (one JSON file per provider API, each
saying where it comes from); every case states the UsageCounts it must give.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmeter.instrumentation._usage import (
    MAX_COUNT,
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

DATA = Path(__file__).parent / "data" / "provider_usage"


def body(name: str) -> Any:
    doc = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert doc["source"]  # every body says where it comes from
    return doc["body"]


def U(  # a constructor-like name reads best in the tables
    inp: int,
    out: int,
    cr: int = 0,
    cw: int = 0,
    rs: int = 0,
    ai: int = 0,
    ao: int = 0,
    **kw: Any,
) -> UsageCounts:
    return UsageCounts(inp, out, cr, cw, rs, ai, ao, **kw)


# ------------------------------------------------------------------ real bodies
CASES: list[tuple[str, str, Any, UsageCounts]] = [
    # (file, how to read it, reader or source, expected)
    ("openai_chat_completion_api_reference.json", "detect", None, U(1117, 46)),
    (
        "openai_chat_completion_cached_reasoning_audio.json",
        "detect",
        None,
        U(2006, 300, cr=1920, rs=64, ai=58, ao=120),
    ),
    (
        "openai_chat_completion_cached_reasoning_audio.json",
        "usage",
        from_openai_chat,
        U(2006, 300, cr=1920, rs=64, ai=58, ao=120),
    ),
    (
        "openai_chat_stream_final_usage_chunk.json",
        "detect",
        None,
        U(1200, 300, cr=1024, rs=128),
    ),
    ("openai_responses_api_reference.json", "detect", None, U(81, 1035, rs=832)),
    ("openai_responses_api_reference.json", "usage", from_openai_responses, U(81, 1035, rs=832)),
    ("anthropic_messages_sdk_cassette.json", "detect", None, U(406, 50)),
    ("anthropic_messages_sdk_cassette.json", "usage", from_anthropic, U(406, 50)),
    # raw input 10 excludes the cache: 10 + 0 read + 6853 written (1-hour TTL)
    ("anthropic_messages_usage_1h_cache_recorded.json", "detect", None, U(6863, 792, cw=6853)),
    # the docs' own numbers disagree (248 vs 456 + 100): the larger is the write
    (
        "anthropic_messages_usage_ttl_docs_example.json",
        "detect",
        None,
        U(2048 + 1800 + 556, 503, cr=1800, cw=556),
    ),
    (
        "gemini_generate_content_rest_thoughts.json",
        "detect",
        None,
        U(1876, 15 + 255, rs=255),  # thoughts are not in candidates there
    ),
    (
        "gemini_generate_content_rest_thoughts.json",
        "usageMetadata",
        from_gemini,
        U(1876, 270, rs=255),
    ),
    (
        "gemini_usage_metadata_cached_content_docs.json",
        "detect",
        None,
        U(696219, 214, cr=696190),
    ),
    # Bedrock's inputTokens excludes the cache: 24 + 1500 + 1780
    ("bedrock_converse_prompt_caching.json", "detect", None, U(3304, 112, cr=1500, cw=1780)),
    ("bedrock_converse_prompt_caching.json", "usage", from_bedrock, U(3304, 112, cr=1500, cw=1780)),
    # langchain-anthropic: cache_creation = 0, the write under ephemeral_1h_input_tokens
    ("langchain_anthropic_usage_metadata_ttl.json", "detect", None, U(6863, 792, cw=6853)),
    ("langchain_anthropic_usage_metadata_ttl.json", "self", from_langchain, U(6863, 792, cw=6853)),
    (
        "llamaindex_openai_chat_response.json",
        "self",
        from_llamaindex,
        U(2006, 300, cr=1920, rs=64, ai=58, ao=120),
    ),
    (
        "llamaindex_openai_chat_response.json",
        "detect",
        None,
        U(2006, 300, cr=1920, rs=64, ai=58, ao=120),
    ),
]


@pytest.mark.parametrize(
    ("name", "how", "reader", "expected"),
    CASES,
    ids=[f"{c[0].removesuffix('.json')}-{c[1]}" for c in CASES],
)
def test_real_bodies(name: str, how: str, reader: Any, expected: UsageCounts) -> None:
    doc = body(name)
    if how == "detect":
        got = normalise_usage(doc)
    elif how == "self":
        got = reader(doc)
    else:
        got = reader(doc[how])
    assert got == expected


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("openai_chat_completion_cached_reasoning_audio.json", "openai"),
        ("openai_chat_stream_final_usage_chunk.json", "openai_chat"),
        ("openai_responses_api_reference.json", "openai_responses"),
        ("anthropic_messages_usage_1h_cache_recorded.json", "anthropic"),
        ("gemini_generate_content_rest_thoughts.json", "gemini"),
        ("gemini_usage_metadata_cached_content_docs.json", "google"),
        ("bedrock_converse_prompt_caching.json", "bedrock"),
        ("langchain_anthropic_usage_metadata_ttl.json", "langchain"),
        ("llamaindex_openai_chat_response.json", "llamaindex"),
    ],
)
def test_a_source_hint_gives_the_same_counts(name: str, source: str) -> None:
    doc = body(name)
    assert normalise_usage(doc, source=source) == normalise_usage(doc)


def test_anthropic_stream_events_merge_cumulatively() -> None:
    start, delta = body("anthropic_stream_message_start_delta_sdk_fixture.json")
    first = normalise_usage(start)  # message_start: under message.usage
    assert first == U(25 + 5 + 10, 1, cr=5, cw=10)
    last = normalise_usage(delta)  # message_delta: cumulative, thinking inside output
    assert last == U(40 + 7 + 12, 8, cr=7, cw=12, rs=3)
    assert normalise_usage(start, source="anthropic") == first
    assert merge_cumulative(first, last) == U(59, 8, cr=7, cw=12, rs=3)


def test_anthropic_basic_stream_reports_input_first_output_last() -> None:
    start, delta = body("anthropic_stream_basic_sdk_fixture.json")
    first, last = normalise_usage(start), normalise_usage(delta)
    assert first == U(11, 1)
    assert last == U(0, 6, reported_input=False)  # the delta reports no input
    merged = merge_cumulative(first, last)
    assert merged == U(11, 6) and merged.fully_reported


def test_sdk_objects_are_read_like_their_json() -> None:
    openai = pytest.importorskip("openai")
    doc = body("openai_chat_completion_cached_reasoning_audio.json")
    completion = openai.types.chat.ChatCompletion.model_validate(doc)
    assert normalise_usage(completion) == normalise_usage(doc)
    assert from_openai_chat(completion.usage) == normalise_usage(doc)
    chunk = openai.types.chat.ChatCompletionChunk.model_validate(
        body("openai_chat_stream_final_usage_chunk.json")
    )
    assert normalise_usage(chunk) == U(1200, 300, cr=1024, rs=128)
    resp_doc = body("openai_responses_api_reference.json")
    response = openai.types.responses.Response.model_validate(resp_doc)
    assert normalise_usage(response) == U(81, 1035, rs=832)


def test_anthropic_sdk_objects() -> None:
    anthropic = pytest.importorskip("anthropic")
    doc = body("anthropic_messages_sdk_cassette.json")
    doc["usage"] = body("anthropic_messages_usage_1h_cache_recorded.json")["usage"]
    message = anthropic.types.Message.model_validate(doc)
    assert normalise_usage(message) == U(6863, 792, cw=6853)
    start, delta = body("anthropic_stream_message_start_delta_sdk_fixture.json")
    ev_start = anthropic.types.RawMessageStartEvent.model_validate(start)
    ev_delta = anthropic.types.RawMessageDeltaEvent.model_validate(delta)
    merged = merge_cumulative(normalise_usage(ev_start), normalise_usage(ev_delta))
    assert merged == U(59, 8, cr=7, cw=12, rs=3)


def test_langchain_objects() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    outputs = pytest.importorskip("langchain_core.outputs")
    um = body("langchain_anthropic_usage_metadata_ttl.json")
    msg = messages.AIMessage(content="ok", usage_metadata=um)
    assert normalise_usage(msg) == U(6863, 792, cw=6853)
    assert normalise_usage(msg, source="langchain") == U(6863, 792, cw=6853)
    # A message without usage_metadata: its response_metadata's token_usage.
    legacy = messages.AIMessage(
        content="ok",
        response_metadata={"token_usage": {"prompt_tokens": 50, "completion_tokens": 7}},
    )
    assert normalise_usage(legacy) == U(50, 7)
    result = outputs.LLMResult(
        generations=[[]],
        llm_output={"token_usage": body("openai_chat_stream_final_usage_chunk.json")["usage"]},
    )
    assert normalise_usage(result) == U(1200, 300, cr=1024, rs=128)
    assert from_langchain_llm_output(result.llm_output) == U(1200, 300, cr=1024, rs=128)


def test_llm_output_shapes() -> None:
    anthropic_style = {
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90}
    }
    assert from_langchain_llm_output(anthropic_style) == U(100, 5, cr=90)
    openrouter = {"token_usage": {"prompt_tokens": 194, "completion_tokens": 2, "cost": 0.95}}
    got = from_langchain_llm_output(openrouter)
    assert got == U(194, 2, cost_usd=Decimal("0.95"))
    assert from_langchain_llm_output({"model_name": "x"}) is None
    assert from_langchain_llm_output({}) is None
    junk = from_langchain_llm_output({"token_usage": "n/a"})
    assert junk is not None and junk.malformed == ("token_usage",)
    assert not junk.reported_input and not junk.reported_output


def test_llamaindex_response_objects() -> None:
    types = pytest.importorskip("llama_index.core.base.llms.types")
    openai = pytest.importorskip("openai")
    doc = body("llamaindex_openai_chat_response.json")
    raw = openai.types.chat.ChatCompletion.model_validate(doc["raw"])
    response = types.ChatResponse(
        message=types.ChatMessage(role="assistant", content="ok"),
        raw=raw,
        additional_kwargs=doc["additional_kwargs"],
    )
    expected = U(2006, 300, cr=1920, rs=64, ai=58, ao=120)
    assert from_llamaindex(response) == expected
    assert normalise_usage(response) == expected
    # Nothing in raw: the counts llama-index copied into additional_kwargs.
    bare = types.CompletionResponse(text="ok", raw=None, additional_kwargs=doc["additional_kwargs"])
    assert from_llamaindex(bare) == U(2006, 300)
    # Gemini's raw (a dict with usage_metadata), Anthropic's stream event under message.
    gem = types.ChatResponse(
        message=types.ChatMessage(role="assistant", content="ok"),
        raw=body("gemini_usage_metadata_cached_content_docs.json"),
    )
    assert from_llamaindex(gem) == U(696219, 214, cr=696190)
    start, _ = body("anthropic_stream_message_start_delta_sdk_fixture.json")
    event = types.ChatResponse(message=types.ChatMessage(role="assistant", content=""), raw=start)
    assert from_llamaindex(event) == U(40, 1, cr=5, cw=10)
    assert from_llamaindex(types.CompletionResponse(text="x")) is None


# ------------------------------------------------------------------- the rules
def test_parts_larger_than_their_whole_take_the_max() -> None:
    # OpenAI documents that prompt_tokens includes the cache: a larger part is a
    # contradiction, settled by the max (never by adding).
    odd = {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 9},
    }
    assert from_openai_chat(odd) == U(9, 1, cr=9)
    odd_lc = {"input_tokens": 10, "output_tokens": 2, "output_token_details": {"reasoning": 7}}
    assert from_langchain(odd_lc) == U(10, 7, rs=7)
    # Where the whole is documented to exclude the part, the reader adds it.
    assert from_anthropic(
        {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 900}
    ) == (U(910, 1, cr=900))
    assert from_gemini(
        {"promptTokenCount": 10, "candidatesTokenCount": 1, "thoughtsTokenCount": 50}
    ) == (U(10, 51, rs=50))


def test_ttl_breakdown_when_the_total_is_zero_or_absent() -> None:
    ttl = {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 200}
    lc = {
        "input_tokens": 600,
        "output_tokens": 4,
        "input_token_details": {"cache_creation": 0, **ttl},
    }
    assert from_langchain(lc) == U(600, 4, cw=500)
    raw = {"input_tokens": 100, "output_tokens": 4, "cache_creation": ttl}
    assert from_anthropic(raw) == U(600, 4, cw=500)
    raw_zero = {**raw, "cache_creation_input_tokens": 0}
    assert from_anthropic(raw_zero) == U(600, 4, cw=500)
    consistent = {**raw, "cache_creation_input_tokens": 500}
    assert from_anthropic(consistent) == U(600, 4, cw=500)  # not counted twice


def test_gemini_rest_omits_zero_counts() -> None:
    # proto3 JSON leaves out a zero candidatesTokenCount: the total says it is 0.
    assert from_gemini({"promptTokenCount": 12, "totalTokenCount": 12}) == U(12, 0)
    assert from_gemini(
        {"promptTokenCount": 12, "totalTokenCount": 40, "thoughtsTokenCount": 20}
    ) == (U(12, 28, rs=20))
    audio = {
        "promptTokenCount": 100,
        "candidatesTokenCount": 40,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 10},
            {"modality": "AUDIO", "tokenCount": 90},
        ],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 35}],
    }
    assert from_gemini(audio) == U(100, 40, ai=90, ao=35)


def test_deepseek_and_openrouter_extensions() -> None:
    deepseek = {"prompt_tokens": 1236, "completion_tokens": 95, "prompt_cache_hit_tokens": 1000}
    assert from_openai_chat(deepseek) == U(1236, 95, cr=1000)
    openrouter = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 30},
        "cost": "0.0012",
    }
    assert from_openai_chat(openrouter) == U(100, 20, cr=40, cw=30, cost_usd=Decimal("0.0012"))
    assert reported_cost({"cost": 0.5}) == Decimal("0.5")
    assert reported_cost({"cost": True}) is None
    assert reported_cost({"cost": "NaN"}) is None
    assert reported_cost({"cost": -1}) is None
    assert reported_cost(None) is None


def test_nothing_reported_is_none() -> None:
    for obj in (None, {}, {"content": "x"}, {"usage": None}, "text", 3, [1, 2], object()):
        assert normalise_usage(obj) is None
    assert from_openai_chat({}) is None
    assert from_anthropic({"id": "msg"}) is None
    assert from_gemini({"modelVersion": "x"}) is None


# ------------------------------------------------------------- malformed values
class _Boom:
    """An object whose every attribute access raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} for you")


class _RaisingProperty:
    @property
    def prompt_tokens(self) -> int:
        raise ValueError("broken")

    completion_tokens = 5


class _RaisingDict(dict):  # type: ignore[type-arg]
    def get(self, key: Any, default: Any = None) -> Any:
        raise KeyError(key)


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (12, 12),
        (12.0, 12),
        ("12", 12),
        (" 7 ", 7),
        (Decimal("3"), 3),
        (0, 0),
        (MAX_COUNT, MAX_COUNT),
    ],
)
def test_valid_count_values(value: Any, count: int) -> None:
    got = from_openai_chat({"prompt_tokens": value, "completion_tokens": 1})
    assert (
        got is not None and got.input_tokens == count and got.reported_input and not got.malformed
    )


@pytest.mark.parametrize(
    "value",
    [
        -1,
        float("nan"),
        float("inf"),
        -float("inf"),
        12.5,
        "abc",
        "12.0",
        "-3",
        "",
        "١٢",  # non-ASCII digits
        True,
        False,
        [1],
        {"n": 1},
        object(),
        MAX_COUNT + 1,
        2**200,
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("1e999999999"),
        complex(1, 0),
        b"12",
    ],
)
def test_malformed_count_values(value: Any) -> None:
    got = from_openai_chat({"prompt_tokens": value, "completion_tokens": 3})
    assert got is not None
    assert got.malformed == ("prompt_tokens",)
    assert not got.reported_input and got.input_tokens == 0
    assert got.reported_output and got.output_tokens == 3


def test_none_is_not_reported_nor_malformed() -> None:
    got = from_openai_chat({"prompt_tokens": None, "completion_tokens": 3})
    assert got == U(0, 3, reported_input=False)


def test_nested_garbage() -> None:
    got = from_openai_chat(
        {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "prompt_tokens_details": "garbage",
            "completion_tokens_details": {"reasoning_tokens": [3]},
        }
    )
    assert got == U(
        10,
        2,
        malformed=("prompt_tokens_details", "completion_tokens_details.reasoning_tokens"),
    )
    lc = from_langchain({"input_tokens": 10, "output_tokens": 2, "input_token_details": 5})
    assert lc == U(10, 2, malformed=("input_token_details",))
    gem = from_gemini(
        {"promptTokenCount": 10, "candidatesTokenCount": 1, "promptTokensDetails": "x"}
    )
    assert gem == U(10, 1, malformed=("promptTokensDetails",))
    bed = from_bedrock({"inputTokens": 1, "outputTokens": 1, "cacheDetails": {"ttl": "5m"}})
    assert bed == U(1, 1, malformed=("cacheDetails",))


def test_malformed_whole_keeps_the_proven_parts() -> None:
    got = from_anthropic(
        {"input_tokens": "abc", "output_tokens": 5, "cache_read_input_tokens": 100}
    )
    assert got == U(100, 5, cr=100, malformed=("input_tokens",), reported_input=False)


def test_langchain_malformed_usage_is_flagged_not_dropped() -> None:
    # The case: negative, NaN, a string -- recorded (estimated), never dropped.
    um = {"input_tokens": -5, "output_tokens": float("nan"), "total_tokens": "x"}
    got = from_langchain(um)
    assert got is not None
    assert set(got.malformed) == {"input_tokens", "output_tokens"}
    assert not got.reported_input and not got.reported_output


def test_objects_that_raise_never_raise_here() -> None:
    got = from_openai_chat(_Boom())
    assert got is not None and not got.reported_input and not got.reported_output
    assert "prompt_tokens" in got.malformed and "completion_tokens" in got.malformed
    assert normalise_usage(_Boom()) is None  # nothing recognisable
    prop = normalise_usage(_RaisingProperty())
    assert prop == U(0, 5, malformed=("prompt_tokens",), reported_input=False)
    bad = from_openai_chat(_RaisingDict(prompt_tokens=1))
    assert bad is not None and not bad.reported_input
    for reader in (
        from_openai_chat,
        from_openai_responses,
        from_anthropic,
        from_gemini,
        from_bedrock,
        from_langchain,
        from_langchain_llm_output,
        from_llamaindex,
    ):
        for obj in (_Boom(), _RaisingDict(), _RaisingProperty(), 3, "x", [None]):
            reader(obj)  # must not raise


def test_mock_objects_are_malformed_not_fatal() -> None:
    from unittest.mock import MagicMock

    got = normalise_usage(MagicMock())
    assert got is not None and not got.reported_input and not got.reported_output


def test_cyclic_objects_terminate() -> None:
    class Node:
        pass

    node = Node()
    node.usage = node  # type: ignore[attr-defined]
    node.message = node  # type: ignore[attr-defined]
    node.raw = node  # type: ignore[attr-defined]
    assert normalise_usage(node) is None
    loop: dict[str, Any] = {}
    loop["usage"] = loop
    loop["raw"] = loop
    assert normalise_usage(loop) is None


def test_source_argument_is_checked() -> None:
    with pytest.raises(ValueError, match="source"):
        normalise_usage({}, source="openia")
    with pytest.raises(TypeError, match="source"):
        normalise_usage({}, source=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ UsageCounts
def test_usage_counts_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        UsageCounts(-1, 0)
    with pytest.raises(TypeError, match="output_tokens"):
        UsageCounts(1, True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cache_read_tokens"):
        UsageCounts(1, 1, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_read_tokens"):
        UsageCounts(5, 0, cache_read_tokens=4, cache_write_tokens=2)
    with pytest.raises(ValueError, match="reasoning_tokens"):
        UsageCounts(5, 1, reasoning_tokens=2)
    with pytest.raises(ValueError, match="audio_input_tokens"):
        UsageCounts(5, 1, audio_input_tokens=6)
    with pytest.raises(ValueError, match="cost_usd"):
        UsageCounts(1, 1, cost_usd=Decimal("NaN"))
    with pytest.raises(ValueError, match="cost_usd"):
        UsageCounts(1, 1, cost_usd=Decimal("-1"))
    with pytest.raises(TypeError, match="cost_usd"):
        UsageCounts(1, 1, cost_usd=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="malformed"):
        UsageCounts(1, 1, malformed=["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reported_input"):
        UsageCounts(1, 1, reported_input=1)  # type: ignore[arg-type]
    u = UsageCounts(10, 5, 2, 3, 1)
    assert u.total_tokens == 15 and u.fully_reported
    with pytest.raises(AttributeError):
        u.input_tokens = 3  # type: ignore[misc]


def test_adding_stream_chunks() -> None:
    a = U(10, 0, cr=4, malformed=("x",), reported_output=False, cost_usd=Decimal("0.01"))
    b = U(0, 7, rs=2, malformed=("x", "y"), reported_input=False)
    s = a + b
    assert s == U(
        10, 7, cr=4, rs=2, malformed=("x", "y"), cost_usd=Decimal("0.01")
    )  # flags OR, names once
    assert s.fully_reported
    c = U(0, 3, cost_usd=Decimal("0.02"), reported_input=False)
    assert (s + c).cost_usd == Decimal("0.03")
    assert sum([a, b, c]) == s + c
    with pytest.raises(TypeError):
        _ = a + 1  # type: ignore[operator]
    nothing = U(0, 0, reported_input=False, reported_output=False)
    assert not (nothing + nothing).reported_input


def test_merge_cumulative() -> None:
    assert merge_cumulative(None, None) is None
    a = U(10, 1, cr=10)
    b = U(10, 5, cw=10, reported_input=False)
    m = merge_cumulative(a, b)
    assert m == U(20, 5, cr=10, cw=10)  # parts kept within the whole
    assert merge_cumulative(a, None) is a and merge_cumulative(None, b) is b


# ------------------------------------------------------------------ properties
_KEYS = [
    "usage",
    "usage_metadata",
    "usageMetadata",
    "message",
    "raw",
    "additional_kwargs",
    "llm_output",
    "token_usage",
    "response_metadata",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "cached_tokens",
    "cache_write_tokens",
    "audio_tokens",
    "reasoning_tokens",
    "prompt_cache_hit_tokens",
    "cost",
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "output_tokens_details",
    "thinking_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "input_token_details",
    "output_token_details",
    "cache_read",
    "reasoning",
    "audio",
    "promptTokenCount",
    "candidatesTokenCount",
    "cachedContentTokenCount",
    "thoughtsTokenCount",
    "toolUsePromptTokenCount",
    "totalTokenCount",
    "prompt_token_count",
    "candidates_token_count",
    "promptTokensDetails",
    "modality",
    "tokenCount",
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
    "cacheDetails",
]
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=0, max_value=5000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["AUDIO", "TEXT", "12", "-1", "1e3", "NaN"])
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=40,
)
_SOURCES = [
    None,
    "openai",
    "openai_responses",
    "anthropic",
    "gemini",
    "bedrock",
    "langchain",
    "langchain_llm_output",
    "llamaindex",
]


def _sound(u: UsageCounts | None) -> None:
    if u is None:
        return
    assert isinstance(u, UsageCounts)
    for n in (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
        u.audio_input_tokens,
        u.audio_output_tokens,
    ):
        assert isinstance(n, int) and n >= 0
    assert u.cache_read_tokens + u.cache_write_tokens <= u.input_tokens
    assert u.reasoning_tokens <= u.output_tokens
    assert u.cost_usd is None or (u.cost_usd.is_finite() and u.cost_usd >= 0)
    assert all(isinstance(m, str) for m in u.malformed)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_JSON, source=st.sampled_from(_SOURCES))
def test_never_raises_and_always_sound(obj: Any, source: str | None) -> None:
    _sound(normalise_usage(obj, source=source))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_JSON)
def test_every_reader_never_raises(obj: Any) -> None:
    for reader in (
        from_openai_chat,
        from_openai_responses,
        from_anthropic,
        from_gemini,
        from_bedrock,
        from_langchain,
        from_langchain_llm_output,
        from_llamaindex,
    ):
        _sound(reader(obj))


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(
        st.tuples(*(st.integers(min_value=0, max_value=10_000) for _ in range(5)), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_sums_and_merges_stay_sound(parts: list[tuple[int, int, int, int, int, bool]]) -> None:
    chunks = []
    for inp, out, cr, cw, rs, flag in parts:
        chunks.append(
            UsageCounts(
                inp + cr + cw, out + rs, cr, cw, rs, reported_input=flag, reported_output=not flag
            )
        )
    total = sum(chunks[1:], chunks[0])
    _sound(total)
    assert total.input_tokens == sum(c.input_tokens for c in chunks)
    merged: UsageCounts | None = None
    for c in chunks:
        merged = merge_cumulative(merged, c)
        _sound(merged)
    assert merged is not None
    assert merged.input_tokens >= max(c.input_tokens for c in chunks)
    assert not math.isnan(float(merged.input_tokens))


_LC_COUNT = (
    st.integers(min_value=0, max_value=5000)
    | st.integers(min_value=-3, max_value=MAX_COUNT + 3)
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=True)
    | st.sampled_from(["7", "x", Decimal(3)])
)
_LC_DETAILS = st.dictionaries(
    st.sampled_from(["cache_read", "cache_creation", "audio", "reasoning", "cached_tokens"])
    | st.sampled_from(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"]),
    _LC_COUNT,
    max_size=4,
)
_LC_METADATA = st.dictionaries(
    st.sampled_from(["input_tokens", "output_tokens", "total_tokens", "cost"]),
    _LC_COUNT,
    max_size=4,
).flatmap(
    lambda um: st.fixed_dictionaries(
        {},
        optional={
            "input_token_details": _LC_DETAILS | st.sampled_from(["x", 0, None, []]),
            "output_token_details": _LC_DETAILS | st.sampled_from(["x", 0, None]),
        },
    ).map(lambda details: {**um, **details})
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(um=_LC_METADATA)
def test_langchain_one_pass_reading_is_the_full_reader(um: dict[str, Any]) -> None:
    """from_langchain reads a plain UsageMetadata dict in one pass (the handler's hot
    path); for every dict, shortcut taken or not, it equals the full reader."""
    from agentmeter.instrumentation import _usage

    fast = from_langchain(um)
    assert fast == _usage._from_langchain(um)
    _sound(fast)
    if fast is not None:  # built without the constructor's checks: they would pass
        again = UsageCounts(
            fast.input_tokens,
            fast.output_tokens,
            fast.cache_read_tokens,
            fast.cache_write_tokens,
            fast.reasoning_tokens,
            fast.audio_input_tokens,
            fast.audio_output_tokens,
            fast.cost_usd,
            fast.malformed,
            fast.reported_input,
            fast.reported_output,
        )
        assert again == fast and hash(again) == hash(fast)


def test_counts_built_without_checks_are_frozen_like_the_others() -> None:
    fast = from_langchain({"input_tokens": 12, "output_tokens": 3, "total_tokens": 15,
                           "input_token_details": {"cache_read": 4}})  # fmt: skip
    assert fast == UsageCounts(12, 3, cache_read_tokens=4)
    assert repr(fast) == repr(UsageCounts(12, 3, cache_read_tokens=4))
    with pytest.raises(AttributeError):
        fast.input_tokens = 1  # type: ignore[misc]
    assert fast + fast == UsageCounts(24, 6, cache_read_tokens=8)
