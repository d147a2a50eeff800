"""Rankings for a set of questions: served from a ranking cache, the missing ones computed in
batches.

Also the official-format outputs: a rankings file's data like rank_profiles.py writes
(question id -> profile item ids, best first) and a questions file whose profiles are sorted
by a ranking, like merge_with_rank.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lampbox.engine.caches import EmbeddingCache, RankingCache
from lampbox.engine.retrieval.base import (
    CancelCheck,
    ProgressCallback,
    Ranking,
    RetrievalCancelled,
    RetrievalContext,
    Retriever,
)
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question


def rank_questions(
    task: TaskSpec,
    questions: Sequence[Question],
    retriever: Retriever,
    *,
    rankings: RankingCache | None = None,
    embeddings: EmbeddingCache | None = None,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    recompute: bool = False,
    batch_size: int | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[Ranking]:
    """One Ranking per question, in order. Rankings in the `rankings` cache are reused (unless
    `recompute`); the rest are computed in batches and saved batch by batch, so a cancel keeps
    the work done. Questions with an empty profile get an empty ranking and one warning.
    Without caches nothing is read or kept (an in-memory run).
    """
    scheme = questions[0].scheme if questions else ""
    empty = [q for q in questions if not q.profile]
    if empty and on_warning:
        shown = ", ".join(q.id for q in empty[:3]) + (", ..." if len(empty) > 3 else "")
        on_warning(
            f"{len(empty)} question(s) have an empty profile; nothing to rank for them ({shown})"
        )
    found: dict[str, Ranking] = {}
    if rankings is not None and not recompute:
        found = rankings.load(retriever.key, task, scheme, [q for q in questions if q.profile])
    for question in empty:
        found[question.id] = Ranking(
            question.id, retriever.key, (), (), (), None if retriever.selects_context else 0
        )
    todo = [q for q in questions if q.id not in found]
    total = len(questions)
    done = total - len(todo)
    if on_progress:
        on_progress(done, total)
    size = batch_size or retriever.preferred_batch_size
    context = RetrievalContext(embeddings=embeddings, should_cancel=should_cancel)
    for start in range(0, len(todo), size):
        if should_cancel and should_cancel():
            raise RetrievalCancelled(
                f"ranking with {retriever.key} cancelled after {done} of {total}"
            )
        batch = todo[start : start + size]
        computed = retriever.rank(task, batch, context)
        if rankings is not None:
            identity = (retriever.key, retriever.name, retriever.options)
            rankings.save(identity, task, scheme, batch, computed)
        found.update((r.question_id, r) for r in computed)
        done += len(batch)
        if on_progress:
            on_progress(done, total)
    return [found[q.id] for q in questions]


def rankings_file_data(rankings: Sequence[Ranking]) -> dict[str, list[str]]:
    """rank_profiles.py's output: question id -> profile item ids, best first."""
    return {r.question_id: list(r.item_ids) for r in rankings}


def sorted_questions_data(
    questions: Sequence[Question], rankings: Sequence[Ranking], with_output: bool = True
) -> list[dict[str, Any]]:
    """Questions in the official format with each profile sorted by its ranking.

    Like merge_with_rank.py: items not in the ranking are dropped, and the gold goes in
    "output" where it is known.
    """
    by_question = {r.question_id: r for r in rankings}
    data = []
    for question in questions:
        items = {item.key: item for item in question.profile}
        ranking = by_question.get(question.id)
        keys = ranking.item_keys if ranking is not None else tuple(items)
        profile = []
        for key in keys:
            item = items[key]
            entry: dict[str, Any] = {"id": item.id, **dict(item.fields)}
            if item.date is not None:
                entry["date"] = item.date
            profile.append(entry)
        record: dict[str, Any] = {"id": question.id, "input": question.input, "profile": profile}
        if question.user_id:
            record["user_id"] = question.user_id
        if with_output and question.gold is not None:
            record["output"] = question.gold
        data.append(record)
    return data
