"""Snapshots of the main screens at a fixed terminal size (pytest-textual-snapshot).

Update them after a deliberate change with `pytest tests/tui --snapshot-update` and review
the SVGs in tests/tui/__snapshots__.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lampbox.tui import create_app

SIZE = (120, 36)


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private, empty LAMPBOX_HOME and the packaged model manifest only: a models.toml of the
    machine's user (another default model, more models) must not change a frame."""
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAMPBOX_MODELS_MANIFEST", raising=False)


def _after(settle, *keys: str):  # type: ignore[no-untyped-def]
    """Press the keys, waiting for the workers before and after each; then have the footer
    show the focused widget's keys (its update after a focus change can otherwise land after
    the screenshot, e.g. `E Export` of a focused table)."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.screen.refresh_bindings()
        await settle(pilot)

    return run_before


def test_users_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store), terminal_size=SIZE, run_before=_after(settle, "down")
    )


def test_user_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_after(settle, "down", "enter"),
    )


def test_question_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    assert snap_compare(
        app, terminal_size=SIZE, run_before=_after(settle, "down", "enter", "enter")
    )


def test_empty_store_screen(snap_compare, empty_store_path: Path, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(create_app(empty_store_path), terminal_size=SIZE, run_before=_after(settle))


def test_help_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_after(settle, "question_mark"),
    )


def test_runs_screen(snap_compare, bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=bench_store), terminal_size=SIZE, run_before=_after(settle, "b")
    )


def test_run_users_screen(snap_compare, bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    # The second configuration of the bench: bm25 k=1 against no personalization.
    assert snap_compare(
        create_app(store=bench_store),
        terminal_size=SIZE,
        run_before=_after(settle, "b", "down", "enter"),
    )


def test_failures_screen(snap_compare, bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=bench_store),
        terminal_size=SIZE,
        run_before=_after(settle, "b", "down", "enter", "enter"),
    )


def _whatif(settle, *after: str):  # type: ignore[no-untyped-def]
    """To the question, exclude the first profile item and pin the third, then the keys."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        from textual.widgets import DataTable

        await _after(settle, "down", "enter", "enter")(pilot)
        pilot.app.screen.query_one("#question-profile", DataTable).focus()
        for key in ("x", "down", "down", "P", *after):
            await pilot.press(key)
            await settle(pilot)

    return run_before


def test_question_screen_with_whatif_edits(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store), terminal_size=SIZE, run_before=_whatif(settle)
    )


def test_whatif_generation_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    """The edited outputs over the originals and the difference, on the dummy stand-in; the
    second `g` serves every output from the cache, so no timing shows."""
    from lampbox.tui.generation import PaneChoice

    app = create_app(store=commits_store, max_new_tokens=8)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    assert snap_compare(app, terminal_size=SIZE, run_before=_whatif(settle, "g", "escape", "g"))


async def _steady_cursors(pilot) -> None:  # type: ignore[no-untyped-def]
    """Stop the text cursors blinking, so the screenshot never catches one half-way (a blink
    every 0.5 s would make the frame depend on timing)."""
    from textual.widgets import Input, TextArea

    for widget in pilot.app.screen.query("Input, TextArea"):
        assert isinstance(widget, (Input, TextArea))
        widget.cursor_blink = False
    await pilot.pause()


def _then(run_before, settle, *keys: str):  # type: ignore[no-untyped-def]
    """`run_before`, then the keys (waiting for the workers after each), cursors steady."""

    async def then(pilot) -> None:  # type: ignore[no-untyped-def]
        await run_before(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        await _steady_cursors(pilot)

    return then


def test_export_dialog(snap_compare, commits_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`E` on the users table: the formats and the default file. The default folder is the
    current directory, which differs between machines; here it is a fixed folder instead."""
    from lampbox.tui.export import default_path
    from lampbox.tui.screens import export as export_screen

    folder = Path("/home/researcher/exports")
    monkeypatch.setattr(
        export_screen,
        "default_path",
        lambda name, file_format, _folder=None: default_path(name, file_format, folder),
    )
    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_then(_after(settle), settle, "E"),
    )


def test_edit_input_dialog(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    """`e` on the question: the whole input in a text area, the note, Use and Cancel."""
    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_then(_after(settle, "down", "enter", "enter"), settle, "e"),
    )


def test_pane_choice_dialog(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    """`m` on the first generation pane: model, backend, retriever and k (the models listed are
    the packaged manifest's: see `private_home`); the outputs behind it come from the cache."""
    from lampbox.tui.generation import PaneChoice

    app = create_app(store=commits_store, max_new_tokens=8)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    assert snap_compare(
        app,
        terminal_size=SIZE,
        run_before=_then(_after(settle, "down", "enter", "enter"), settle, "g", "escape", "g", "m"),
    )


def _to_question(settle, store, prepare):  # type: ignore[no-untyped-def]
    """To the user screen (as `test_question_screen`), `prepare(dataset, question_id)` for the
    highlighted question (writes to the store before the question screen reads it), then open
    the question."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        from textual.widgets import DataTable

        await _after(settle, "down", "enter")(pilot)
        screen = pilot.app.screen
        table = screen.query_one("#questions", DataTable)
        question_id = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        prepare(screen.users.dataset, question_id)
        await _after(settle, "enter")(pilot)

    return run_before


def test_question_screen_with_ropg_feedback(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    """The rankings with a `util` column and the feedback's label in their titles; the last
    profile item has no feedback (shown as –)."""
    from lampbox.engine.types import ItemFeedback, ItemUtility
    from lampbox.store import browse, selection

    def prepare(dataset, question_id: str) -> None:  # type: ignore[no-untyped-def]
        question = browse.question(commits_store, dataset, question_id)
        items = tuple(
            ItemUtility(item.key, item.id, index * 37 % 100 / 100)
            for index, item in enumerate(question.profile[:-1])
        )
        feedback = ItemFeedback(question.id, "fb-1", "smollm2 accuracy", items)
        selection.save_item_feedback(commits_store, dataset.task, dataset.scheme, [feedback])

    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_then(_to_question(settle, commits_store, prepare), settle),
    )


def test_generation_screen_with_selector_probabilities(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    """Each pane's RSPG probability in its title, the selector's pick starred; outputs from the
    cache (the second `g`), so no timing shows."""
    from lampbox.engine.types import Candidate, CandidateProbability, SelectorProbabilities
    from lampbox.store import selection
    from lampbox.tui.generation import PaneChoice

    panes = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]

    def prepare(dataset, question_id: str) -> None:  # type: ignore[no-untyped-def]
        candidates = [Candidate.of(p.retriever, p.k, p.method, p.backend, p.model) for p in panes]
        recency = Candidate.of("recency", 2, "ipa", "dummy", panes[0].model)
        probabilities = (0.25, 0.6, 0.15)
        scored = SelectorProbabilities(
            question_id,
            "selector-1",
            "RSPG-Post",
            tuple(
                CandidateProbability(candidate, probability)
                for candidate, probability in zip(
                    [*candidates, recency], probabilities, strict=True
                )
            ),
        )
        selection.save_selector_probabilities(commits_store, dataset.task, dataset.scheme, [scored])

    app = create_app(store=commits_store, max_new_tokens=8)
    app.pane_choices = list(panes)
    assert snap_compare(
        app,
        terminal_size=SIZE,
        run_before=_then(_to_question(settle, commits_store, prepare), settle, "g", "escape", "g"),
    )
