"""Retrieval: one Retriever protocol; bm25, bm25-fast, dense, recency, random and none.

Retrievers load lazily by name (`create_retriever`); `rank_questions` serves rankings from a
ranking cache and computes only the missing ones. Nothing here imports torch until a dense
model is used.
"""

from lampbox.engine.retrieval.base import (
    BaseRetriever,
    Ranking,
    RetrievalCancelled,
    RetrievalContext,
    Retriever,
)
from lampbox.engine.retrieval.registry import (
    create_retriever,
    is_retriever_name,
    known_retriever_names,
    register_retriever,
    register_retriever_prefix,
    retriever_descriptions,
    retriever_names,
    unregister_retriever,
)

__all__ = [
    "BaseRetriever",
    "Ranking",
    "RetrievalCancelled",
    "RetrievalContext",
    "Retriever",
    "create_retriever",
    "is_retriever_name",
    "known_retriever_names",
    "register_retriever_prefix",
    "register_retriever",
    "retriever_descriptions",
    "retriever_names",
    "unregister_retriever",
]
