"""Store functions for retrieval: retrievers, rankings per (retriever, question), embeddings.

Rankings are served again only when their fingerprint (query, profile and the task's
document fields) still matches the question; embeddings are keyed by (model identity, hash
of the exact text), so every question, run and the TUI share them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question, Ranking

if TYPE_CHECKING:
    from lampbox.store.core import Store


def ranking_fingerprint(task: TaskSpec, question: Question) -> str:
    """What a stored ranking was computed from: query, profile keys in order, document fields."""
    digest = _task_digest(tuple(task.document), task.query_after).copy()
    digest.update(b"\0" + question.input.encode("utf-8") + b"\0")
    digest.update("\x1f".join(item.key for item in question.profile).encode("utf-8"))
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _task_digest(document: tuple[str, ...], query_after: Any) -> Any:
    """The fingerprint's task part, hashed once per task (callers copy it)."""
    return hashlib.blake2b(json.dumps([list(document), query_after]).encode(), digest_size=16)


# -- retrievers ------------------------------------------------------------------------------


def save_retriever(store: Store, key: str, name: str, options: Mapping[str, Any]) -> None:
    store.writable()
    cursor = store.cursor()
    cursor.execute(
        "INSERT INTO retrievers (retriever_key, name, options) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [key, name, json.dumps(dict(options), sort_keys=True, default=str)],
    )


# -- rankings --------------------------------------------------------------------------------


def load_rankings(
    store: Store, retriever_key: str, task: TaskSpec, scheme: str, questions: Sequence[Question]
) -> dict[str, Ranking]:
    """Stored rankings of these questions whose fingerprint still matches (by question id)."""
    if not questions:
        return {}
    rows = (
        store.cursor()
        .execute(
            """
            SELECT question_id, fingerprint, item_keys, item_ids, scores, context_limit
              FROM rankings
             WHERE retriever_key = ? AND task = ? AND scheme = ?
               AND question_id IN (SELECT unnest(?))
            """,
            [retriever_key, task.name, scheme, [q.id for q in questions]],
        )
        .fetchall()
    )
    wanted = {q.id: ranking_fingerprint(task, q) for q in questions}
    found: dict[str, Ranking] = {}
    for qid, fingerprint, keys, ids, scores, limit in rows:
        if wanted.get(qid) == fingerprint:
            found[qid] = Ranking(qid, retriever_key, tuple(keys), tuple(ids), tuple(scores), limit)
    return found


def save_rankings(
    store: Store,
    task: TaskSpec,
    scheme: str,
    questions: Sequence[Question],
    rankings: Sequence[Ranking],
) -> None:
    """Store (replace) the rankings of these questions, all in one transaction.

    The items go to DuckDB as flat numpy columns (one row per ranked item) that SQL folds into
    the list columns: about twice as fast as binding nested Python lists.
    """
    if not rankings:
        return
    by_id = {q.id: q for q in questions}
    with store.transaction() as cursor:
        for retriever_key in sorted({r.retriever_key for r in rankings}):
            batch = [r for r in rankings if r.retriever_key == retriever_key]
            lengths = np.fromiter(map(len, (r.item_keys for r in batch)), dtype=np.int64)
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            items = {
                "q": np.repeat(np.arange(len(batch)), lengths),
                "pos": np.arange(int(lengths.sum())) - starts,
                "item_key": _objects([key for r in batch for key in r.item_keys]),
                "item_id": _objects([item for r in batch for item in r.item_ids]),
                "score": np.fromiter(
                    (score for r in batch for score in r.scores), dtype=np.float64
                ),
            }
            heads = {
                "q": np.arange(len(batch)),
                "question_id": _objects([r.question_id for r in batch]),
                "fingerprint": _objects(
                    [ranking_fingerprint(task, by_id[r.question_id]) for r in batch]
                ),
                "context_limit": np.array(
                    [-1 if r.context_limit is None else r.context_limit for r in batch],
                    dtype=np.int64,
                ),
            }
            with _registered(
                cursor, lampbox_new_items=items, lampbox_new_rankings=heads
            ):
                cursor.execute(
                    "DELETE FROM rankings WHERE retriever_key = ? AND task = ? AND scheme = ? "
                    "AND question_id IN (SELECT question_id FROM lampbox_new_rankings)",
                    [retriever_key, task.name, scheme],
                )
                cursor.execute(
                    """
                    INSERT INTO rankings (retriever_key, task, scheme, question_id, fingerprint,
                                          item_keys, item_ids, scores, context_limit)
                    SELECT ?, ?, ?, h.question_id, h.fingerprint,
                           coalesce(l.item_keys, []::VARCHAR[]),
                           coalesce(l.item_ids, []::VARCHAR[]),
                           coalesce(l.scores, []::DOUBLE[]),
                           nullif(h.context_limit, -1)
                      FROM lampbox_new_rankings h
                      LEFT JOIN (SELECT q, list(item_key ORDER BY pos) AS item_keys,
                                        list(item_id ORDER BY pos) AS item_ids,
                                        list(score ORDER BY pos) AS scores
                                   FROM lampbox_new_items GROUP BY q) l USING (q)
                     ORDER BY h.q
                    """,
                    [retriever_key, task.name, scheme],
                )


@contextlib.contextmanager
def _registered(cursor: Any, **tables: dict[str, np.ndarray]) -> Iterator[None]:
    """numpy columns visible to SQL as tables (by these names) for the duration of a block."""
    for name, columns in tables.items():
        cursor.register(name, columns)
    try:
        yield
    finally:
        for name in tables:
            cursor.unregister(name)


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-d object array (np.array would make a 2-d one from equal-length tuples)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


# -- embeddings ------------------------------------------------------------------------------


def load_embeddings(store: Store, model_key: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
    """The stored vectors of these text hashes for one model (missing ones are left out)."""
    wanted = list(dict.fromkeys(hashes))
    if not wanted:
        return {}
    result = (
        store.cursor()
        .execute(
            "SELECT text_hash, vector FROM embeddings "
            "WHERE model_key = ? AND text_hash IN (SELECT unnest(?))",
            [model_key, wanted],
        )
        .fetchnumpy()
    )
    return {
        str(h): np.asarray(v, dtype=np.float32)
        for h, v in zip(result["text_hash"], result["vector"], strict=False)
    }


def save_embeddings(
    store: Store, model_key: str, hashes: Sequence[str], vectors: np.ndarray
) -> None:
    """Store new vectors (rows of `vectors`, one per hash); hashes already stored are skipped."""
    if len(hashes) == 0:
        return
    matrix = np.asarray(vectors, dtype=np.float32)
    # The rows go to DuckDB as numpy arrays (an object column it reads as lists): about 5x
    # faster than binding them as nested Python lists of floats.
    new = {"h": _objects(list(hashes)), "v": _objects(list(matrix))}
    with store.transaction() as cursor, _registered(cursor, lampbox_new_embeddings=new):
        cursor.execute(
            """
            INSERT INTO embeddings (model_key, text_hash, dim, vector)
            SELECT ?, h, ?, v FROM lampbox_new_embeddings new
             WHERE NOT EXISTS (SELECT 1 FROM embeddings e
                                WHERE e.model_key = ? AND e.text_hash = new.h)
            """,
            [model_key, int(matrix.shape[1]), model_key],
        )


def count_embeddings(store: Store, model_key: str | None = None) -> int:
    sql, params = "SELECT count(*) FROM embeddings", []
    if model_key is not None:
        sql += " WHERE model_key = ?"
        params.append(model_key)
    row = store.cursor().execute(sql, params).fetchone()
    return int(row[0]) if row else 0
