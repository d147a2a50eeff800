"""The Store: the only code that talks to DuckDB.

One DuckDB file holds tasks, users, questions, profile items and golds (and, as the method
stack grows, rankings, embeddings, runs, predictions and per-user scores: each added by a
migration). Use one cursor per thread (`Store.cursor()`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from lampbox.engine.tasks import BUILTIN_TASKS, TaskSpec, builtin_task
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import InputFileError, LampboxError, UnknownNameError
from lampbox.paths import default_db_path
from lampbox.store.migrations import migrate


@dataclass(frozen=True)
class DatasetSummary:
    """One (task, scheme, split) as `lampbox data list` shows it."""

    task: str
    scheme: str
    split: str
    users: int
    questions: int
    golds: int
    mean_profile_size: float
    distinct_items: int

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scheme": self.scheme,
            "split": self.split,
            "users": self.users,
            "questions": self.questions,
            "golds": self.golds,
            "mean_profile_size": round(self.mean_profile_size, 2),
            "distinct_items": self.distinct_items,
        }


# Every DuckDB database file has these bytes at offset 8 (after a checksum).
DUCKDB_MAGIC = b"DUCK"
DUCKDB_MAGIC_OFFSET = 8


def check_duckdb_file(path: Path) -> None:
    """Refuse an existing file that is not a DuckDB database. DuckDB opens some other files
    (a .json, a .csv) as an empty in-memory database, so everything written would be lost."""
    try:
        with path.open("rb") as stream:
            header = stream.read(DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC))
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a lampbox store") from None
    except OSError as error:
        raise InputFileError(path, f"cannot read the store ({error.strerror})") from None
    if header[DUCKDB_MAGIC_OFFSET:] == DUCKDB_MAGIC:
        return
    what = "is an empty file, not a DuckDB database" if not header else "is not a DuckDB database"
    raise InputFileError(path, f"{what}; refusing to use it as the store (name a new file or an existing store)")


class Store:
    """A lampbox store: one DuckDB file, migrated to the current schema on open."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        if self.path.exists():
            check_duckdb_file(self.path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise LampboxError(f"{self.path}: no lampbox store here")
        try:
            self._connection = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as error:
            raise LampboxError(f"{self.path}: cannot open the store ({error})") from None
        except duckdb.Error as error:
            raise LampboxError(f"{self.path}: not a lampbox store ({error})") from None
        self._local = threading.local()
        if not read_only:
            migrate(self._connection)

    # -- connections -------------------------------------------------------------------------

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The connection of the thread that opened the store."""
        return self._connection

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's own cursor (DuckDB connections must not be shared across threads)."""
        if threading.current_thread() is threading.main_thread():
            return self._connection
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._connection.cursor()
            self._local.cursor = cursor
        return cursor

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commit at the end, roll back on any error (or interrupt)."""
        cursor = self.cursor()
        cursor.execute("BEGIN TRANSACTION")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks -------------------------------------------------------------------------------

    def task(self, name: str) -> TaskSpec:
        """A built-in task, or a custom one declared in this store."""
        if name in BUILTIN_TASKS:
            return BUILTIN_TASKS[name]
        stored = self.stored_task(name)
        if stored is not None:
            return stored
        try:
            return builtin_task(name)
        except UnknownNameError:
            raise UnknownNameError("task", name, self.task_names()) from None

    def stored_task(self, name: str) -> TaskSpec | None:
        """The definition of a custom task as stored (None if this store has none by that name)."""
        row = self.cursor().execute("SELECT spec FROM tasks WHERE name = ?", [name]).fetchone()
        return None if row is None else TaskSpec.from_stored(json.loads(row[0]))

    def task_names(self) -> list[str]:
        stored = [row[0] for row in self.cursor().execute("SELECT name FROM tasks").fetchall()]
        return sorted(set(BUILTIN_TASKS) | set(stored))

    def save_task(self, spec: TaskSpec, source: str | None = None, cursor: duckdb.DuckDBPyConnection | None = None) -> None:
        cursor = cursor or self.cursor()
        cursor.execute("DELETE FROM tasks WHERE name = ?", [spec.name])
        cursor.execute(
            "INSERT INTO tasks (name, spec, custom, source) VALUES (?, ?, ?, ?)",
            [spec.name, json.dumps(spec.to_json()), spec.custom, source],
        )

    # -- what is stored ----------------------------------------------------------------------

    def datasets(self) -> list[DatasetSummary]:
        rows = self.cursor().execute(
            """
            SELECT q.task, q.scheme, q.split,
                   count(DISTINCT q.user_id), count(*), count(q.gold), avg(q.profile_size),
                   (SELECT count(DISTINCT qi.item_key) FROM question_items qi
                     JOIN questions q2 USING (task, scheme, question_id)
                    WHERE q2.task = q.task AND q2.scheme = q.scheme AND q2.split = q.split)
              FROM questions q
             GROUP BY q.task, q.scheme, q.split
            """
        ).fetchall()
        split_order = {"train": 0, "dev": 1, "test": 2}
        summaries = [
            DatasetSummary(task, scheme, split, users, questions, golds, float(mean or 0.0), items)
            for task, scheme, split, users, questions, golds, mean, items in rows
        ]
        return sorted(summaries, key=lambda s: (s.task, s.scheme, split_order.get(s.split, 9), s.split))

    def schemes(self, task: str, split: str | None = None) -> list[str]:
        """The split schemes (user, time, demo) stored for a task (holding `split`, if given)."""
        sql = "SELECT DISTINCT scheme FROM questions WHERE task = ?"
        params: list[Any] = [task]
        if split is not None:
            sql += " AND split = ?"
            params.append(split)
        order = {"user": 0, "time": 1, "demo": 2}
        return sorted((row[0] for row in self.cursor().execute(sql, params).fetchall()), key=lambda s: (order.get(s, 9), s))

    def resolve_scheme(self, task: str, split: str, scheme: str | None = None) -> str:
        """The scheme to use for (task, split): the one asked for, or the only/first stored."""
        stored = self.schemes(task, split)
        if scheme is not None:
            if scheme not in stored:
                have = ", ".join(stored) or "none"
                raise LampboxError(
                    f"no {task} {split} questions with the {scheme} split in {self.path} (stored: {have}); "
                    f"import them with `lampbox data import` or `lampbox data fetch {task}`"
                )
            return scheme
        if not stored:
            raise LampboxError(
                f"no {task} {split} questions in {self.path}; get them with `lampbox data fetch {task}`, "
                "`lampbox data import PATH`, or try the demo data: `lampbox data demo`"
            )
        return stored[0]

    def count_questions(self, task: str, scheme: str, split: str) -> int:
        row = self.cursor().execute(
            "SELECT count(*) FROM questions WHERE task = ? AND scheme = ? AND split = ?", [task, scheme, split]
        ).fetchone()
        return int(row[0]) if row else 0

    # -- reading questions and profiles ------------------------------------------------------

    def questions(
        self,
        task: str,
        scheme: str,
        split: str,
        limit: int | None = None,
        user_ids: Sequence[str] | None = None,
        question_ids: Sequence[str] | None = None,
        with_profiles: bool = True,
    ) -> list[Question]:
        """Questions of one split in file order, with their profiles (in profile order)."""
        sql = "SELECT question_id, user_id, input, gold FROM questions WHERE task = ? AND scheme = ? AND split = ?"
        params: list[Any] = [task, scheme, split]
        if user_ids is not None:
            sql += " AND user_id IN (SELECT unnest(?))"
            params.append(list(user_ids))
        if question_ids is not None:
            sql += " AND question_id IN (SELECT unnest(?))"
            params.append(list(question_ids))
        sql += " ORDER BY position"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self.cursor().execute(sql, params).fetchall()
        profiles = self._profiles(task, scheme, [row[0] for row in rows]) if with_profiles else {}
        return [
            Question(task, scheme, split, qid, user_id, text, gold, tuple(profiles.get(qid, ())))
            for qid, user_id, text, gold in rows
        ]

    def _profiles(self, task: str, scheme: str, question_ids: list[str]) -> dict[str, list[ProfileItem]]:
        if not question_ids:
            return {}
        rows = self.cursor().execute(
            """
            SELECT qi.question_id, p.item_key, p.item_id, p.fields, p.date
              FROM question_items qi
              JOIN profile_items p ON p.task = qi.task AND p.item_key = qi.item_key
             WHERE qi.task = ? AND qi.scheme = ? AND qi.question_id IN (SELECT unnest(?))
             ORDER BY qi.question_id, qi.position
            """,
            [task, scheme, question_ids],
        ).fetchall()
        profiles: dict[str, list[ProfileItem]] = {}
        decoded: dict[str, ProfileItem] = {}
        for qid, key, item_id, fields, date in rows:
            item = decoded.get(key)
            if item is None:
                item = decoded[key] = ProfileItem(key, item_id, json.loads(fields), date)
            profiles.setdefault(qid, []).append(item)
        return profiles

    def first_users(self, task: str, scheme: str, split: str, count: int) -> list[str]:
        """The first `count` users of a split, in file order."""
        rows = self.cursor().execute(
            "SELECT user_id FROM questions WHERE task = ? AND scheme = ? AND split = ? "
            "GROUP BY user_id ORDER BY min(position) LIMIT ?",
            [task, scheme, split, count],
        ).fetchall()
        return [row[0] for row in rows]


def open_store(path: str | Path | None = None, read_only: bool = False) -> Store:
    return Store(path, read_only=read_only)
