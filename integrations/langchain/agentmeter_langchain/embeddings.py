"""``MeteredEmbeddings``: LangChain embeddings fire no callbacks, so wrap them.

The wrapper is itself an ``Embeddings`` (use it wherever the wrapped one was
used: vector stores, retrievers) and records one embedding call per
``embed_documents`` / ``embed_query`` (sync and async), as an
``agentmeter.instrumentation`` ``EmbeddingCall`` in flight. Tokens are counted
exactly when a tokenizer knows the model (a ``token_counter`` you pass, else
tiktoken for OpenAI models when it is installed and its encoding is on this
machine), otherwise estimated (~4 characters per token) and recorded with
``estimated=True``. The embedding APIs' own usage is not exposed by LangChain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from langchain_core.embeddings import Embeddings

import agentmeter
from agentmeter.instrumentation import (
    EmbeddingCall,
    estimate_tokens,
    guarded,
    has_tokenizer,
    start_embedding,
)

__all__ = ["MeteredEmbeddings"]

A = TypeVar("A")
R = TypeVar("R")


def _model_of(embeddings: Any) -> str:
    for attr in ("model", "model_name", "deployment", "model_id"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__


def _provider_of(embeddings: Any) -> str | None:
    module = type(embeddings).__module__ or ""
    if module.startswith("langchain_openai"):
        return "azure" if "Azure" in type(embeddings).__name__ else "openai"
    if module.startswith("langchain_"):
        return module.split(".", 1)[0].removeprefix("langchain_") or None
    return None


class MeteredEmbeddings(Embeddings):
    """Meter any LangChain ``Embeddings``: tokens, latency, failures and budgets.

    Example::

        from langchain_openai import OpenAIEmbeddings
        emb = MeteredEmbeddings(OpenAIEmbeddings(model="text-embedding-3-small"))
        vectors = emb.embed_documents(["a", "b"])

    Args:
        embeddings: The embeddings to wrap.
        tracker: Tracker to record into (default: ``agentmeter.get_tracker()``).
        model: Model name to record (default: the wrapped object's ``model``).
        provider: Provider for pricing (default: guessed from the wrapped class).
        session_id: Session to bill (default: the enclosing ``meter()`` scope's).
        agent_id: Agent to attribute (default: the enclosing scope's).
        customer_id: Customer to bill (default: the enclosing scope's).
        enforce_budgets: Check the budget before each call (raises ``BudgetExceeded``).
        token_counter: Counts one text's tokens exactly (e.g. the model's own
            tokenizer); default: tiktoken where it knows the model, else estimates.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        tracker: agentmeter.Tracker | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        customer_id: str | None = None,
        enforce_budgets: bool = True,
        token_counter: Callable[[str], int] | None = None,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            raise TypeError(
                f"embeddings must be a langchain_core Embeddings, got {type(embeddings).__name__}"
            )
        if tracker is not None and not isinstance(tracker, agentmeter.Tracker):
            raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
        if token_counter is not None and not callable(token_counter):
            raise TypeError("token_counter must be a callable taking a str, or None")
        self.embeddings = embeddings
        self.tracker = tracker if tracker is not None else agentmeter.get_tracker()
        self.model = model or _model_of(embeddings)
        self.provider = provider if provider is not None else _provider_of(embeddings)
        self.session_id = session_id
        self.agent_id = agent_id
        self.customer_id = customer_id
        self.enforce_budgets = enforce_budgets
        self.token_counter = token_counter

    def __getattr__(self, name: str) -> Any:
        # Anything else (e.g. ``dimensions``) is the wrapped object's.
        if name == "embeddings":
            raise AttributeError(name)
        return getattr(self.embeddings, name)

    def __repr__(self) -> str:
        return f"MeteredEmbeddings({self.embeddings!r})"

    # ----------------------------------------------------------- the calls
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents, recording one embedding call."""
        return self._metered(texts, self.embeddings.embed_documents, texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed a query, recording one embedding call."""
        return self._metered([text], self.embeddings.embed_query, text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`."""
        return await self._ametered(texts, self.embeddings.aembed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`."""
        return await self._ametered([text], self.embeddings.aembed_query, text)

    def _metered(self, texts: list[str], embed: Callable[[A], R], arg: A) -> R:
        call = self._start(texts)
        try:
            result = embed(arg)
        except BaseException as exc:
            if call is not None:
                call.fail(exc)
            raise
        self._finish(call, texts)
        return result

    async def _ametered(self, texts: list[str], embed: Callable[[A], Awaitable[R]], arg: A) -> R:
        call = self._start(texts)
        try:
            result = await embed(arg)
        except BaseException as exc:
            if call is not None:
                call.fail(exc)
            raise
        self._finish(call, texts)
        return result

    # ------------------------------------------------------------- helpers
    def _start(self, texts: Sequence[str]) -> EmbeddingCall | None:
        """Start the call in flight: reserve its tokens against the budget (may raise)."""
        with _GUARD:
            return start_embedding(
                self.model,
                provider=self.provider,
                texts=texts,
                tracker=self.tracker,
                session_id=self.session_id,
                agent_id=self.agent_id,
                customer_id=self.customer_id,
                check_budget=self.enforce_budgets,
            )
        return None

    def _finish(self, call: EmbeddingCall | None, texts: Sequence[str]) -> None:
        if call is None:
            return
        tokens = None
        with _GUARD:
            tokens = self._count(texts)
        call.finish(tokens)  # None: the call estimates them (flagged estimated)

    def _count(self, texts: Sequence[str]) -> int | None:
        """The texts' exact token count, or ``None`` when no tokenizer knows the model."""
        counter = self.token_counter
        if counter is not None:
            n = sum(counter(t) for t in texts)
            return n if n.__class__ is int and n >= 0 else None
        if not has_tokenizer(self.model):
            return None
        return sum(estimate_tokens(t, self.model) for t in texts)


_GUARD = guarded("MeteredEmbeddings")
