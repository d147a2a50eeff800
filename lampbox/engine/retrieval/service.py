"""Rankings for a set of questions: served from the store, the missing ones computed in batches.

Also the official-format outputs: a rankings file like rank_profiles.py writes (question id ->
profile item ids, best first) and a questions file whose profiles are sorted by a ranking,
like merge_with_rank.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
    store: Any,
    task: TaskSpec,
    questions: Sequence[Question],
    retriever: Retriever,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    recompute: bool = False,
    batch_size: int | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[Ranking]:
    """One Ranking per question, in order. Stored rankings are reused (unless `recompute`);
    the rest are computed in batches and stored batch by batch, so a cancel keeps the work
    done. Questions with an empty profile get an empty ranking and one warning.
    `store` may be None: nothing is read or written (an in-memory run).
    """
    from lampbox.store.retrieval_store import load_rankings, save_rankings, save_retriever

    scheme = questions[0].scheme if questions else ""
    empty = [q for q in questions if not q.profile]
    if empty and on_warning:
        shown = ", ".join(q.id for q in empty[:3]) + (", ..." if len(empty) > 3 else "")
        on_warning(
            f"{len(empty)} question(s) have an empty profile; nothing to rank for them ({shown})"
        )
    found: dict[str, Ranking] = {}
    if store is not None and not recompute:
        found = load_rankings(
            store, retriever.key, task, scheme, [q for q in questions if q.profile]
        )
    for question in empty:
        found[question.id] = Ranking(
            question.id, retriever.key, (), (), (), None if retriever.selects_context else 0
        )
    todo = [q for q in questions if q.id not in found]
    total = len(questions)
    done = total - len(todo)
    if on_progress:
        on_progress(done, total)
    if todo and store is not None:
        save_retriever(store, retriever.key, retriever.name, retriever.options)
    size = batch_size or retriever.preferred_batch_size
    context = RetrievalContext(store=store, should_cancel=should_cancel)
    for start in range(0, len(todo), size):
        if should_cancel and should_cancel():
            raise RetrievalCancelled(
                f"ranking with {retriever.key} cancelled after {done} of {total}"
            )
        batch = todo[start : start + size]
        rankings = retriever.rank(task, batch, context)
        if store is not None:
            save_rankings(store, task, scheme, batch, rankings)
        found.update((r.question_id, r) for r in rankings)
        done += len(batch)
        if on_progress:
            on_progress(done, total)
    return [found[q.id] for q in questions]


def rankings_file_data(rankings: Sequence[Ranking]) -> dict[str, list[str]]:
    """rank_profiles.py's output: question id -> profile item ids, best first."""
    return {r.question_id: list(r.item_ids) for r in rankings}


def write_rankings_file(path: str | Path, rankings: Sequence[Ranking]) -> None:
    Path(path).write_text(json.dumps(rankings_file_data(rankings)), encoding="utf-8")


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
