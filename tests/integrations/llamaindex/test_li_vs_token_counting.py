"""Side by side with LlamaIndex's TokenCountingHandler on the same workloads.

Equal where TokenCountingHandler is right (completions, reported OpenAI usage,
embeddings of newline-free text); different, on purpose, where it is wrong.
"""

from __future__ import annotations

import agentmeter_llamaindex as ami
import pytest
from li_fakes import FakeOpenAI
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM
from llama_index.llms.openai import OpenAI

import agentmeter

pytestmark = [
    pytest.mark.filterwarnings("ignore::agentmeter.UnpricedModelWarning"),
    pytest.mark.timeout(60),
]

MSGS = [ChatMessage(role="user", content="What does agentmeter count?")]


def counting() -> tuple[TokenCountingHandler, CallbackManager]:
    tch = TokenCountingHandler()
    return tch, CallbackManager([tch])


def test_complete_equal(inst: ami.Instrumentor, li_tracker: agentmeter.Tracker) -> None:
    tch, cm = counting()
    llm = MockLLM(callback_manager=cm)
    for i in range(5):
        llm.complete(f"prompt number {i} about metering")
    totals = li_tracker.snapshot().totals
    assert totals.llm_calls == len(tch.llm_token_counts) == 5
    assert totals.input_tokens == tch.prompt_llm_token_count
    assert totals.output_tokens == tch.completion_llm_token_count


def test_openai_reported_usage_equal_and_cache_only_here(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker, openai_server: FakeOpenAI
) -> None:
    tch, cm = counting()
    llm = OpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        max_retries=0,
        http_client=openai_server.client(),
        callback_manager=cm,
    )
    llm.chat(MSGS)
    llm.chat(MSGS)
    totals = li_tracker.snapshot().totals
    assert totals.input_tokens == tch.prompt_llm_token_count == 2400
    assert totals.output_tokens == tch.completion_llm_token_count == 40
    assert totals.cache_read_tokens == 2048  # TokenCountingHandler has no notion of it
    assert totals.cost_usd is not None  # nor of cost


def test_chat_on_mockllm_counted_twice_by_token_counting_handler(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    """Documents TokenCountingHandler's double count: MockLLM.chat calls complete,
    both fire an LLM event, and both are counted. agentmeter counts the one call."""
    tch, cm = counting()
    llm = MockLLM(callback_manager=cm)
    llm.chat(MSGS)
    totals = li_tracker.snapshot().totals
    assert len(tch.llm_token_counts) == 2  # wrong: one model call
    assert totals.llm_calls == 1
    # The inner complete ends first, so it is TokenCountingHandler's first event;
    # agentmeter's one call is that call, the one that reached the model.
    complete_event = tch.llm_token_counts[0]
    assert complete_event.prompt == llm.messages_to_prompt(MSGS)
    assert totals.input_tokens == complete_event.prompt_token_count
    assert totals.output_tokens == complete_event.completion_token_count
    # ...and its total is less than TokenCountingHandler's inflated one.
    assert totals.input_tokens + totals.output_tokens < tch.total_llm_token_count


def test_vector_index_embeddings_and_query(
    inst: ami.Instrumentor, li_tracker: agentmeter.Tracker
) -> None:
    tch, cm = counting()
    Settings.callback_manager = cm  # the index hands its own manager to the embed model
    embed = MockEmbedding(embed_dim=8)
    llm = MockLLM()
    docs = [Document(text=f"Document {i}: agentmeter meters tokens and tools.") for i in range(6)]
    with li_tracker.meter("rag", session_id="rag-1") as scope:
        index = VectorStoreIndex.from_documents(docs, embed_model=embed)
        engine = index.as_query_engine(llm=llm, similarity_top_k=2)
        response = engine.query("What does agentmeter meter?")
    assert "agentmeter" in str(response)
    usage = scope.usage
    assert usage.embedding_calls == 2  # the documents' batch(es) and the query
    assert usage.embedding_tokens == tch.total_embedding_token_count  # same text, same tokenizer
    assert usage.estimated_calls >= usage.embedding_calls  # MockEmbedding reports nothing
    # The query engine's LLM call: counted once here (TokenCountingHandler: more).
    assert usage.llm_calls == 1
    assert len(tch.llm_token_counts) >= usage.llm_calls
    assert li_tracker.snapshot().by_model["MockEmbedding"].embedding_calls == usage.embedding_calls
