"""The paged read queries behind the TUI, against the stand-in store."""

from __future__ import annotations

import pytest

from lampbox.errors import LampboxError
from lampbox.store import browse
from lampbox.store.browse import Dataset


def _dataset(store, task: str, split: str) -> Dataset:  # type: ignore[no-untyped-def]
    return next(d for d in browse.datasets(store) if d.task == task and d.split == split)


def test_datasets_match_the_store_summary(commits_store) -> None:  # type: ignore[no-untyped-def]
    found = {
        (d.task, d.scheme, d.split): (d.users, d.questions) for d in browse.datasets(commits_store)
    }
    expected = {
        (s.task, s.scheme, s.split): (s.users, s.questions) for s in commits_store.datasets()
    }
    assert found == expected
    assert len(found) == 6


def test_pages_cover_every_user_once_in_id_order(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_subject", "dev")
    seen: list[str] = []
    for offset in range(0, 200, 50):
        page = browse.user_page(commits_store, dataset, offset=offset, limit=50)
        assert page.total == 190
        seen.extend(row.user_id for row in page.rows)
    assert len(seen) == 190 == len(set(seen))
    assert seen == sorted(seen)


def test_counts_agree_with_the_questions_and_their_profiles(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_area", "train")
    page = browse.user_page(commits_store, dataset, sort="profile", descending=True, limit=5)
    assert [row.profile_items for row in page.rows] == sorted(
        (row.profile_items for row in page.rows), reverse=True
    )
    for row in page.rows:
        questions = commits_store.questions("commit_area", "user", "train", user_ids=[row.user_id])
        assert row.questions == len(questions)
        assert row.profile_items == len({item.key for q in questions for item in q.profile})
        assert len(browse.profile_items(commits_store, dataset, row.user_id)) == row.profile_items


def test_sort_by_questions_then_id(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_area", "train")
    rows = browse.user_page(commits_store, dataset, sort="questions", limit=1000).rows
    assert [(r.questions, r.user_id) for r in rows] == sorted(
        (r.questions, r.user_id) for r in rows
    )
    assert rows[0].questions < rows[-1].questions


def test_search_is_a_case_insensitive_substring_of_the_id(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_subject", "dev")
    everyone = browse.user_page(commits_store, dataset, limit=1000).rows
    needle = everyone[7].user_id[2:5]
    expected = [r.user_id for r in everyone if needle in r.user_id]
    page = browse.user_page(commits_store, dataset, search=needle.upper(), limit=1000)
    assert [r.user_id for r in page.rows] == expected
    assert page.total == len(expected)
    assert browse.user_page(commits_store, dataset, search="no such user").total == 0


def test_user_at_walks_the_sorted_list(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_subject", "dev")
    rows = browse.user_page(commits_store, dataset, sort="profile", limit=1000).rows
    assert browse.user_at(commits_store, dataset, 3, sort="profile") == rows[3]
    assert browse.user_at(commits_store, dataset, 190) is None
    assert browse.user_at(commits_store, dataset, -1) is None


def test_profile_items_search_and_sort_by_field(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_subject", "dev")
    user = browse.user_page(commits_store, dataset, sort="profile", descending=True, limit=1).rows[
        0
    ]
    items = browse.profile_items(commits_store, dataset, user.user_id)
    dates = [item.date for item in items if item.date]
    assert dates == sorted(dates, reverse=True)
    by_title = browse.profile_items(
        commits_store, dataset, user.user_id, sort="title", descending=False
    )
    titles = [item.get("title") for item in by_title]
    assert titles == sorted(titles)
    word = items[0].get("title").split()[0].lower()
    found = browse.profile_items(commits_store, dataset, user.user_id, search=word)
    assert 0 < len(found) <= len(items)
    assert all(
        word in (" ".join(map(str, i.fields.values())) + (i.date or "")).lower() for i in found
    )
    with pytest.raises(LampboxError):
        browse.profile_items(commits_store, dataset, user.user_id, sort="title; DROP TABLE x")


def test_user_questions_and_one_question(commits_store) -> None:  # type: ignore[no-untyped-def]
    dataset = _dataset(commits_store, "commit_area", "dev")
    user = browse.user_page(commits_store, dataset, limit=1).rows[0]
    rows = browse.user_questions(commits_store, dataset, user.user_id)
    assert len(rows) == user.questions
    question = browse.question(commits_store, dataset, rows[0].question_id)
    assert question.user_id == user.user_id and question.gold == rows[0].gold
    assert len(question.profile) == rows[0].profile_size
    with pytest.raises(LampboxError):
        browse.question(commits_store, dataset, "no-such-question")
