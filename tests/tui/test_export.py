"""Export from every table (E), copy and save a prompt (c, w): writers and Pilot."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from textual.widgets import Input, RadioButton, SelectionList, Static

from lampbox.errors import LampboxError
from lampbox.store import browse
from lampbox.store import runs as run_store
from lampbox.tui import create_app
from lampbox.tui import export as export_module
from lampbox.tui.export import TableData, check_path, default_path, write_table
from lampbox.tui.screens.export import ExportDialog
from lampbox.tui.widgets.table import LampboxTable

SIZE = (120, 36)
FORMATS = ("csv", "parquet", "json")


def read_back(path: Path, file_format: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows of an exported file, read with a reader of that format."""
    if file_format == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return list(reader.fieldnames or []), list(reader)
    if file_format == "json":
        records = json.loads(path.read_text(encoding="utf-8"))
        return (list(records[0]) if records else []), records
    relation = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    return list(relation.columns), [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


# -- the writers ------------------------------------------------------------------------------

DATA = TableData(
    ("user_id", "questions", "score", "item_ids", "gold"),
    [("u1", 3, 0.25, ["a", "b"], "yes"), ("u2", 1, float("nan"), [], None), ('u"3', 2, 1.0, None, "x,y")],
)


@pytest.mark.parametrize("file_format", FORMATS)
def test_every_format_reads_back_with_all_rows_and_names(tmp_path: Path, file_format: str) -> None:
    path = write_table(DATA, tmp_path / f"sample.{file_format}", file_format)
    columns, rows = read_back(path, file_format)
    assert columns == list(DATA.columns)
    assert [row["user_id"] for row in rows] == ["u1", "u2", 'u"3']
    assert [name for name in os.listdir(tmp_path)] == [path.name]  # no temporary file left
    if file_format == "json":
        assert rows[0] == {"user_id": "u1", "questions": 3, "score": 0.25, "item_ids": ["a", "b"], "gold": "yes"}
        assert rows[1]["score"] is None and rows[1]["gold"] is None  # NaN and None: null
    if file_format == "csv":
        assert rows[0]["item_ids"] == '["a", "b"]' and rows[2]["gold"] == "x,y"
        assert rows[1]["score"] == "" and rows[1]["gold"] == ""


def test_parquet_columns_are_typed(tmp_path: Path) -> None:
    path = write_table(DATA, tmp_path / "sample.parquet", "parquet")
    types = dict(duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()[i][:2] for i in range(5))
    assert types == {
        "user_id": "VARCHAR",
        "questions": "BIGINT",
        "score": "DOUBLE",
        "item_ids": "VARCHAR[]",
        "gold": "VARCHAR",
    }
    assert duckdb.sql(f"SELECT item_ids FROM read_parquet('{path}')").fetchall()[0] == (["a", "b"],)


@pytest.mark.parametrize("file_format", FORMATS)
def test_an_empty_table_keeps_its_columns(tmp_path: Path, file_format: str) -> None:
    path = write_table(TableData(("a", "b"), []), tmp_path / f"e.{file_format}", file_format)
    if file_format == "csv":
        assert path.read_text().strip() == "a,b"
    elif file_format == "json":
        assert json.loads(path.read_text()) == []
    else:
        assert duckdb.sql(f"SELECT * FROM read_parquet('{path}')").columns == ["a", "b"]


def test_bad_paths_say_why_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(LampboxError, match="no folder"):
        check_path(str(tmp_path / "missing" / "x.csv"))
    with pytest.raises(LampboxError, match="is a folder"):
        check_path(str(tmp_path))
    with pytest.raises(LampboxError, match="give a file name"):
        check_path("  ")
    assert check_path(str(tmp_path / "ok.csv")) == tmp_path / "ok.csv"


def test_a_failed_write_leaves_the_old_file_and_no_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old")

    def half_then_fail(data: TableData, path: Path) -> None:
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_write_csv", half_then_fail)
    with pytest.raises(LampboxError, match="No space left on device"):
        write_table(DATA, target, "csv")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.csv"]


def test_the_default_name_does_not_replace_an_earlier_export(tmp_path: Path) -> None:
    first = default_path("users", "csv", tmp_path)
    assert first == tmp_path / "users.csv"
    first.write_text("x")
    assert default_path("users", "csv", tmp_path) == tmp_path / "users-2.csv"


# -- every table through the UI -----------------------------------------------------------------


async def export_table(pilot, table: LampboxTable, path: Path, file_format: str, settle) -> None:  # type: ignore[no-untyped-def]
    """Focus the table, press E, choose the format and path, write, and wait for the worker."""
    table.focus()
    await pilot.press("E")
    await pilot.pause()
    dialog = pilot.app.screen
    assert isinstance(dialog, ExportDialog)
    dialog.query_one(f"#format-{file_format}", RadioButton).value = True
    await pilot.pause()
    dialog.query_one("#export-path", Input).value = str(path)
    await pilot.press("enter")
    await settle(pilot)
    assert not isinstance(pilot.app.screen, ExportDialog)


async def check_every_format(pilot, table, folder: Path, name: str, columns, first_column, settle) -> None:  # type: ignore[no-untyped-def]
    """The table exported in each format reads back with these columns and first-column values."""
    for file_format in FORMATS:
        path = folder / f"{name}.{file_format}"
        await export_table(pilot, table, path, file_format, settle)
        names, rows = read_back(path, file_format)
        assert names[: len(columns)] == list(columns), (name, file_format)
        assert [str(row[names[0]]) for row in rows] == [str(value) for value in first_column], (name, file_format)


@pytest.mark.slow
async def test_every_table_exports_all_rows_in_every_format(bench_store, settle, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lampbox.tui.generation import PaneChoice
    from lampbox.tui.screens import users as users_screen
    from lampbox.tui.screens.failures import FailuresScreen
    from lampbox.tui.screens.generate import GenerationScreen
    from lampbox.tui.screens.prompt import PromptScreen
    from lampbox.tui.screens.question import QuestionScreen
    from lampbox.tui.screens.run_users import RunUsersScreen
    from lampbox.tui.screens.runs import RunsScreen
    from lampbox.tui.screens.user import UserScreen

    monkeypatch.setattr(users_screen, "PAGE_SIZE", 3)  # the list shows 3 users; E writes all 8
    dataset = browse.datasets(bench_store)[0]
    app = create_app(store=bench_store, max_new_tokens=4)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        users_table = app.screen.query_one("#users", LampboxTable)
        assert users_table.row_count == 3
        every_user = [row.user_id for row in browse.user_page(bench_store, dataset, limit=1000).rows]
        assert len(every_user) > 3
        await check_every_format(
            pilot, users_table, tmp_path, "users", ("user_id", "questions", "profile_items"), every_user, settle
        )
        _, json_rows = read_back(tmp_path / "users.json", "json")
        first = browse.user_page(bench_store, dataset, limit=1).rows[0]
        assert json_rows[0] == {"user_id": first.user_id, "questions": first.questions, "profile_items": first.profile_items}

        await pilot.press("enter")
        await settle(pilot)
        user = app.screen
        assert isinstance(user, UserScreen) and user.user is not None
        user_id = user.user.user_id
        questions = browse.user_questions(bench_store, dataset, user_id)
        await check_every_format(
            pilot, user.query_one("#questions", LampboxTable), tmp_path, "questions",
            ("question_id", "user_id", "question", "input", "gold", "profile_size"),
            [q.question_id for q in questions], settle,
        )  # fmt: skip
        items = browse.profile_items(bench_store, dataset, user_id)
        await check_every_format(
            pilot, user.query_one("#profile", LampboxTable), tmp_path, "profile",
            ("item_key", "item_id", "date", "text"), [item.key for item in items], settle,
        )  # fmt: skip

        user.query_one("#questions", LampboxTable).focus()
        await pilot.press("enter")
        await settle(pilot)
        question_screen = app.screen
        assert isinstance(question_screen, QuestionScreen) and question_screen.question is not None
        question = question_screen.question
        await check_every_format(
            pilot, question_screen.query_one("#question-profile", LampboxTable), tmp_path, "question-profile",
            ("position", "item_key", "item_id", "date", "text"), list(range(1, len(question.profile) + 1)), settle,
        )  # fmt: skip
        # The rankings panes are tables too: rank, item, score; no utility without feedback.
        for shown, table in zip(question_screen.rankings, question_screen.query(".ranking-table").results(LampboxTable), strict=True):
            await check_every_format(
                pilot, table, tmp_path, f"ranking-{shown.retriever}",
                ("rank", "item_key", "item_id", "score", "in_rankings", "date"),
                list(range(1, len(shown.items) + 1)), settle,
            )  # fmt: skip
            names, rows = read_back(tmp_path / f"ranking-{shown.retriever}.parquet", "parquet")
            assert "utility" not in names
            assert [row["item_key"] for row in rows] == [ranked.item.key for ranked in shown.items]
            assert [row["score"] for row in rows] == [ranked.score for ranked in shown.items]

        # The prompt's items table (generation screen, p).
        await pilot.press("g")
        await settle(pilot)
        generate = app.screen
        assert isinstance(generate, GenerationScreen)
        pane = generate.panes[1]
        pane.focus()
        await pilot.press("p")
        await pilot.pause()
        prompt_screen = app.screen
        assert isinstance(prompt_screen, PromptScreen) and pane.prepared is not None
        await check_every_format(
            pilot, prompt_screen.query_one("#prompt-items", LampboxTable), tmp_path, "prompt-items",
            ("rank", "item_key", "item_id", "kept_tokens", "total_tokens", "text"),
            [1, 2], settle,
        )  # fmt: skip
        await pilot.press("escape", "escape", "escape", "escape")
        await settle(pilot)

        # Runs, per-user gains, failure cases.
        await pilot.press("b")
        await settle(pilot)
        runs_screen = app.screen
        assert isinstance(runs_screen, RunsScreen)
        (bench_key, _, _), *_ = run_store.list_benches(bench_store)
        runs = run_store.bench_runs(bench_store, bench_key)
        configurations = runs_screen.query_one("#configurations", LampboxTable)
        await check_every_format(
            pilot, configurations, tmp_path, "runs",
            ("run_key", "label", "role", "status", "questions", "rouge-1", "rouge-L", "relative_change", "p_value"),
            [run.run_key for run, _ in runs], settle,
        )  # fmt: skip
        _, rows = read_back(tmp_path / "runs.json", "json")
        assert [row["rouge-1"] for row in rows] == [run.metrics["rouge-1"] for run, _ in runs]

        keys = [row.run_key for row in runs_screen.rows]
        bm25 = next(row for row in runs_screen.rows if row.label.startswith("bm25") and row.role == "retrieval")
        configurations.focus()
        await pilot.press(*["down"] * keys.index(bm25.run_key), "enter")
        await settle(pilot)
        gains_screen = app.screen
        assert isinstance(gains_screen, RunUsersScreen)
        await check_every_format(
            pilot, gains_screen.query_one("#user-gains", LampboxTable), tmp_path, "gains",
            ("user_id", "questions", "profile_size", "baseline_score", "score", "gain"),
            [gain.user_id for gain in gains_screen.ordered()], settle,
        )  # fmt: skip
        _, rows = read_back(tmp_path / "gains.parquet", "parquet")
        assert [row["gain"] for row in rows] == [gain.gain for gain in gains_screen.ordered()]

        gains_screen.query_one("#user-gains", LampboxTable).focus()
        await pilot.press("enter")
        await settle(pilot)
        failures = app.screen
        assert isinstance(failures, FailuresScreen) and failures.cases
        await check_every_format(
            pilot, failures.query_one("#cases", LampboxTable), tmp_path, "cases",
            ("question_id", "question", "gold", "output", "score", "baseline_output", "baseline_score", "gain",
             "retrieved_item_ids", "prompt"),
            [case.question.id for case in failures.cases], settle,
        )  # fmt: skip
        _, rows = read_back(tmp_path / "cases.json", "json")
        assert rows[0]["retrieved_item_ids"] == [item.id for item in failures.cases[0].retrieved]
        assert rows[0]["prompt"] == failures.cases[0].prediction.prompt


async def test_a_bad_path_is_reported_in_the_box_and_nothing_is_written(bench_store, settle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("E")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ExportDialog)
        # The default: a new file named after the table, in the current directory.
        default = Path(dialog.query_one("#export-path", Input).value)
        assert default.parent == Path.cwd() and default.name.startswith("users-LaMP_7-demo")
        assert default.suffix == ".csv"
        dialog.query_one("#format-json", RadioButton).value = True
        await pilot.pause()
        assert dialog.query_one("#export-path", Input).value == str(default.with_suffix(".json"))

        out = tmp_path / "out"
        out.mkdir()
        bad = out / "missing" / "users.csv"
        dialog.query_one("#export-path", Input).value = str(bad)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is dialog  # still open, saying why
        assert f"no folder {bad.parent}" in str(dialog.query_one("#export-error", Static).render())
        dialog.query_one("#export-path", Input).value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        assert "is a folder" in str(dialog.query_one("#export-error", Static).render())
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, ExportDialog)
        assert os.listdir(out) == []


async def test_a_failed_write_is_an_error_notification(bench_store, settle, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def full_disk(data: TableData, path: Path) -> None:
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_write_csv", full_disk)
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#users", LampboxTable)
        out = tmp_path / "out"
        out.mkdir()
        await export_table(pilot, table, out / "users.csv", "csv", settle)
        messages = [notification.message for notification in app._notifications]
        assert any("Export failed" in text and "No space left on device" in text for text in messages)
        assert os.listdir(out) == []


# -- the prompt: copy to the clipboard, save to a file -------------------------------------------


async def test_copy_and_save_a_prompt(bench_store, settle, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lampbox.tui.generation import PaneChoice
    from lampbox.tui.screens.generate import GenerationScreen
    from lampbox.tui.screens.prompt import PromptScreen, TextScreen

    app = create_app(store=bench_store, max_new_tokens=4)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    copied: list[str] = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        question_screen = app.screen
        question_screen.query_one("#retrievers", SelectionList).focus()
        # p: the question's whole input; c copies it.
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, TextScreen)
        await pilot.press("c")
        assert copied == [question_screen.question.input]  # type: ignore[attr-defined]
        await pilot.press("escape")
        await pilot.pause()

        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        pane = screen.panes[1]
        pane.focus()
        await pilot.press("c")  # the focused pane's prompt, from the generation screen
        assert pane.prepared is not None and copied[-1] == pane.prepared.prompt.text

        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("c")
        assert copied[-1] == pane.prepared.prompt.text and len(copied) == 3
        await pilot.press("w")  # the fallback: save it to a file
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ExportDialog)
        assert dialog.query_one("#export-path", Input).value.endswith(".txt")
        target = tmp_path / "prompt.txt"
        dialog.query_one("#export-path", Input).value = str(target)
        await pilot.press("enter")
        await settle(pilot)
        assert target.read_text(encoding="utf-8") == pane.prepared.prompt.text
        assert any(str(target) in notification.message for notification in app._notifications)


def test_an_extension_lampbox_does_not_write_is_refused_not_written_as_csv(tmp_path: Path) -> None:
    """Issue 23, found 8: out.xlsx was written as CSV under that name."""
    from lampbox.tui.export import chosen_format

    with pytest.raises(LampboxError, match=r"\.xlsx is not a format lampbox writes: end the name with \.csv, \.parquet, \.json"):
        chosen_format(tmp_path / "out.xlsx", "csv")
    assert chosen_format(tmp_path / "out.JSON", "csv") == "json"
    assert chosen_format(tmp_path / "out", "parquet") == "parquet"
    assert chosen_format(tmp_path / "prompt.md", "txt", ("txt",)) == "txt"  # a prompt is text, any name
