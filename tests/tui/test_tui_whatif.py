"""What-if edits in the TUI (Pilot): exclude, pin, edit the input, a new question, save.

The panes run on the `dummy` stand-in (its answer is the prompt's first words, so what went
into the prompt shows in the output); prompting, caching, scoring and storing are the real
pipeline's."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Static, TextArea

from lampbox.engine import scoring
from lampbox.engine.whatif import WhatIf
from lampbox.lab import pipeline
from lampbox.lab.whatif import list_whatifs
from lampbox.store import Store
from lampbox.store import runs as run_store
from lampbox.tui import create_app
from lampbox.tui.generation import PaneChoice
from lampbox.tui.screens.edit_input import EditInputScreen
from lampbox.tui.screens.generate import GenerationScreen
from lampbox.tui.screens.question import QuestionScreen

SIZE = (120, 36)
PANES = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 3, "dummy")]


@pytest.fixture
def demo_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from lampbox.demo import demo_path
    from lampbox.store.importer import import_path

    store = Store(tmp_path / "demo.duckdb")
    import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
    yield store
    store.close()


async def _question(app, pilot, settle) -> QuestionScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("enter")  # the first user
    await settle(pilot)
    await pilot.press("enter")  # their first question
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, QuestionScreen)
    return screen


def _text(widget: Static) -> str:
    return str(widget.render())


async def test_exclude_pin_generate_beside_the_original_and_save(demo_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=demo_store, max_new_tokens=8)
    app.pane_choices = list(PANES)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _question(app, pilot, settle)
        question = screen.question
        assert question is not None
        # x with the focus on the retriever list: nothing to exclude, and it says so.
        await pilot.press("x")
        assert screen.edit.is_empty
        # x on the top item of the bm25 ranking; P on a profile item outside the top 3.
        bm25 = next(r for r in screen.rankings if r.retriever == "bm25")
        top = bm25.items[0].item.key
        ranking_table = screen.query(".ranking-table").results(DataTable)
        next(iter(ranking_table)).focus()
        await pilot.press("x")
        assert screen.edit.excluded == (top,)
        profile = screen.query_one("#question-profile", DataTable)
        profile.focus()
        ranked = {ranked.item.key for ranked in bm25.items}
        row = next(i for i, item in enumerate(question.profile) if item.key not in ranked | {top})
        profile.move_cursor(row=row)
        await pilot.press("P")
        pinned = question.profile[row].key
        assert screen.edit == WhatIf(excluded=(top,), pinned=(pinned,))
        assert str(profile.get_cell(pinned, "position")) == "P1"
        assert str(profile.get_cell(top, "position")) == "✗"
        line = screen.query_one("#question-whatif", Static)
        assert line.display and "1 excluded · 1 pinned" in _text(line)

        await pilot.press("g")
        await settle(pilot)
        generations = app.screen
        assert isinstance(generations, GenerationScreen) and generations.edit == screen.edit
        assert "WHAT-IF" in _text(generations.query_one("#generate-title", Static))
        task = demo_store.task(question.task)
        none_pane, bm25_pane = generations.panes
        prepared = bm25_pane.prepared
        assert prepared is not None and prepared.is_whatif
        keys = prepared.prompt.item_keys
        assert keys[0] == pinned and top not in keys and len(keys) == 3
        assert "what-if" in _text(bm25_pane.query_one(".pane-title", Static))
        for pane in (none_pane, bm25_pane):
            assert pane.state == "done" and pane.output and pane.original_output
            assert pane.scores == scoring.score_output(task, pane.output, question.gold)
            assert pane.original_scores == scoring.score_output(task, pane.original_output, question.gold)
            shown = _text(pane.query_one(".pane-original", Static))
            assert pane.original_output in shown and "rouge-1" in shown
        # The edit changed the bm25 prompt, so its output differs from the unedited one, and the
        # difference against the gold is shown.
        assert bm25_pane.output != bm25_pane.original_output
        delta = bm25_pane.delta["rouge-1"]
        assert delta == bm25_pane.scores["rouge-1"] - bm25_pane.original_scores["rouge-1"]  # type: ignore[index]
        assert f"Δ rouge-1 {delta:+.3f}" in _text(bm25_pane.query_one(".pane-original", Static))
        # The unedited question's cache entry holds the original output, never the edited one.
        plain = pipeline.prepare_question(prepared.spec, question, demo_store, app.generators)
        assert pipeline.cached_output(demo_store, plain) == bm25_pane.original_output
        assert pipeline.cached_output(demo_store, prepared) == bm25_pane.output

        # s saves the what-if: one small run per pane, listed apart from benchmark runs.
        await pilot.press("s")
        await settle(pilot)
        saved = list_whatifs(demo_store)
        assert len(saved) == 2 and run_store.list_runs(demo_store) == []
        by_config = {entry.configuration: entry for entry in saved}
        entry = by_config[prepared.spec.label]
        assert entry.edit == screen.edit and entry.question_id == question.id
        assert entry.prediction.output == bm25_pane.output.strip()
        assert entry.original_output == bm25_pane.original_output
        assert entry.prediction.item_keys == keys

        # They show under Runs, in "What-ifs".
        from lampbox.tui.screens.runs import RunsScreen

        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("u")  # undo every edit
        assert screen.edit.is_empty and not screen.query_one("#question-whatif", Static).display
        assert str(profile.get_cell(top, "position")) != "✗"
        await pilot.press("escape", "escape")
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen) and runs.showing_whatifs
        table = runs.query_one("#configurations", DataTable)
        assert table.row_count == 2
        assert "what-if" in str(table.get_cell(entry.run_key, "label"))


async def test_edit_the_input_and_ask_a_new_question(demo_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=demo_store, max_new_tokens=8)
    app.pane_choices = list(PANES)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _question(app, pilot, settle)
        question = screen.question
        assert question is not None
        # e: the whole input in a box; escape leaves it as it was.
        await pilot.press("e")
        await pilot.pause()
        box = app.screen
        assert isinstance(box, EditInputScreen)
        assert box.query_one("#edit-text", TextArea).text == question.input
        await pilot.press("escape")
        await pilot.pause()
        assert screen.edit.is_empty
        # e again, a changed text, ctrl+s: the input is edited, the gold stays.
        await pilot.press("e")
        await pilot.pause()
        edited = question.input[: question.input.rfind(screen.question_text)] + "lunch was late again"
        app.screen.query_one("#edit-text", TextArea).text = edited
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen.edit == WhatIf(input=edited)
        assert "Question, edited" in _text(screen.query_one("#question-input", Static))
        assert "lunch was late again" in _text(screen.query_one("#question-input", Static))
        await pilot.press("g")
        await settle(pilot)
        generations = app.screen
        assert isinstance(generations, GenerationScreen)
        for pane in generations.panes:
            assert pane.prepared is not None and pane.prepared.prompt.text.endswith("lunch was late again")
            assert pane.scores and pane.original_output is not None  # scored against the gold
        await pilot.press("escape")
        await settle(pilot)

        # n: a new question as this user: the task's instruction is there, the text is ours.
        await pilot.press("n")
        await pilot.pause()
        area = app.screen.query_one("#edit-text", TextArea)
        assert area.text and question.input.startswith(area.text)
        await pilot.press("ctrl+s")  # the instruction alone is no question
        await pilot.pause()
        assert screen.edit == WhatIf(input=edited)
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#edit-text", TextArea).text += "a brand new tweet about trains"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen.edit.new_question and screen.edit.input is not None
        assert screen.edit.input.endswith("a brand new tweet about trains")
        assert "no gold" in _text(screen.query_one("#question-gold", Static))
        await pilot.press("g")
        await settle(pilot)
        generations = app.screen
        assert isinstance(generations, GenerationScreen)
        assert "no gold" in _text(generations.query_one("#generate-question", Static))
        for pane in generations.panes:
            assert pane.state == "done" and pane.scores == {}
            assert not pane.query(".pane-original")  # nothing to compare a new question with
            assert "no gold" in _text(pane.query_one(".pane-scores", Static))
        await pilot.press("s")
        await settle(pilot)
        saved = list_whatifs(demo_store)
        assert len(saved) == 2 and all(entry.edit.new_question for entry in saved)
        assert all(entry.prediction.gold is None and entry.original_output is None for entry in saved)


async def test_save_without_an_edit_says_there_is_nothing_to_save(demo_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=demo_store, max_new_tokens=8)
    app.pane_choices = list(PANES)
    async with app.run_test(size=SIZE) as pilot:
        await _question(app, pilot, settle)
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        assert list_whatifs(demo_store) == []
        assert any("Nothing to save" in note.message for note in app._notifications)


async def test_a_failed_original_says_so_instead_of_waiting(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 23, found 8: a pane whose model fails (a model removed meanwhile) kept
    "original: waiting…" forever."""
    from lampbox.errors import LampboxError
    from lampbox.tui import generation

    def removed(spec, question, store, pool):  # type: ignore[no-untyped-def]
        raise LampboxError("no trained model named 'gone'")

    monkeypatch.setattr(generation, "prepare", removed)  # the unedited question's prompt
    app = create_app(store=demo_store, max_new_tokens=8)
    app.pane_choices = list(PANES)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _question(app, pilot, settle)
        bm25 = next(r for r in screen.rankings if r.retriever == "bm25")
        next(iter(screen.query(".ranking-table").results(DataTable))).focus()
        await pilot.press("x")
        assert screen.edit.excluded == (bm25.items[0].item.key,)
        await pilot.press("g")
        await settle(pilot)
        generations = app.screen
        assert isinstance(generations, GenerationScreen)
        for pane in generations.panes:
            shown = _text(pane.query_one(".pane-original", Static))
            assert "waiting" not in shown and "original: failed (no trained model named 'gone')" in shown
