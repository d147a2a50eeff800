"""The TUI never touches the store from its main thread, and every worker's store work runs
inside `store.using()` (so the app can give the file back between queries): checked over the
features that came with export, what-ifs, the selector and the runs screen's what-ifs."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList

from lampbox.lab.whatif import list_whatifs
from lampbox.store import Store
from lampbox.tui import create_app
from lampbox.tui.generation import PaneChoice
from lampbox.tui.screens.export import ExportDialog
from lampbox.tui.screens.generate import GenerationScreen
from lampbox.tui.screens.question import QuestionScreen
from lampbox.tui.screens.run_users import RunUsersScreen
from lampbox.tui.screens.runs import RunsScreen
from lampbox.tui.widgets.table import LampboxTable

SIZE = (120, 36)


@pytest.fixture
def store_uses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every use of a store's connection that breaks the discipline, with where it came from."""
    wrong: list[str] = []
    connection = Store.connection

    def spy(store: Store):  # type: ignore[no-untyped-def]
        on_main = threading.current_thread() is threading.main_thread()
        if on_main or threading.get_ident() not in store._users:
            where = "".join(traceback.format_stack(limit=8)[:-1])
            wrong.append(f"{'main thread' if on_main else 'outside using()'}:\n{where}")
        return connection.fget(store)  # type: ignore[attr-defined]

    monkeypatch.setattr(Store, "connection", property(spy))
    return wrong


async def test_export_whatif_and_runs_use_the_store_only_in_workers_inside_using(  # type: ignore[no-untyped-def]
    bench_store, store_uses, settle, tmp_path: Path
) -> None:
    app = create_app(store=bench_store, max_new_tokens=4)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # E on the users list: its export reads every page of the store in a worker.
        app.screen.query_one("#users", LampboxTable).focus()
        await pilot.press("E")
        await pilot.pause()
        assert isinstance(app.screen, ExportDialog)
        app.screen.query_one("#export-path", Input).value = str(tmp_path / "u.csv")
        await pilot.press("enter")
        await settle(pilot)
        assert (tmp_path / "u.csv").read_text().count("\n") > 1
        # A what-if: exclude bm25's top item, generate beside the original, save it.
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        question = app.screen
        assert isinstance(question, QuestionScreen)
        next(iter(question.query(".ranking-table").results(DataTable))).focus()
        await pilot.press("x")
        await pilot.press("g")
        await settle(pilot)
        generation = app.screen
        assert isinstance(generation, GenerationScreen) and generation.edit is not None
        assert all(pane.state == "done" for pane in generation.panes)
        await pilot.press("s")
        await settle(pilot)
        # The runs screen: the benches and the what-ifs, the tasks looked up in its worker.
        app._task_specs.clear()
        await pilot.press("escape", "escape", "escape")
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen) and runs.benches and runs.whatifs
        assert not runs.showing_whatifs  # a bench is shown first
        configurations = runs.rows
        options = runs.query_one("#benches", OptionList)
        table = runs.query_one("#configurations", DataTable)
        options.highlighted = len(runs.benches)  # "What-ifs"
        await settle(pilot)
        assert runs.showing_whatifs and table.row_count == len(runs.whatifs)
        runs.load_benches(quiet=True)  # a poll keeps the what-ifs shown
        await settle(pilot)
        assert runs.showing_whatifs and table.row_count == len(runs.whatifs)
        options.highlighted = 0  # the same bench again is drawn afresh
        await settle(pilot)
        assert not runs.showing_whatifs and runs.rows == configurations
        assert table.row_count == len(configurations)
        assert "configuration" in [str(column.label) for column in table.ordered_columns]
        # A configuration's per-user gains, then by history size (`h`): both read in workers.
        table.focus()
        table.move_cursor(row=1)  # bm25 k=1, after the no-personalization row
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        gains = app.screen
        assert isinstance(gains, RunUsersScreen) and gains.gains_loaded
        assert gains.history is not None and gains.history.buckets
    assert store_uses == [], store_uses[0]
    assert len(list_whatifs(bench_store)) == 2


async def test_the_peft_vs_rag_buckets_of_an_oppu_bench_are_read_in_a_worker(  # type: ignore[no-untyped-def]
    oppu_bench, store_uses, history_view
) -> None:
    """`h` on an OPPU bench reads the whole bench's analysis: in the worker, inside using()."""
    app = create_app(store=oppu_bench["store"])
    async with app.run_test(size=SIZE) as pilot:
        gains = await history_view(app, pilot, oppu_bench["key"], oppu_bench["runs"]["both"])
        assert isinstance(gains, RunUsersScreen) and gains.history is not None
        assert gains.history.roles == oppu_bench["labels"] and gains.history.buckets
    assert store_uses == [], store_uses[0]
