"""The caches the engine may use, as small protocols its callers implement.

The engine never opens a database: the orchestration floor (lampbox.lab) passes in objects
that keep rankings, embeddings and generations (the store's adapters in
lampbox.store.caches), or nothing for an in-memory run. Each is keyed by content, so what
the engine gets back is exactly what it would have computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from lampbox.engine.tasks import TaskSpec
    from lampbox.engine.types import Question, Ranking


def text_hash(text: str) -> str:
    """The embedding cache's key for a text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class RankingCache(Protocol):
    """Rankings by (retriever key, task, scheme, question); served only while the question's
    query and profile are unchanged."""

    def load(
        self, retriever_key: str, task: TaskSpec, scheme: str, questions: Sequence[Question]
    ) -> dict[str, Ranking]:
        """The stored rankings of these questions that still match them (by question id)."""
        ...

    def save(
        self,
        retriever: tuple[str, str, Mapping[str, object]],
        task: TaskSpec,
        scheme: str,
        questions: Sequence[Question],
        rankings: Sequence[Ranking],
    ) -> None:
        """Keep new rankings; `retriever` is (key, name, options)."""
        ...


class EmbeddingCache(Protocol):
    """Vectors by (encoder key, text hash)."""

    def load(self, model_key: str, hashes: Iterable[str]) -> dict[str, np.ndarray]: ...

    def save(self, model_key: str, hashes: Sequence[str], vectors: np.ndarray) -> None: ...


class GenerationCache(Protocol):
    """Outputs by generation cache key (model identity, parameters, request)."""

    def load(self, keys: Sequence[str]) -> dict[str, str]: ...

    def save(self, model: str, backend: str, outputs: Mapping[str, str]) -> None: ...
