"""Runs, predictions, per-user scores, benches and the generation cache in the store.

A run is keyed by the hash of its frozen RunSpec, so the same configuration always maps to the
same rows: a finished run is served from here, an interrupted one resumes from the generation
cache (which is written batch by batch as outputs arrive).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lampbox.engine.types import Prediction, UserScore
from lampbox.store.core import Store


@dataclass(frozen=True)
class StoredRun:
    run_key: str
    label: str
    spec: Mapping[str, Any]
    status: str
    metrics: Mapping[str, float]
    n_questions: int
    error: str | None
    predictions_path: str | None
    created_at: Any
    finished_at: Any
    task_hash: str | None = None  # the task definition's fingerprint (None: made before m005)
    kind: str = "run"  # run (benchmark data) | whatif (a what-if saved from the TUI)


# -- generation cache ------------------------------------------------------------------------


def cached_generations(store: Store, keys: Sequence[str]) -> dict[str, str]:
    """The cached outputs among `keys`."""
    if not keys:
        return {}
    rows = store.cursor().execute(
        "SELECT cache_key, output FROM generation_cache WHERE cache_key IN (SELECT unnest(?))", [list(keys)]
    ).fetchall()
    return dict(rows)


def cache_generations(store: Store, model: str, backend: str, outputs: Mapping[str, str]) -> None:
    """Keep generated outputs by cache key (committed at once, so a kill loses at most a batch).

    Two threads of one process may cache the same key at once (the TUI's panes on two models
    that make the same generation: an OPPU set's user without an adapter beside its task
    adapter). Under DuckDB's optimistic concurrency both transactions would see no row and one
    would fail on the duplicate key, at its insert or at its commit, for as long as the other
    had not committed (retrying at once lost that race too). So the writes of one process take
    turns: the second then sees the first's row and keeps it. Other processes cannot write the
    file while this one holds it (DuckDB's file lock)."""
    if not outputs:
        return
    with _CACHE_WRITES, store.transaction() as cursor:
        cursor.execute(
            """
            INSERT INTO generation_cache (cache_key, model, backend, output)
            SELECT n.k, ?, ?, n.o FROM (SELECT unnest(?) AS k, unnest(?) AS o) n
             WHERE n.k NOT IN (SELECT cache_key FROM generation_cache)
            """,
            [model, backend, list(outputs), list(outputs.values())],
        )


_CACHE_WRITES = threading.Lock()  # one cache write at a time in this process (see above)


# -- runs ------------------------------------------------------------------------------------


def run_status(store: Store, run_key: str) -> str | None:
    row = store.cursor().execute("SELECT status FROM runs WHERE run_key = ?", [run_key]).fetchone()
    return None if row is None else str(row[0])


def start_run(
    store: Store,
    run_key: str,
    label: str,
    spec: Mapping[str, Any],
    n_questions: int,
    task_hash: str | None = None,
    kind: str = "run",
) -> None:
    """Record that a run started (or restarted): status 'running', with the fingerprint of the
    task definition it runs under and its kind ('run', or 'whatif' for a saved what-if)."""
    with store.transaction() as cursor:
        cursor.execute("DELETE FROM runs WHERE run_key = ?", [run_key])
        cursor.execute(
            """
            INSERT INTO runs (run_key, label, task, scheme, split, spec, status, n_questions, task_hash, kind)
            VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)
            """,
            [
                run_key, label, spec["task"], spec["scheme"], spec["split"], json.dumps(spec), n_questions,
                task_hash, kind,
            ],
        )  # fmt: skip


def record_progress(store: Store, run_key: str, phase: str, done: int) -> None:
    """A running run's phase (rank, generate, score) and questions done, for other readers."""
    with store.transaction() as cursor:
        cursor.execute(
            "UPDATE runs SET progress_phase = ?, progress_done = ? WHERE run_key = ?", [phase, done, run_key]
        )


def run_progress(store: Store, run_key: str) -> tuple[str, int] | None:
    """The last recorded (phase, done) of a run (None before any)."""
    row = store.cursor().execute(
        "SELECT progress_phase, progress_done FROM runs WHERE run_key = ?", [run_key]
    ).fetchone()
    return None if row is None or row[0] is None else (str(row[0]), int(row[1] or 0))


def fail_run(store: Store, run_key: str, status: str, error: str) -> None:
    """Mark a run failed or cancelled (its cached generations stay, for a later resume)."""
    store.writable()
    store.cursor().execute(
        "UPDATE runs SET status = ?, error = ?, finished_at = current_timestamp WHERE run_key = ?",
        [status, error, run_key],
    )


def finish_run(
    store: Store,
    run_key: str,
    metrics: Mapping[str, float],
    predictions: Sequence[Prediction],
    user_scores: Iterable[UserScore],
    predictions_path: str | None,
) -> None:
    """Write a run's predictions and per-user scores and mark it finished, all at once."""
    with store.transaction() as cursor:
        cursor.execute("DELETE FROM predictions WHERE run_key = ?", [run_key])
        cursor.execute("DELETE FROM user_scores WHERE run_key = ?", [run_key])
        if predictions:
            columns: dict[str, list[Any]] = {
                name: []
                for name in (
                    "question_id", "user_id", "position", "prompt", "item_keys", "item_ids", "kept",
                    "prompt_tokens", "raw_output", "output", "gold", "scores", "main_score",
                )
            }  # fmt: skip
            for position, prediction in enumerate(predictions):
                columns["question_id"].append(prediction.question_id)
                columns["user_id"].append(prediction.user_id)
                columns["position"].append(position)
                columns["prompt"].append(prediction.prompt)
                columns["item_keys"].append(list(prediction.item_keys))
                columns["item_ids"].append(list(prediction.item_ids))
                columns["kept"].append(json.dumps(prediction.kept))
                columns["prompt_tokens"].append(prediction.prompt_tokens)
                columns["raw_output"].append(prediction.raw_output)
                columns["output"].append(prediction.output)
                columns["gold"].append(prediction.gold)
                columns["scores"].append(json.dumps(prediction.scores))
                columns["main_score"].append(prediction.main_score)
            cursor.execute(
                """
                INSERT INTO predictions (run_key, question_id, user_id, position, prompt, item_keys,
                    item_ids, kept, prompt_tokens, raw_output, output, gold, scores, main_score)
                SELECT ?, unnest(?), unnest(?), unnest(?), unnest(?::VARCHAR[]), unnest(?::VARCHAR[][]),
                       unnest(?::VARCHAR[][]), unnest(?), unnest(?::INTEGER[]), unnest(?), unnest(?),
                       unnest(?::VARCHAR[]), unnest(?), unnest(?::DOUBLE[])
                """,
                [run_key, *columns.values()],
            )
        rows = list(user_scores)
        if rows:
            cursor.execute(
                """
                INSERT INTO user_scores (run_key, user_id, n_questions, profile_size, metrics, main_score)
                SELECT ?, unnest(?), unnest(?), unnest(?), unnest(?), unnest(?::DOUBLE[])
                """,
                [
                    run_key,
                    [row.user_id for row in rows],
                    [row.n_questions for row in rows],
                    [row.profile_size for row in rows],
                    [json.dumps(dict(row.metrics)) for row in rows],
                    [row.main_score for row in rows],
                ],
            )
        cursor.execute(
            """
            UPDATE runs SET status = 'finished', metrics = ?, predictions_path = ?, error = NULL,
                   finished_at = current_timestamp WHERE run_key = ?
            """,
            [json.dumps(metrics), predictions_path, run_key],
        )


def _run_from_row(row: Sequence[Any]) -> StoredRun:
    run_key, label, spec, status, metrics, n_questions, error, path, created, finished, task_hash, kind = row
    return StoredRun(
        run_key, label, json.loads(spec), status, json.loads(metrics) if metrics else {}, n_questions, error, path,
        created, finished, task_hash, kind or "run",
    )  # fmt: skip


_RUN_COLUMNS = (
    "run_key, label, spec, status, metrics, n_questions, error, predictions_path, created_at, finished_at, task_hash, "
    "kind"
)


def get_run(store: Store, run_key: str) -> StoredRun | None:
    row = store.cursor().execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_key = ?", [run_key]).fetchone()
    return None if row is None else _run_from_row(row)


def list_runs(store: Store, task: str | None = None, kind: str | None = "run") -> list[StoredRun]:
    """Runs newest first: benchmark runs by default; kind='whatif' for saved what-ifs, None for all."""
    sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE true"
    params: list[Any] = []
    if task is not None:
        sql += " AND task = ?"
        params.append(task)
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    sql += " ORDER BY created_at DESC"
    return [_run_from_row(row) for row in store.cursor().execute(sql, params).fetchall()]


def run_predictions(store: Store, run_key: str, question_ids: Sequence[str] | None = None) -> list[Prediction]:
    """A run's predictions in question order."""
    sql = (
        "SELECT question_id, user_id, prompt, item_keys, item_ids, kept, prompt_tokens, raw_output, output, "
        "gold, scores, main_score FROM predictions WHERE run_key = ?"
    )
    params: list[Any] = [run_key]
    if question_ids is not None:
        sql += " AND question_id IN (SELECT unnest(?))"
        params.append(list(question_ids))
    sql += " ORDER BY position"
    return [
        Prediction(
            qid, user, prompt, tuple(keys or ()), tuple(ids or ()), json.loads(kept or "{}"), tokens, raw, output,
            gold, json.loads(scores or "{}"), main,
        )  # fmt: skip
        for qid, user, prompt, keys, ids, kept, tokens, raw, output, gold, scores, main in store.cursor()
        .execute(sql, params)
        .fetchall()
    ]


def user_scores(store: Store, run_key: str) -> dict[str, UserScore]:
    """A run's per-user scores by user id."""
    rows = store.cursor().execute(
        "SELECT user_id, n_questions, profile_size, metrics, main_score FROM user_scores WHERE run_key = ?", [run_key]
    ).fetchall()
    return {user: UserScore(user, n, size, json.loads(metrics), main) for user, n, size, metrics, main in rows}


# -- benches ---------------------------------------------------------------------------------


def save_bench(store: Store, bench_key: str, spec: Mapping[str, Any], run_keys: Sequence[tuple[str, str]]) -> None:
    """Record a bench (a grid of runs) and its runs in order: (run_key, role) with role 'baseline' etc."""
    with store.transaction() as cursor:
        cursor.execute("DELETE FROM bench_runs WHERE bench_key = ?", [bench_key])
        cursor.execute("DELETE FROM benches WHERE bench_key = ?", [bench_key])
        cursor.execute(
            "INSERT INTO benches (bench_key, task, scheme, split, spec, status) VALUES (?, ?, ?, ?, ?, 'running')",
            [bench_key, spec["task"], spec["scheme"], spec["split"], json.dumps(spec)],
        )
        for position, (run_key, role) in enumerate(run_keys):
            cursor.execute(
                "INSERT INTO bench_runs (bench_key, run_key, position, role) VALUES (?, ?, ?, ?)",
                [bench_key, run_key, position, role],
            )


def end_bench(store: Store, bench_key: str, status: str, error: str | None = None) -> None:
    """Record how a bench ended: finished, failed or cancelled (with the error that stopped it)."""
    store.writable()
    store.cursor().execute("UPDATE benches SET status = ?, error = ? WHERE bench_key = ?", [status, error, bench_key])


def bench_status(store: Store, bench_key: str) -> tuple[str | None, str | None]:
    """(status, error) of a bench: status None for a bench recorded before statuses were."""
    row = store.cursor().execute("SELECT status, error FROM benches WHERE bench_key = ?", [bench_key]).fetchone()
    return (None, None) if row is None else (row[0], row[1])


def list_benches(store: Store) -> list[tuple[str, dict[str, Any], Any]]:
    rows = store.cursor().execute("SELECT bench_key, spec, created_at FROM benches ORDER BY created_at DESC").fetchall()
    return [(key, json.loads(spec), created) for key, spec, created in rows]


def bench_size(store: Store, bench_key: str) -> int:
    """How many configurations a bench has (its runs are listed once they start)."""
    row = store.cursor().execute("SELECT count(*) FROM bench_runs WHERE bench_key = ?", [bench_key]).fetchone()
    return int(row[0]) if row else 0


def bench_runs(store: Store, bench_key: str) -> list[tuple[StoredRun, str]]:
    rows = store.cursor().execute(
        f"""
        SELECT {", ".join("r." + column.strip() for column in _RUN_COLUMNS.split(","))}, b.role
          FROM bench_runs b JOIN runs r USING (run_key)
         WHERE b.bench_key = ? ORDER BY b.position
        """,
        [bench_key],
    ).fetchall()
    return [(_run_from_row(row[:-1]), row[-1]) for row in rows]

