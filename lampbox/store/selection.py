"""Store functions for ROPG feedback and RSPG selector probabilities, per question.

`ropg_feedback` holds each candidate item's utility for a question, under the key of what made
it (feedback_key); `rspg_probabilities` holds a selector's probability of each candidate
configuration for a question, under the selector's key. Saving replaces what the same key
stored for the same questions, in one transaction. Reading a question gives the newest
feedback (or selector) stored for it, or the one asked for by key; None when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lampbox.engine.types import (
    Candidate,
    CandidateProbability,
    ItemFeedback,
    ItemUtility,
    PoolAnswer,
    SelectorProbabilities,
)

if TYPE_CHECKING:
    from lampbox.store.core import Store


def save_item_feedback(
    store: Store, task: str, scheme: str, feedback: Sequence[ItemFeedback]
) -> None:
    """Store (replace) the item utilities of these questions, each under its feedback key."""
    rows = [
        [
            entry.feedback_key,
            entry.label,
            task,
            scheme,
            entry.question_id,
            item.item_key,
            item.item_id,
            float(item.utility),
        ]
        for entry in feedback
        for item in entry.items
    ]
    _replace_per_question(
        store, "ropg_feedback", "feedback_key", task, scheme,
        [(entry.feedback_key, entry.question_id) for entry in feedback],
        ["item_key", "item_id", "utility"], rows,
    )  # fmt: skip


def _replace_per_question(
    store: Store,
    table: str,
    key_column: str,
    task: str,
    scheme: str,
    replaced: list[tuple[str, str]],
    columns: list[str],
    rows: list[list[object]],
) -> None:
    """In one transaction, delete the rows of each (key, question id) in `replaced`, then insert
    `rows` (key, label, task, scheme, question_id, then `columns`): the tables have no primary
    key (bulk loads), so this keeps them unique."""
    if not replaced:
        return
    names = [key_column, "label", "task", "scheme", "question_id", *columns]
    with store.transaction() as cursor:
        for key, question_id in replaced:
            cursor.execute(
                f"DELETE FROM {table} WHERE {key_column} = ? AND task = ? AND scheme = ? "
                "AND question_id = ?",
                [key, task, scheme, question_id],
            )
        if rows:
            cursor.executemany(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                rows,
            )


def item_feedback(
    store: Store, task: str, scheme: str, question_id: str, feedback_key: str | None = None
) -> ItemFeedback | None:
    """The question's item utilities: the newest stored, or those of `feedback_key`."""
    rows = (
        store.cursor()
        .execute(
            """
            WITH chosen AS (
                SELECT feedback_key FROM ropg_feedback
                 WHERE task = ? AND scheme = ? AND question_id = ?
                   AND (CAST(? AS VARCHAR) IS NULL OR feedback_key = ?)
                 GROUP BY feedback_key
                 ORDER BY max(created_at) DESC, feedback_key
                 LIMIT 1)
            SELECT f.feedback_key, f.label, f.item_key, f.item_id, f.utility
              FROM ropg_feedback f JOIN chosen USING (feedback_key)
             WHERE f.task = ? AND f.scheme = ? AND f.question_id = ?
             ORDER BY f.utility DESC, f.item_id
            """,
            [task, scheme, question_id, feedback_key, feedback_key, task, scheme, question_id],
        )
        .fetchall()
    )
    if not rows:
        return None
    items = tuple(
        ItemUtility(item_key, item_id, utility) for _, _, item_key, item_id, utility in rows
    )
    return ItemFeedback(question_id, rows[0][0], rows[0][1], items)


def save_selector_probabilities(
    store: Store, task: str, scheme: str, selections: Sequence[SelectorProbabilities]
) -> None:
    """Store (replace) a selector's candidate probabilities for these questions."""
    rows = [
        [
            entry.selector_key,
            entry.label,
            task,
            scheme,
            entry.question_id,
            scored.candidate.retriever,
            scored.candidate.k,
            scored.candidate.method,
            scored.candidate.backend,
            scored.candidate.model,
            float(scored.probability),
        ]  # fmt: skip
        for entry in selections
        for scored in entry.candidates
    ]
    _replace_per_question(
        store, "rspg_probabilities", "selector_key", task, scheme,
        [(entry.selector_key, entry.question_id) for entry in selections],
        ["retriever", "k", "method", "backend", "model", "probability"], rows,
    )  # fmt: skip


def selector_probabilities(
    store: Store, task: str, scheme: str, question_id: str, selector_key: str | None = None
) -> SelectorProbabilities | None:
    """A selector's candidate probabilities for the question: the newest stored, or those of
    `selector_key`; most probable first."""
    rows = (
        store.cursor()
        .execute(
            """
            WITH chosen AS (
                SELECT selector_key FROM rspg_probabilities
                 WHERE task = ? AND scheme = ? AND question_id = ?
                   AND (CAST(? AS VARCHAR) IS NULL OR selector_key = ?)
                 GROUP BY selector_key
                 ORDER BY max(created_at) DESC, selector_key
                 LIMIT 1)
            SELECT p.selector_key, p.label, p.retriever, p.k, p.method, p.backend, p.model,
                   p.probability
              FROM rspg_probabilities p JOIN chosen USING (selector_key)
             WHERE p.task = ? AND p.scheme = ? AND p.question_id = ?
             ORDER BY p.probability DESC, p.retriever, p.k
            """,
            [task, scheme, question_id, selector_key, selector_key, task, scheme, question_id],
        )
        .fetchall()
    )
    if not rows:
        return None
    candidates = tuple(
        CandidateProbability(Candidate(retriever, int(k), method, backend, model), probability)
        for _, _, retriever, k, method, backend, model, probability in rows
    )
    return SelectorProbabilities(question_id, rows[0][0], rows[0][1], candidates)


def selection_answers(store: Store, selector_key: str, question_id: str) -> list[PoolAnswer]:
    """The candidates of a stored RSPG selection (its run's key is the probabilities'
    selector_key) for a question, in its pool's order, each with its stored answer and main
    score; [] when the selection's run does not name its pool."""
    import json

    from lampbox.store import runs as run_store

    row = store.cursor().execute("SELECT spec FROM runs WHERE run_key = ?", [selector_key]).fetchone()
    spec = json.loads(row[0]) if row is not None else {}
    keys, labels = spec.get("pool") or [], spec.get("configurations") or []
    pool_specs = spec.get("pool_specs") or [None] * len(keys)  # a bench's selection names them
    if not len(keys) == len(labels) == len(pool_specs):
        return []
    answers = []
    for key, label, pool_spec in zip(keys, labels, pool_specs, strict=True):
        stored = run_store.get_run(store, key)
        found = run_store.run_predictions(store, key, [question_id]) if stored is not None and stored.status == "finished" else []
        prediction = found[0] if found else None
        answers.append(PoolAnswer(
            str(label), Candidate.from_spec(pool_spec or (stored.spec if stored is not None else {})),
            None if prediction is None else prediction.output, None if prediction is None else prediction.main_score,
        ))  # fmt: skip
    return answers


def stored_item_feedback(
    store: Store, task: str, scheme: str, feedback_key: str, question_ids: Sequence[str]
) -> dict[str, ItemFeedback]:
    """The item utilities stored under `feedback_key` for these questions (those that have any)."""
    if not question_ids:
        return {}
    rows = (
        store.cursor()
        .execute(
            """
            SELECT question_id, label, item_key, item_id, utility
              FROM ropg_feedback
             WHERE feedback_key = ? AND task = ? AND scheme = ?
               AND question_id IN (SELECT UNNEST(CAST(? AS VARCHAR[])))
             ORDER BY question_id, utility DESC, item_id
            """,
            [feedback_key, task, scheme, list(dict.fromkeys(question_ids))],
        )
        .fetchall()
    )
    grouped: dict[str, list[tuple[str, str, str, float]]] = {}
    for question_id, label, item_key, item_id, utility in rows:
        grouped.setdefault(question_id, []).append((label, item_key, item_id, utility))
    return {
        question_id: ItemFeedback(
            question_id,
            feedback_key,
            entries[0][0],
            tuple(
                ItemUtility(item_key, item_id, utility) for _, item_key, item_id, utility in entries
            ),
        )  # fmt: skip
        for question_id, entries in grouped.items()
    }
