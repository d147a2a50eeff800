"""The one place the TUI reaches retrieval.

The rankings panes call only `retriever_names()` and `rank_question()`: they go through the
engine's registry and the orchestration floor's `rank_stored` (which serves rankings stored
in the store and stores new ones), and adapt the result to rows the panes show (item,
score, and each item's ROPG utility when feedback for the question is stored). The TUI holds
no retrieval code of its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from lampbox.engine import retrieval
from lampbox.engine.retrieval.base import Retriever
from lampbox.engine.types import ItemFeedback, ProfileItem, Question
from lampbox.errors import LampboxError
from lampbox.lab.ranking import rank_stored
from lampbox.store import selection
from lampbox.store.core import Store


@dataclass(frozen=True)
class RankedItem:
    """One retrieved profile item and its score."""

    item: ProfileItem
    score: float | None


@dataclass(frozen=True)
class ShownRanking:
    """One retriever's top-k items for one question, as a pane shows them."""

    retriever: str
    items: tuple[RankedItem, ...]
    seconds: float
    note: str = ""
    feedback: ItemFeedback | None = None  # ROPG utilities of the question's items, if stored


_retrievers: dict[str, tuple[Retriever, int | None]] = {}  # name -> (retriever, trained version)
_retrievers_lock = threading.Lock()


def retriever_names() -> list[str]:
    """The retrievers the engine offers, then the trained ones (ropg:NAME)."""
    from lampbox.engine.ropg.retriever import trained_retriever_names

    return list(retrieval.retriever_names()) + trained_retriever_names()


def retriever(name: str) -> Retriever:
    """One retriever per name for the whole session, so models and caches stay warm; a trained
    retriever (ropg:NAME) retrained while the TUI is open is loaded again (its new encoder)."""
    from lampbox.engine.ropg.retriever import trained_version

    kind, _, trained = name.partition(":")
    version = trained_version(trained) if kind == "ropg" and trained else None
    with _retrievers_lock:
        held = _retrievers.get(name)
        if held is None or held[1] != version:
            held = _retrievers[name] = (retrieval.create_retriever(name), version)
        return held[0]


def rank_question(
    store: Store | None, question: Question, name: str, k: int, should_cancel: Any = None
) -> ShownRanking:
    """Rank the question's profile with one retriever (stored rankings are reused); top k."""
    started = time.perf_counter()
    task = store.task(question.task) if store is not None else None
    if task is None:
        raise LampboxError("ranking needs the store to know the task")
    ranking = rank_stored(store, task, [question], retriever(name), should_cancel=should_cancel)[0]
    by_key = {item.key: item for item in question.profile}
    scores = dict(zip(ranking.item_keys, ranking.scores, strict=False))
    keys = ranking.top_keys(k)
    items = tuple(RankedItem(by_key[key], scores.get(key)) for key in keys if key in by_key)
    note = "" if ranking.context_limit != 0 else "puts no item into the prompt"
    feedback = selection.item_feedback(store, question.task, question.scheme, question.id) if store is not None else None
    return ShownRanking(name, items, time.perf_counter() - started, note, feedback)
