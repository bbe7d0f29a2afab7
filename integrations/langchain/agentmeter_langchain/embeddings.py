"""``MeteredEmbeddings``: LangChain embeddings fire no callbacks, so wrap them.

The wrapper is itself an ``Embeddings`` (use it wherever the wrapped one was
used: vector stores, retrievers) and records one embedding call per
``embed_documents`` / ``embed_query`` (sync and async). Tokens are counted with
tiktoken for OpenAI models when it is installed and its encoding is available,
otherwise estimated (~4 characters per token) and recorded with
``estimated=True``. The embedding APIs' own usage is not exposed by LangChain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

import agentmeter
from agentmeter import BudgetExceeded
from agentmeter._guard import swallow

from . import _tokens

__all__ = ["MeteredEmbeddings"]


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
        enforce_budgets: Check the budget before each call (raises ``BudgetExceeded``).
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
        enforce_budgets: bool = True,
    ) -> None:
        if not isinstance(embeddings, Embeddings):
            raise TypeError(
                f"embeddings must be a langchain_core Embeddings, got {type(embeddings).__name__}"
            )
        if tracker is not None and not isinstance(tracker, agentmeter.Tracker):
            raise TypeError(f"tracker must be an agentmeter.Tracker, got {type(tracker).__name__}")
        self.embeddings = embeddings
        self.tracker = tracker if tracker is not None else agentmeter.get_tracker()
        self.model = model or _model_of(embeddings)
        self.provider = provider if provider is not None else _provider_of(embeddings)
        self.session_id = session_id
        self.agent_id = agent_id
        self.enforce_budgets = enforce_budgets

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
        call = self._before(texts)
        try:
            result = self.embeddings.embed_documents(texts)
        except BaseException as exc:
            self._after(call, exc)
            raise
        self._after(call, None)
        return result

    def embed_query(self, text: str) -> list[float]:
        """Embed a query, recording one embedding call."""
        call = self._before([text])
        try:
            result = self.embeddings.embed_query(text)
        except BaseException as exc:
            self._after(call, exc)
            raise
        self._after(call, None)
        return result

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`."""
        call = self._before(texts)
        try:
            result = await self.embeddings.aembed_documents(texts)
        except BaseException as exc:
            self._after(call, exc)
            raise
        self._after(call, None)
        return result

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`."""
        call = self._before([text])
        try:
            result = await self.embeddings.aembed_query(text)
        except BaseException as exc:
            self._after(call, exc)
            raise
        self._after(call, None)
        return result

    # ------------------------------------------------------------- helpers
    def _before(self, texts: Sequence[str]) -> tuple[str, int, bool, float] | None:
        """Count the tokens and reserve them against the budget (may raise)."""
        try:
            tracker = self.tracker
            tokens, estimated = _tokens.count_texts(texts, self.model)
            call_id = tracker.new_call_id()
            if self.enforce_budgets:
                tracker.check_budget(
                    tokens,
                    kind="embedding",
                    model=self.model,
                    provider=self.provider,
                    call_id=call_id,
                    session_id=self.session_id,
                )
            return call_id, tokens, estimated, time.perf_counter()
        except BudgetExceeded:
            raise
        except Exception as exc:
            swallow(exc, "MeteredEmbeddings")
            return None

    def _after(self, call: tuple[str, int, bool, float] | None, exc: BaseException | None) -> None:
        if call is None:
            return
        call_id, tokens, estimated, t0 = call
        try:
            self.tracker.record_embedding(
                self.model,
                tokens if exc is None else 0,  # a failed request is not billed
                provider=self.provider,
                latency_ms=(time.perf_counter() - t0) * 1000.0,
                cost_usd=None,
                call_id=call_id,
                estimated=estimated if exc is None else False,
                session_id=self.session_id,
                agent_id=self.agent_id,
                ok=exc is None,
                error=None if exc is None else type(exc).__name__,
            )
        except Exception as err:
            swallow(err, "MeteredEmbeddings")
