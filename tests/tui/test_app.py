"""Driving the TUI with Pilot against a real store filled with the stand-in data."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Markdown, OptionList, Static

from lampbox.store import browse
from lampbox.tui import create_app
from lampbox.tui.screens.dialogs import ErrorDialog
from lampbox.tui.screens.empty import EmptyStoreScreen
from lampbox.tui.screens.help import HelpScreen
from lampbox.tui.screens.question import QuestionScreen
from lampbox.tui.screens.user import UserScreen
from lampbox.tui.screens.users import UsersScreen

SIZE = (120, 36)


def _rows(table: DataTable) -> list[str]:  # type: ignore[type-arg]
    return [str(key.value) for key in table.rows]


def _text(widget: Static) -> str:
    return str(widget.render())


@pytest.mark.slow
async def test_users_to_profile_to_question(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, UsersScreen)
        users = screen.query_one("#users", DataTable)
        dataset = browse.datasets(commits_store)[0]
        assert _rows(users) == [r.user_id for r in browse.user_page(commits_store, dataset).rows]

        await pilot.press("down", "down", "enter")
        await settle(pilot)
        user_screen = app.screen
        assert isinstance(user_screen, UserScreen)
        chosen = _rows(users)[2]
        assert chosen in _text(user_screen.query_one("#user-title", Static))
        profile = user_screen.query_one("#profile", DataTable)
        expected_items = browse.profile_items(commits_store, dataset, chosen)
        assert _rows(profile) == [item.key for item in expected_items]
        questions = user_screen.query_one("#questions", DataTable)
        expected_questions = browse.user_questions(commits_store, dataset, chosen)
        assert _rows(questions) == [q.question_id for q in expected_questions]

        await pilot.press("down", "enter")
        await settle(pilot)
        question_screen = app.screen
        assert isinstance(question_screen, QuestionScreen)
        target = expected_questions[1]
        assert (
            question_screen.question is not None
            and question_screen.question.id == target.question_id
        )
        assert target.gold is not None and target.gold in _text(
            question_screen.query_one("#question-gold", Static)
        )
        assert (
            question_screen.query_one("#question-profile", DataTable).row_count
            == target.profile_size
        )

        await pilot.press("escape")
        await pilot.press("escape")
        assert isinstance(app.screen, UsersScreen)


async def test_lists_show_the_question_text_and_p_the_whole_input(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    from lampbox.tui.screens.prompt import TextScreen

    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, UserScreen) and screen.user is not None
        dataset = screen.users.dataset
        task = commits_store.task(dataset.task)
        stored = browse.user_questions(commits_store, dataset, screen.user.user_id)
        questions = screen.query_one("#questions", DataTable)
        shown = [str(questions.get_row_at(row)[1]) for row in range(questions.row_count)]
        # Each row shows its own text (the input after the instruction), never the instruction.
        for row, text in zip(stored, shown, strict=True):
            assert row.input.startswith(task.input_prefix.strip())
            own = task.question_text(row.input)
            assert own and own != row.input and text.rstrip("…") == own[: len(text.rstrip("…"))]
            assert task.input_prefix.strip()[:20] not in text
        assert len(set(shown)) > 1

        await pilot.press("down", "p")
        await pilot.pause()
        assert isinstance(app.screen, TextScreen)
        assert _text(app.screen.query_one("#full-text", Static)) == stored[1].input
        await pilot.press("escape")
        await pilot.pause()

        await pilot.press("enter")
        await settle(pilot)
        question_screen = app.screen
        assert isinstance(question_screen, QuestionScreen)
        top = _text(question_screen.query_one("#question-input", Static))
        assert task.question_text(stored[1].input) in top and task.input_prefix.strip() not in top
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, TextScreen)
        assert _text(app.screen.query_one("#full-text", Static)) == stored[1].input


async def test_next_user_key_steps_through_the_list(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        listed = _rows(app.screen.query_one("#users", DataTable))
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, UserScreen)
        assert screen.user is not None and screen.user.user_id == listed[2]
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert screen.user.user_id == listed[1]


async def test_search_filters_the_user_list(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#users", DataTable)
        everyone = _rows(table)
        needle = everyone[5][1:4]
        await pilot.press("slash", *needle)
        await settle(pilot)
        assert app.screen.query_one("#user-search", Input).value == needle
        shown = _rows(table)
        assert shown == [user for user in everyone if needle in user]
        assert len(shown) < len(everyone)
        assert f"matching {needle!r}" in _text(app.screen.query_one("#users-status", Static))


async def test_sort_and_paging_keys(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        datasets = browse.datasets(commits_store)
        big = next(i for i, d in enumerate(datasets) if d.users > 100)
        app.screen.query_one("#datasets", OptionList).highlighted = big
        await settle(pilot)
        table = app.screen.query_one("#users", DataTable)
        first_page = _rows(table)
        assert len(first_page) == 100
        await pilot.press("right_square_bracket")
        await settle(pilot)
        second_page = _rows(table)
        assert len(second_page) == datasets[big].users - 100
        assert not set(first_page) & set(second_page)
        assert _text(app.screen.query_one("#users-status", Static)).startswith("101–")

        await pilot.press("s")  # id -> questions, largest first
        await settle(pilot)
        expected = browse.user_page(commits_store, datasets[big], sort="questions", descending=True)
        assert _rows(table) == [row.user_id for row in expected.rows]


async def test_empty_store_tells_how_to_get_data(empty_store_path: Path, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(empty_store_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, EmptyStoreScreen)
        how_to = app.screen.query_one("#empty-how-to", Markdown).source
        for command in (
            "lampbox data demo",
            "lampbox data import PATH",
            "lampbox data fetch LaMP_7",
        ):
            assert command in how_to


async def test_help_opens_and_closes(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, UsersScreen)


async def test_a_file_that_is_not_a_store_shows_an_error_dialog(tmp_path: Path, settle) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "notes.duckdb"
    bad.write_text("these are notes, not a database\n" * 100)
    app = create_app(bad)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ErrorDialog)
        assert "notes.duckdb" in app.screen.message
        await pilot.press("enter")
    assert app.return_code == 1


async def test_a_failing_query_becomes_a_notification(commits_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lampbox.errors import LampboxError

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise LampboxError("the disk went away")

    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        monkeypatch.setattr(browse, "user_questions", broken)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, UserScreen)  # still running, on the user screen
        messages = [notification.message for notification in app._notifications]
        assert any("the disk went away" in message for message in messages)
        assert not app.screen.query_one("#questions", DataTable).loading


async def test_changing_retrievers_reranks(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    from textual.widgets import SelectionList

    from lampbox.engine.retrieval import create_retriever
    from lampbox.engine.retrieval.service import rank_questions
    from lampbox.tui.widgets.ranking_pane import RankingPane

    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, QuestionScreen) and screen.question is not None
        question = screen.question
        task = commits_store.task(question.task)

        def shown() -> dict[str, list[str]]:
            panes = screen.query(RankingPane)
            return {pane.ranking.retriever: _rows(pane.query_one(DataTable)) for pane in panes}

        def expected(name: str, k: int) -> list[str]:
            ranking = rank_questions(task, [question], create_retriever(name))[0]
            return list(ranking.top_keys(k))

        assert shown() == {"bm25": expected("bm25", 5), "recency": expected("recency", 5)}

        selection = screen.query_one("#retrievers", SelectionList)
        selection.deselect("recency")
        selection.select("random")
        await settle(pilot)
        assert shown() == {"bm25": expected("bm25", 5), "random": expected("random", 5)}

        await pilot.press("plus", "plus")
        await settle(pilot)
        assert shown() == {"bm25": expected("bm25", 7), "random": expected("random", 7)}
        shared = set(expected("bm25", 7)) & set(expected("random", 7))
        marks = set()
        for pane in screen.query(RankingPane):
            table = pane.query_one(DataTable)
            marks |= {str(key.value) for key in table.rows if "×" in str(table.get_row(key)[2])}
        assert marks == shared


async def test_the_app_shortens_the_gil_switch_interval_while_it_runs(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    import sys

    from lampbox.tui.app import GIL_SWITCH_S

    before = sys.getswitchinterval()
    assert before != GIL_SWITCH_S  # Python's default (5 ms) here
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # the workers' small steps get the GIL soon while the app's thread draws
        assert sys.getswitchinterval() == GIL_SWITCH_S
    assert sys.getswitchinterval() == before  # the process gets its own setting back
