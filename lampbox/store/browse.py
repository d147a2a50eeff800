"""Paged read queries for browsing the store (the TUI's users, profile and question views).

Every query pages in SQL (LIMIT/OFFSET) so a store with tens of thousands of users never loads
whole. Counts are scoped to one dataset (task, scheme, split): a user's "questions" are their
questions in that split, their "profile items" the distinct items of those questions' profiles.
All functions take the store and use the calling thread's cursor (`Store.cursor()`), so they
are safe to call from worker threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import LampboxError
from lampbox.store.core import Store

UserSort = Literal["id", "questions", "profile"]
USER_SORTS: tuple[UserSort, ...] = ("id", "questions", "profile")
ItemSort = str  # "date", "id", or the name of a profile field (title, tag, score, text, ...)


@dataclass(frozen=True)
class Dataset:
    """One browsable (task, scheme, split), with its sizes."""

    task: str
    scheme: str
    split: str
    users: int
    questions: int

    @property
    def label(self) -> str:
        return f"{self.task} · {self.scheme} · {self.split}"


@dataclass(frozen=True)
class UserRow:
    """One line of the users list."""

    user_id: str
    questions: int
    profile_items: int


@dataclass(frozen=True)
class UserPage:
    """A page of users, and how many users match the search in all."""

    rows: tuple[UserRow, ...]
    offset: int
    total: int


@dataclass(frozen=True)
class QuestionRow:
    """One of a user's questions, without its profile."""

    question_id: str
    user_id: str
    input: str
    gold: str | None
    profile_size: int


def datasets(store: Store) -> list[Dataset]:
    """Every (task, scheme, split) in the store with its users and questions (cheap: no items)."""
    rows = (
        store.cursor()
        .execute(
            """
            SELECT task, scheme, split, count(DISTINCT user_id), count(*)
              FROM questions GROUP BY task, scheme, split
            """
        )
        .fetchall()
    )
    split_order = {"train": 0, "dev": 1, "test": 2}
    found = [
        Dataset(task, scheme, split, int(users), int(n)) for task, scheme, split, users, n in rows
    ]
    return sorted(found, key=lambda d: (d.task, d.scheme, split_order.get(d.split, 9), d.split))


def _user_filter(dataset: Dataset, search: str) -> tuple[str, list[Any]]:
    sql = "task = ? AND scheme = ? AND split = ?"
    params: list[Any] = [dataset.task, dataset.scheme, dataset.split]
    if search.strip():
        sql += " AND contains(lower(user_id), ?)"
        params.append(search.strip().lower())
    return sql, params


def count_users(store: Store, dataset: Dataset, search: str = "") -> int:
    """How many users of the dataset have an id containing `search` (case-insensitive)."""
    where, params = _user_filter(dataset, search)
    row = (
        store.cursor()
        .execute(f"SELECT count(DISTINCT user_id) FROM questions WHERE {where}", params)
        .fetchone()
    )
    return int(row[0]) if row else 0


def _item_counts(store: Store, dataset: Dataset, user_ids: list[str]) -> dict[str, int]:
    """Distinct profile items per user over their questions of the dataset (only these users)."""
    if not user_ids:
        return {}
    rows = (
        store.cursor()
        .execute(
            """
            SELECT q.user_id, count(DISTINCT qi.item_key)
              FROM questions q
              JOIN question_items qi
                ON qi.task = q.task AND qi.scheme = q.scheme AND qi.question_id = q.question_id
             WHERE q.task = ? AND q.scheme = ? AND q.split = ? AND q.user_id IN (SELECT unnest(?))
             GROUP BY q.user_id
            """,
            [dataset.task, dataset.scheme, dataset.split, user_ids],
        )
        .fetchall()
    )
    return {user_id: int(count) for user_id, count in rows}


def user_page(
    store: Store,
    dataset: Dataset,
    search: str = "",
    sort: UserSort = "id",
    descending: bool = False,
    offset: int = 0,
    limit: int = 100,
) -> UserPage:
    """One page of users matching `search`, sorted by id, number of questions or profile items.

    Sorting by id or questions pages over the questions table alone and counts profile items
    for the page's users only; sorting by profile items needs every user's count, in one
    grouped query.
    """
    if sort not in USER_SORTS:
        raise LampboxError(f"cannot sort users by {sort!r} (choose one of {', '.join(USER_SORTS)})")
    where, params = _user_filter(dataset, search)
    direction = "DESC" if descending else "ASC"
    offset, limit = max(0, int(offset)), max(1, int(limit))
    if sort == "profile":
        rows = (
            store.cursor()
            .execute(
                f"""
                WITH q AS (SELECT user_id, question_id FROM questions WHERE {where})
                SELECT q.user_id, count(DISTINCT q.question_id), count(DISTINCT qi.item_key) AS n_items
                  FROM q
                  LEFT JOIN question_items qi
                    ON qi.task = ? AND qi.scheme = ? AND qi.question_id = q.question_id
                 GROUP BY q.user_id
                 ORDER BY n_items {direction}, q.user_id ASC
                 LIMIT {limit} OFFSET {offset}
                """,
                [*params, dataset.task, dataset.scheme],
            )
            .fetchall()
        )
        page = tuple(UserRow(user_id, int(nq), int(ni)) for user_id, nq, ni in rows)
    else:
        order = f"user_id {direction}" if sort == "id" else f"n_questions {direction}, user_id ASC"
        rows = (
            store.cursor()
            .execute(
                f"""
                SELECT user_id, count(*) AS n_questions FROM questions WHERE {where}
                 GROUP BY user_id ORDER BY {order} LIMIT {limit} OFFSET {offset}
                """,
                params,
            )
            .fetchall()
        )
        counts = _item_counts(store, dataset, [row[0] for row in rows])
        page = tuple(UserRow(user_id, int(nq), counts.get(user_id, 0)) for user_id, nq in rows)
    return UserPage(page, offset, count_users(store, dataset, search))


def user_at(
    store: Store,
    dataset: Dataset,
    index: int,
    search: str = "",
    sort: UserSort = "id",
    descending: bool = False,
) -> UserRow | None:
    """The user at position `index` of a sorted, searched list (None past either end)."""
    if index < 0:
        return None
    page = user_page(store, dataset, search, sort, descending, offset=index, limit=1)
    return page.rows[0] if page.rows else None


def user_summary(store: Store, dataset: Dataset, user_id: str) -> UserRow | None:
    """One user's counts in the dataset (None if they have no question there)."""
    row = (
        store.cursor()
        .execute(
            "SELECT count(*) FROM questions WHERE task = ? AND scheme = ? AND split = ? AND user_id = ?",
            [dataset.task, dataset.scheme, dataset.split, user_id],
        )
        .fetchone()
    )
    if not row or not row[0]:
        return None
    return UserRow(user_id, int(row[0]), _item_counts(store, dataset, [user_id]).get(user_id, 0))


def user_questions(store: Store, dataset: Dataset, user_id: str) -> list[QuestionRow]:
    """A user's questions in the dataset, in file order, without profiles."""
    rows = (
        store.cursor()
        .execute(
            """
            SELECT question_id, user_id, input, gold, profile_size FROM questions
             WHERE task = ? AND scheme = ? AND split = ? AND user_id = ?
             ORDER BY position
            """,
            [dataset.task, dataset.scheme, dataset.split, user_id],
        )
        .fetchall()
    )
    return [QuestionRow(qid, uid, text, gold, int(size)) for qid, uid, text, gold, size in rows]


def _item_order(sort: ItemSort, descending: bool) -> str:
    direction = "DESC" if descending else "ASC"
    if sort == "date":
        return f"p.date {direction} NULLS LAST, p.item_id"
    if sort == "id":
        return f"p.item_id {direction}"
    if not sort.replace("_", "").isalnum():
        raise LampboxError(f"cannot sort profile items by {sort!r}")
    # A numeric field (LaMP_3's score) sorts as a number, any other field as text.
    value = f"json_extract_string(p.fields, '$.{sort}')"
    return f"TRY_CAST({value} AS DOUBLE) {direction} NULLS LAST, {value} {direction} NULLS LAST, p.item_id"


def profile_items(
    store: Store,
    dataset: Dataset,
    user_id: str,
    search: str = "",
    sort: ItemSort = "date",
    descending: bool = True,
    limit: int | None = None,
) -> list[ProfileItem]:
    """The distinct items of a user's profile over their questions of the dataset.

    `search` keeps items whose fields or date contain it (case-insensitive); `sort` is "date",
    "id" or a field name (numeric fields sort as numbers).
    """
    sql = f"""
        SELECT p.item_key, p.item_id, p.fields, p.date
          FROM profile_items p
         WHERE p.task = ? AND p.user_id = ?
           AND p.item_key IN (
                SELECT qi.item_key FROM question_items qi
                  JOIN questions q
                    ON q.task = qi.task AND q.scheme = qi.scheme AND q.question_id = qi.question_id
                 WHERE q.task = ? AND q.scheme = ? AND q.split = ? AND q.user_id = ?)
           {{search}}
         ORDER BY {_item_order(sort, descending)}
    """
    params: list[Any] = [
        dataset.task,
        user_id,
        dataset.task,
        dataset.scheme,
        dataset.split,
        user_id,
    ]
    if search.strip():
        sql = sql.replace(
            "{search}", "AND contains(lower(p.fields || ' ' || coalesce(p.date, '')), ?)"
        )
        params.append(search.strip().lower())
    else:
        sql = sql.replace("{search}", "")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = store.cursor().execute(sql, params).fetchall()
    return [
        ProfileItem(key, item_id, json.loads(fields), date) for key, item_id, fields, date in rows
    ]


def question(store: Store, dataset: Dataset, question_id: str) -> Question:
    """One question with its profile (in profile order)."""
    found = store.questions(dataset.task, dataset.scheme, dataset.split, question_ids=[question_id])
    if not found:
        raise LampboxError(f"no question {question_id!r} in {dataset.label}")
    return found[0]


# -- runs: per-user gains against a baseline and the questions where a run did worse --------


@dataclass(frozen=True)
class UserGain:
    """One user's main score in a run and in its baseline; `gain` > 0 means the run did better."""

    user_id: str
    questions: int
    profile_size: float
    baseline_score: float | None
    score: float | None
    gain: float | None


def user_gains(
    store: Store, run_key: str, baseline_key: str, higher_is_better: bool = True
) -> list[UserGain]:
    """Every user of the run with their gain over the baseline, biggest losses first.

    For metrics where lower is better (MAE, RMSE) the sign is flipped, so a negative gain
    always means the run did worse for that user.
    """
    sign = 1.0 if higher_is_better else -1.0
    rows = (
        store.cursor()
        .execute(
            """
            SELECT r.user_id, r.n_questions, r.profile_size, b.main_score, r.main_score,
                   ? * (r.main_score - b.main_score) AS gain
              FROM user_scores r
              LEFT JOIN user_scores b ON b.run_key = ? AND b.user_id = r.user_id
             WHERE r.run_key = ?
             ORDER BY gain ASC NULLS LAST, r.user_id
            """,
            [sign, baseline_key, run_key],
        )
        .fetchall()
    )
    return [UserGain(*row) for row in rows]


def user_question_gains(
    store: Store,
    run_key: str,
    baseline_key: str,
    user_id: str,
    higher_is_better: bool = True,
    only_worse: bool = True,
) -> list[tuple[str, float | None]]:
    """A user's question ids in the run with the per-question gain over the baseline.

    Worst first; with `only_worse`, only the questions where the run scored worse.
    """
    sign = 1.0 if higher_is_better else -1.0
    rows = (
        store.cursor()
        .execute(
            f"""
            SELECT r.question_id, ? * (r.main_score - b.main_score) AS gain
              FROM predictions r
              LEFT JOIN predictions b ON b.run_key = ? AND b.question_id = r.question_id
             WHERE r.run_key = ? AND r.user_id = ? {"AND gain < 0" if only_worse else ""}
             ORDER BY gain ASC NULLS LAST, r.position
            """,
            [sign, baseline_key, run_key, user_id],
        )
        .fetchall()
    )
    return [(str(question_id), gain) for question_id, gain in rows]
