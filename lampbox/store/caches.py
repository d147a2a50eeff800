"""The store's side of the engine's cache protocols (lampbox.engine.caches).

The orchestration floor hands these to the engine, which then reuses stored rankings,
embeddings and generations without knowing there is a database. Each load and save ends with
`store.idle()`: the engine computes next, so a store that does not hold its lock (the bench's)
gives the file back to readers until the next batch is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question, Ranking
from lampbox.store import retrieval_store, runs

if TYPE_CHECKING:
    from lampbox.store.core import Store


class StoreRankingCache:
    """Rankings kept in the store's `rankings` table (lampbox.engine.caches.RankingCache)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(
        self, retriever_key: str, task: TaskSpec, scheme: str, questions: Sequence[Question]
    ) -> dict[str, Ranking]:
        try:
            return retrieval_store.load_rankings(self.store, retriever_key, task, scheme, questions)
        finally:
            self.store.idle()

    def save(
        self,
        retriever: tuple[str, str, Mapping[str, object]],
        task: TaskSpec,
        scheme: str,
        questions: Sequence[Question],
        rankings: Sequence[Ranking],
    ) -> None:
        key, name, options = retriever
        try:
            retrieval_store.save_retriever(self.store, key, name, options)
            retrieval_store.save_rankings(self.store, task, scheme, questions, rankings)
        finally:
            self.store.idle()


class StoreEmbeddingCache:
    """Vectors kept in the store's `embeddings` table (lampbox.engine.caches.EmbeddingCache)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, model_key: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        try:
            return retrieval_store.load_embeddings(self.store, model_key, hashes)
        finally:
            self.store.idle()

    def save(self, model_key: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        try:
            retrieval_store.save_embeddings(self.store, model_key, hashes, vectors)
        finally:
            self.store.idle()


class StoreGenerationCache:
    """Outputs kept in the store's `generation_cache` table (engine.caches.GenerationCache).

    `idle_after_save=False` is for a caller that gives the file back itself right after each
    save (the run pipeline, whose progress report follows every batch): the batch's outputs
    and its progress line then share one opening of the file instead of two.
    """

    def __init__(self, store: Store, *, idle_after_save: bool = True) -> None:
        self.store = store
        self.idle_after_save = idle_after_save

    def load(self, keys: Sequence[str]) -> dict[str, str]:
        try:
            return runs.cached_generations(self.store, keys)
        finally:
            self.store.idle()

    def save(self, model: str, backend: str, outputs: Mapping[str, str]) -> None:
        try:
            runs.cache_generations(self.store, model, backend, outputs)
        finally:
            if self.idle_after_save:
                self.store.idle()
