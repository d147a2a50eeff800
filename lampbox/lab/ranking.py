"""Ranking with the store's caches: stored rankings and embeddings are reused, new ones kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lampbox.engine.retrieval.base import CancelCheck, ProgressCallback, Retriever
from lampbox.engine.retrieval.service import rank_questions
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question, Ranking
from lampbox.store.caches import StoreEmbeddingCache, StoreRankingCache

if TYPE_CHECKING:
    from lampbox.store.core import Store


def rank_stored(
    store: Store | None,
    task: TaskSpec,
    questions: Sequence[Question],
    retriever: Retriever,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    recompute: bool = False,
    batch_size: int | None = None,
    on_warning: Callable[[str], None] | None = None,
    keep_rankings: bool = True,
) -> list[Ranking]:
    """The engine's rank_questions with the store as its ranking and embedding cache (or no
    cache at all when `store` is None). With keep_rankings off, rankings are neither read from
    nor kept in the store (a what-if's edited input is not the stored question's query)."""
    return rank_questions(
        task,
        questions,
        retriever,
        rankings=None if store is None or not keep_rankings else StoreRankingCache(store),
        embeddings=None if store is None else StoreEmbeddingCache(store),
        on_progress=on_progress,
        should_cancel=should_cancel,
        recompute=recompute,
        batch_size=batch_size,
        on_warning=on_warning,
    )
